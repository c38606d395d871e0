"""The server's private key: one loader for `serve` and `peer add`, the key file made 0600."""

import logging
import os
import stat
import subprocess
from pathlib import Path

import pytest

from trivpn.config import WireGuardConfig, load_config
from trivpn.daemon.keyfile import (
    KeyDirectoryMissing,
    KeyFileError,
    PrivateKeyNotSet,
    key_directory_problem,
    load_or_create_private_key,
    server_private_key,
)
from trivpn.proto.wireguard import keys


def test_created_with_mode_0600_in_a_0700_directory_and_reused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state" / "server.key"
    with caplog.at_level(logging.INFO):
        key = load_or_create_private_key(path, state_dir=tmp_path / "state")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    text = path.read_text().strip()
    assert keys.parse_key(text) == key
    assert load_or_create_private_key(path) == key  # the second start reuses it
    # only the public key reaches the log
    assert text not in caplog.text
    assert keys.pubkey(text) in caplog.text
    # the stock tool reads the same file
    wg = subprocess.run(["wg", "pubkey"], input=text, capture_output=True, text=True)
    assert wg.stdout.strip() == keys.pubkey(text)


def test_a_bad_key_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "server.key"
    path.write_text("not a key\n")
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match=r"wireguard.private_key_file: .*server.key"):
        load_or_create_private_key(path)


def test_a_world_readable_key_file_is_used_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "server.key"
    path.write_text(keys.genkey(os.urandom) + "\n")
    path.chmod(0o644)
    load_or_create_private_key(path)
    assert "readable by others (mode 644)" in caplog.text


def test_server_key_inline_is_used_and_no_file_is_made(tmp_path: Path) -> None:
    inline = keys.generate_private_key(lambda n: b"\x05" * n)
    wg = WireGuardConfig(private_key=inline, private_key_file=tmp_path / "server.key")
    assert server_private_key(wg) == inline
    assert not (tmp_path / "server.key").exists()


def test_server_key_file_is_made_once_and_then_read_by_the_config(tmp_path: Path) -> None:
    conf = tmp_path / "trivpn.toml"
    conf.write_text('[wireguard]\nenabled = true\nprivate_key_file = "server.key"\n')
    first = load_config(conf).wireguard
    assert first.private_key is None  # the file does not exist yet
    made = server_private_key(first)
    assert stat.S_IMODE((tmp_path / "server.key").stat().st_mode) == 0o600
    again = load_config(conf).wireguard
    assert again.private_key == made  # the loader now reads it; no second key is made
    assert server_private_key(again) == made


def test_server_key_not_set_is_its_own_error(tmp_path: Path) -> None:
    with pytest.raises(PrivateKeyNotSet, match=r"^wireguard.private_key: \(not set\)$"):
        server_private_key(WireGuardConfig(private_key=None, private_key_file=None))


def test_a_key_file_in_a_missing_directory_outside_state_dir_is_refused(tmp_path: Path) -> None:
    # only state.dir is made; a typo elsewhere must not create directories, as root
    path = tmp_path / "etc" / "trivpn" / "server.key"
    wg = WireGuardConfig(private_key=None, private_key_file=path)
    expected = (
        f"wireguard.private_key_file: '{path}' — its directory {path.parent} does not exist; "
        "create it, or keep the key in state.dir (the only directory trivpn makes)"
    )
    assert key_directory_problem(wg, tmp_path / "state") == expected
    with pytest.raises(KeyDirectoryMissing) as raised:
        server_private_key(wg, tmp_path / "state")
    assert str(raised.value) == expected
    assert list(tmp_path.iterdir()) == []  # nothing made
    # inside state.dir, or in a directory that exists, there is no problem
    assert key_directory_problem(wg, path.parent) is None
    path.parent.mkdir(parents=True)
    assert key_directory_problem(wg, tmp_path / "state") is None


def test_a_key_file_that_is_a_fifo_is_refused_without_hanging(tmp_path: Path) -> None:
    path = tmp_path / "server.key"
    os.mkfifo(path)
    with pytest.raises(
        KeyFileError, match=r"cannot read .*server.key: not a regular file \(a FIFO\)"
    ):
        load_or_create_private_key(path)
