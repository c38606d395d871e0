"""[state] database, database_password_file and node: the registry in PostgreSQL. A bad value
names its key; the database's connection string and password are never shown back."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from trivpn.config import ConfigError, parse_config


def only_problem(text: str, base_dir: Path | None = None) -> str:
    with pytest.raises(ConfigError) as raised:
        parse_config(text, base_dir=base_dir)
    assert len(raised.value.problems) == 1, raised.value.problems
    return raised.value.problems[0]


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "db.password"
    path.write_text("s3cret pw\n")
    os.chmod(path, 0o600)
    return path


def test_without_database_the_registry_is_sqlite_and_node_is_the_host_name() -> None:
    state = parse_config("").state
    assert state.database is None and state.database_password is None
    assert state.database_password_file is None
    assert state.node == os.uname().nodename


@pytest.mark.parametrize(
    "database",
    [
        "postgresql://trivpn@db.example.net/trivpn",
        "postgres://trivpn@db.example.net:5433/trivpn?sslmode=verify-full",
        "host=db.example.net dbname=trivpn user=trivpn sslmode=require",
        "host=/run/postgresql dbname=trivpn",
    ],
)
def test_a_libpq_uri_or_connection_string_is_taken_as_it_is(database: str) -> None:
    state = parse_config(f'[state]\ndatabase = "{database}"\nnode = "gw1"\n').state
    assert (state.database, state.node) == (database, "gw1")
    assert database not in repr(state)  # it names the database's user and host


def test_an_empty_database_is_the_sqlite_file() -> None:
    assert parse_config('[state]\ndatabase = ""\n').state.database is None


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("3", 'expected a libpq connection string or URI, or ""'),
        ('"host=db nonsense"', 'not a libpq connection string or URI (missing "=" after'),
        (
            '"postgresql://trivpn:hunter2@db/trivpn"',
            "holds a password: put it in database_password_file instead",
        ),
        ('"host=db password=hunter2"', "holds a password: put it in database_password_file"),
    ],
)
def test_a_bad_database_names_the_key_and_never_shows_a_password(value: str, reason: str) -> None:
    line = only_problem(f"[state]\ndatabase = {value}\n")
    assert line.startswith("state.database: ")
    assert reason in line
    assert "hunter2" not in line


def test_the_password_is_read_from_its_file_and_never_shown(
    tmp_path: Path, password_file: Path
) -> None:
    cfg = parse_config(
        '[state]\ndatabase = "postgresql://gw@db/trivpn"\ndatabase_password_file = "db.password"\n',
        base_dir=tmp_path,
    )
    assert cfg.state.database_password == "s3cret pw"  # the line, without its newline
    assert cfg.state.database_password_file == password_file
    assert "s3cret" not in repr(cfg)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o666])
def test_a_password_file_others_can_read_is_refused(
    tmp_path: Path, password_file: Path, mode: int
) -> None:
    os.chmod(password_file, mode)
    line = only_problem(
        '[state]\ndatabase = "host=db"\ndatabase_password_file = "db.password"\n', tmp_path
    )
    assert line == (
        f"state.database_password_file: 'db.password' — {password_file} is mode {mode:04o}; "
        "chmod 600 it (a password)"
    )


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "expected the password on one line"),
        (b"one\ntwo\n", "expected the password on one line"),
        (b"\xff\xfe", "the password is not UTF-8 text"),
        (b"x" * 5000, "cannot read"),  # over the bound of a secret file
    ],
)
def test_a_password_file_that_is_not_one_line_is_refused(
    tmp_path: Path, password_file: Path, content: bytes, reason: str
) -> None:
    password_file.write_bytes(content)
    line = only_problem(
        '[state]\ndatabase = "host=db"\ndatabase_password_file = "db.password"\n', tmp_path
    )
    assert line.startswith("state.database_password_file: 'db.password' — ")
    assert reason in line


def test_a_missing_password_file_is_refused(tmp_path: Path) -> None:
    line = only_problem(
        '[state]\ndatabase = "host=db"\ndatabase_password_file = "nope"\n', tmp_path
    )
    assert line == (
        f"state.database_password_file: 'nope' — cannot read {tmp_path / 'nope'}: "
        "No such file or directory"
    )


def test_a_password_file_without_a_database_is_refused(tmp_path: Path, password_file: Path) -> None:
    line = only_problem('[state]\ndatabase_password_file = "db.password"\n', tmp_path)
    assert line == (
        f"state.database_password_file: '{password_file}' — set only with database "
        "(the SQLite registry has no password)"
    )


@pytest.mark.parametrize("node", ['""', '"-gw"', '"gw 1"', '"gw/1"', f'"{"g" * 64}"', "1"])
def test_a_bad_node_names_the_key(node: str) -> None:
    line = only_problem(f"[state]\nnode = {node}\n")
    assert line.startswith("state.node: ")


@pytest.mark.parametrize("node", ["gw1", "gw-2.example", "A_b", "g" * 63])
def test_node_names(node: str) -> None:
    assert parse_config(f'[state]\nnode = "{node}"\n').state.node == node
