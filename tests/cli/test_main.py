"""The command line: exit codes and one-line errors, no tracebacks for user mistakes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from support import netlab

from trivpn.cli.main import main

REPO = Path(__file__).resolve().parents[2]


def test_check_reports_every_problem_with_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[interface]\nmtu = "big"\naddress = ["10.8.0.1/33"]\n[toyvpn]\nsecrte = 1\n')
    assert main(["check", "-c", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "interface.mtu: 'big'" in err
    assert "interface.address[0]: '10.8.0.1/33'" in err
    assert "toyvpn.secrte" in err
    assert "Traceback" not in err


def test_missing_config_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "-c", str(tmp_path / "nope.toml")]) == 2
    err = capsys.readouterr().err.strip()
    assert "nope.toml" in err and "\n" not in err


def test_serve_refuses_a_bad_config_before_touching_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[nat]\nmasquerade = 3\n")
    assert main(["serve", "-c", str(bad)]) == 2
    assert "nat.masquerade: 3" in capsys.readouterr().err


def test_toyvpn_connect_rejects_a_bad_server_argument(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["toyvpn-connect", "no-port-here", "--secret", "x" * 8]) == 2
    assert "HOST:PORT" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("server", "reason"),
    [
        ("2001:db8::1:8000", "an IPv6 host needs brackets"),
        ("[vpn.example.com]:8000", "brackets are only for IPv6 addresses"),
        ("vpn.example.com:0", "the port must be 1 to 65535"),
    ],
)
def test_toyvpn_connect_says_what_is_wrong_with_the_server(
    server: str, reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["toyvpn-connect", server, "--secret", "x" * 8]) == 2
    assert (
        f"server: {server!r} — {reason} (HOST:PORT, e.g. 198.51.100.1:8000)"
        in capsys.readouterr().err
    )


@pytest.mark.root
def test_check_in_namespaces_with_and_without_a_default_route() -> None:
    shipped = str(REPO / "conf" / "trivpn.toml")
    with netlab.Lab("tvcli", clients=1) as lab:
        ok = lab.server.run(sys.executable, "-m", "trivpn", "check", "-c", shipped, check=False)
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.strip() == f"{shipped}: OK"
        # the client namespace has no default route: egress "auto" cannot be resolved
        bad = lab.clients[0].run(
            sys.executable, "-m", "trivpn", "check", "-c", shipped, check=False
        )
        assert bad.returncode == 2
        assert bad.stderr.strip().startswith("nat.egress: 'auto'")
        # and serve refuses the same way, before creating anything
        serve = lab.clients[0].run(
            sys.executable, "-m", "trivpn", "serve", "-c", shipped, check=False, timeout=20
        )
        assert serve.returncode == 2 and "nat.egress" in serve.stderr
        assert "trivpn" not in lab.clients[0].run("nft", "list", "tables").stdout


@pytest.mark.root
def test_serve_that_cannot_bind_its_port_says_so_in_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[interface]\nname = "tvx0"\n[nat]\negress = "eth0"\n'
        '[toyvpn]\nenabled = true\nsecret = "12345678"\nlisten = "192.0.2.99:8000"\n'
    )
    with netlab.Lab("tvcli2", clients=0) as lab:
        out = lab.server.run(
            sys.executable, "-m", "trivpn", "serve", "-c", str(cfg), check=False, timeout=30
        )
        assert out.returncode == 1, out.stderr
        last = out.stderr.strip().splitlines()[-1]
        assert last == (
            "trivpn: toyvpn.listen: cannot listen on 192.0.2.99:8000: "
            "Cannot assign requested address"
        )
        assert "Traceback" not in out.stderr
        assert "trivpn" not in lab.server.run("nft", "list", "tables").stdout  # cleaned up


def test_help_lists_the_commands() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "trivpn", "--help"], capture_output=True, text=True, check=True
    )
    for command in ("serve", "check", "toyvpn-connect"):
        assert command in out.stdout
