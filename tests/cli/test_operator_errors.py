"""What an operator gets wrong on the command line: one line naming the option or key, the
value and what is allowed, exit 2, nothing changed on disk; and a closed pipe ends quietly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import netlab

from trivpn.cli.errors import EXIT_BROKEN_PIPE
from trivpn.cli.main import main
from trivpn.proto.wireguard import keys

SERVER_KEY = keys.genkey(lambda n: b"\x01" * n)


def write_conf(tmp_path: Path, extra: str) -> Path:
    conf = tmp_path / "trivpn.toml"
    conf.write_text(
        "[nat]\nmasquerade = false\n"
        '[wireguard]\nenabled = true\npublic_endpoint = "vpn.example.com:51820"\n' + extra
    )
    return conf


def one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err.strip()


def test_peer_add_with_a_state_dir_that_cannot_be_made_names_state_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = "/proc/trivpn-test/state"  # nobody, not even root, makes directories in /proc
    conf = write_conf(tmp_path, f'private_key = "{SERVER_KEY}"\n[state]\ndir = "{state}"\n')
    assert main(["peer", "add", "alice", "-c", str(conf)]) == 2
    assert one_line(capsys) == f"state.dir: '{state}' — cannot create it: No such file or directory"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trivpn.toml"]


def test_check_and_serve_refuse_a_key_file_in_a_missing_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "typo" / "server.key"
    conf = write_conf(
        tmp_path, f'private_key_file = "{key}"\n[state]\ndir = "{tmp_path / "state"}"\n'
    )
    expected = (
        f"wireguard.private_key_file: '{key}' — its directory {key.parent} does not exist; "
        "create it, or keep the key in state.dir (the only directory trivpn makes)"
    )
    for command in ("check", "serve"):
        assert main([command, "-c", str(conf)]) == 2
        assert one_line(capsys) == expected
    assert main(["peer", "add", "alice", "-c", str(conf)]) == 2
    assert one_line(capsys) == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trivpn.toml"]


def test_peer_add_makes_the_key_in_state_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    conf = write_conf(
        tmp_path, f'private_key_file = "{state / "server.key"}"\n[state]\ndir = "{state}"\n'
    )
    assert main(["peer", "add", "alice", "-c", str(conf)]) == 0
    assert (state / "server.key").is_file()


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["--tun", "prb/bad"],
            "--tun: 'prb/bad' — expected 1 to 15 characters without '/', ':' or whitespace, "
            "not '.' or '..'",
        ),
        (
            ["--tun", "t" * 20],
            f"--tun: '{'t' * 20}' — expected 1 to 15 characters without '/', ':' or "
            "whitespace, not '.' or '..'",
        ),
        (["--keepalive", "-5"], "--keepalive: -5 — expected a number of seconds greater than 0"),
        (["--keepalive", "nan"], "--keepalive: nan — expected a number of seconds greater than 0"),
        (
            ["--keepalive", "inf"],
            "--keepalive: inf — expected a finite number of seconds greater than 0",
        ),
        (
            ["--quiet-timeout", "0"],
            "--quiet-timeout: 0 — expected a number of seconds greater than 0",
        ),
        (
            ["--quiet-timeout", "nan"],
            "--quiet-timeout: nan — expected a number of seconds greater than 0",
        ),
    ],
)
def test_toyvpn_connect_checks_its_options_as_the_config_does(
    args: list[str], line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["toyvpn-connect", "192.0.2.1:8000", "--secret", "x" * 8, *args]) == 2
    assert one_line(capsys) == line


def test_toyvpn_connect_refuses_a_secret_file_that_is_a_fifo_or_too_big(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "big").write_bytes(b"s" * 5000)
    for name, why in (
        ("fifo", "not a regular file (a FIFO)"),
        ("big", "over 4 KiB, the most allowed"),
    ):
        path = str(tmp_path / name)
        assert main(["toyvpn-connect", "192.0.2.1:8000", "--secret-file", path]) == 2
        assert one_line(capsys) == f"--secret-file: {path!r} — {why}"


def run_into_closed_pipe(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run trivpn with stdout a pipe whose reader is gone before trivpn writes (`| head`)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "trivpn", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
    )
    assert proc.stdout is not None
    proc.stdout.close()  # the only reader: trivpn is still starting up, it has written nothing
    _, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, "", err)


def test_a_closed_pipe_ends_genkey_quietly_as_wg_does() -> None:
    out = run_into_closed_pipe("genkey")
    assert (out.returncode, out.stderr) == (EXIT_BROKEN_PIPE, "")
    assert EXIT_BROKEN_PIPE == 141


def test_a_closed_pipe_ends_peer_add_and_list_quietly(tmp_path: Path) -> None:
    conf = write_conf(tmp_path, f'private_key = "{SERVER_KEY}"\n[state]\ndir = "state"\n')
    out = run_into_closed_pipe("peer", "add", "alice", "-c", str(conf))
    assert (out.returncode, out.stderr) == (EXIT_BROKEN_PIPE, "")
    out = run_into_closed_pipe("peer", "list", "-c", str(conf))
    assert (out.returncode, out.stderr) == (EXIT_BROKEN_PIPE, "")


@pytest.mark.root
def test_serve_on_a_name_a_veth_has_says_so(tmp_path: Path) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text(
        '[interface]\nname = "tvv0"\n[nat]\nmasquerade = false\n'
        '[toyvpn]\nenabled = true\nsecret = "12345678"\nlisten = "127.0.0.1:8000"\n'
    )
    with netlab.Lab("tvrob", clients=0) as lab:
        lab.server.run("ip", "link", "add", "tvv0", "type", "veth", "peer", "name", "tvv1")
        out = lab.server.run(
            sys.executable, "-m", "trivpn", "serve", "-c", str(conf), check=False, timeout=30
        )
        assert out.returncode == 1, out.stderr
        assert out.stderr.strip().splitlines()[-1] == (
            "trivpn: cannot create TUN 'tvv0': the name is taken by a veth device (not a TUN); "
            "choose another name"
        )
        assert "Traceback" not in out.stderr
        assert "veth" in lab.server.run("ip", "-d", "link", "show", "tvv0").stdout  # untouched
