"""Files the config names or is: read with a size bound, and only when they are regular files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from trivpn.config import ConfigError, load_config, parse_config
from trivpn.config.files import MAX_CONFIG_FILE, MAX_SECRET_FILE, FileRefused, read_regular_file
from trivpn.proto.wireguard import keys


def problems(text: str, base_dir: Path) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        parse_config(text, base_dir=base_dir)
    return raised.value.problems


def test_read_regular_file_reads_up_to_its_bound(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)
    assert read_regular_file(path, 100) == b"x" * 100
    with pytest.raises(FileRefused, match="over 99 bytes, the most allowed"):
        read_regular_file(path, 99)


def test_read_regular_file_refuses_what_is_not_one(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(FileRefused, match=r"^\[Errno 22\] not a regular file \(a FIFO\)$"):
        read_regular_file(tmp_path / "fifo", 10)
    with pytest.raises(FileRefused, match=r"not a regular file \(a device\)"):
        read_regular_file("/dev/zero", 10)
    with pytest.raises(IsADirectoryError):
        read_regular_file(tmp_path, 10)


def test_an_oversized_config_file_is_one_line(tmp_path: Path) -> None:
    conf = tmp_path / "big.toml"
    with conf.open("wb") as f:
        f.truncate(MAX_CONFIG_FILE + 1)  # sparse: no need to write it
    with pytest.raises(ConfigError) as raised:
        load_config(conf)
    assert raised.value.problems == [
        f"{conf}: cannot read the config file — over 1 MiB, the most allowed"
    ]


@pytest.mark.parametrize(
    ("make", "kind"),
    [(os.mkfifo, "a FIFO"), (lambda p: os.symlink("/dev/zero", p), "a device")],
)
def test_check_refuses_a_config_that_is_not_a_regular_file_at_once(
    tmp_path: Path, make: object, kind: str
) -> None:
    # a subprocess: the old code hung on the FIFO's open and read /dev/zero until MemoryError
    conf = tmp_path / "trivpn.toml"
    make(conf)  # type: ignore[operator]
    out = subprocess.run(
        [sys.executable, "-m", "trivpn", "check", "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2
    assert out.stderr == (f"{conf}: cannot read the config file — not a regular file ({kind})\n")


def test_secret_files_that_are_fifos_are_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "secret")
    os.mkfifo(tmp_path / "server.key")
    os.mkfifo(tmp_path / "psk")
    pub = keys.pubkey(keys.genkey(lambda n: b"\x02" * n))
    text = (
        '[toyvpn]\nsecret_file = "secret"\n'
        '[wireguard]\nprivate_key_file = "server.key"\n'
        f'[[wireguard.peers]]\nname = "a"\npublic_key = "{pub}"\n'
        'allowed_ips = ["10.8.0.2/32"]\npreshared_key_file = "psk"\n'
    )
    refused = "not a regular file (a FIFO)"
    assert sorted(problems(text, tmp_path)) == [
        f"toyvpn.secret_file: 'secret' — cannot read {tmp_path / 'secret'}: {refused}",
        f"wireguard.peers[0].preshared_key_file: 'psk' — cannot read {tmp_path / 'psk'}: {refused}",
        f"wireguard.private_key_file: 'server.key' — cannot read {tmp_path / 'server.key'}: "
        f"{refused}",
    ]


def test_oversized_secret_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "secret").write_bytes(b"s" * (MAX_SECRET_FILE + 1))
    (tmp_path / "server.key").write_bytes(b"k" * (MAX_SECRET_FILE + 1))
    text = '[toyvpn]\nsecret_file = "secret"\n[wireguard]\nprivate_key_file = "server.key"\n'
    too_big = "over 4 KiB, the most allowed"
    assert sorted(problems(text, tmp_path)) == [
        f"toyvpn.secret_file: 'secret' — cannot read {tmp_path / 'secret'}: {too_big}",
        f"wireguard.private_key_file: 'server.key' — cannot read {tmp_path / 'server.key'}: "
        f"{too_big}",
    ]
    # at the bound it is read
    (tmp_path / "secret").write_bytes(b"s" * MAX_SECRET_FILE)
    cfg = parse_config('[toyvpn]\nsecret_file = "secret"\n', base_dir=tmp_path)
    assert cfg.toyvpn.secret == b"s" * MAX_SECRET_FILE


def test_state_dir_that_is_a_regular_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("")
    assert problems('[state]\ndir = "state"\n', tmp_path) == [
        f"state.dir: 'state' — {tmp_path / 'state'} exists and is not a directory; "
        "expected a directory (made if missing)"
    ]
    assert problems('[state]\ndir = "state/sub"\n', tmp_path) == [
        f"state.dir: 'state/sub' — cannot use {tmp_path / 'state/sub'}: Not a directory"
    ]


def test_state_dir_that_exists_or_can_be_made_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    assert parse_config('[state]\ndir = "state"\n', base_dir=tmp_path).state.dir == (
        tmp_path / "state"
    )
    made_later = parse_config('[state]\ndir = "new/state"\n', base_dir=tmp_path).state.dir
    assert made_later == tmp_path / "new" / "state"
    assert not made_later.exists()  # check changes nothing
