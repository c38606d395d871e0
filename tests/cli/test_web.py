"""`trivpn web passwd | totp enable | totp disable | token add | token remove | token list`:
through main(), with stdin and the terminal faked; secrets only on stdout, and only where the
command must show them."""

from __future__ import annotations

import getpass
import hashlib
import io
import sys
import time
from pathlib import Path

import pyotp
import pytest

from trivpn.cli.main import main
from trivpn.control.web.credentials import WebCredentials

PASSWORD = "correct horse battery"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    path = tmp_path / "trivpn.toml"
    path.write_text('[state]\ndir = "state"\n')
    return path


@pytest.fixture
def creds(tmp_path: Path) -> WebCredentials:
    return WebCredentials(tmp_path / "state")


def web(conf: Path, *args: str, stdin: str = "") -> int:
    if not isinstance(sys.stdin, Terminal):
        sys.stdin = io.StringIO(stdin)
    return main(["web", *args, "-c", str(conf)])


def snapshot(creds: WebCredentials) -> dict[str, bytes]:
    if not creds.directory.exists():
        return {}
    return {p.name: p.read_bytes() for p in sorted(creds.directory.iterdir())}


@pytest.fixture(autouse=True)
def _stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))


# --- passwd -------------------------------------------------------------------------------------


def test_passwd_from_a_line_on_stdin(
    conf: Path, creds: WebCredentials, capsys: pytest.CaptureFixture[str]
) -> None:
    assert web(conf, "passwd", stdin=PASSWORD + "\r\n") == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"trivpn: web admin password set ({creds.directory})\n"
    assert creds.verify_password(PASSWORD)
    assert not creds.verify_password(PASSWORD + "\r")


def test_passwd_asks_twice_on_a_terminal(
    conf: Path, creds: WebCredentials, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts: list[str] = []
    answers = iter([PASSWORD, PASSWORD])

    def fake_getpass(prompt: str = "") -> str:
        prompts.append(prompt)
        return next(answers)

    monkeypatch.setattr(sys, "stdin", Terminal())
    monkeypatch.setattr(getpass, "getpass", fake_getpass)
    assert web(conf, "passwd") == 0
    assert prompts == ["New web admin password: ", "Again: "]
    assert creds.verify_password(PASSWORD)


def test_passwd_entries_that_differ_change_nothing(
    conf: Path,
    creds: WebCredentials,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    web(conf, "passwd", stdin="the old password\n")
    before = snapshot(creds)
    answers = iter([PASSWORD, PASSWORD + "x"])
    monkeypatch.setattr(sys, "stdin", Terminal())
    monkeypatch.setattr(getpass, "getpass", lambda prompt="": next(answers))
    capsys.readouterr()
    assert web(conf, "passwd") == 2
    out, err = capsys.readouterr()
    assert (out, err) == ("", "password: (hidden) — the two entries differ\n")
    assert snapshot(creds) == before


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("", "password: empty — expected at least 8 characters"),
        ("\n", "password: empty — expected at least 8 characters"),
        ("secret7\n", "password: 7 characters — expected at least 8 characters"),
    ],
)
def test_passwd_refuses_short_ones_and_never_shows_them(
    conf: Path,
    creds: WebCredentials,
    capsys: pytest.CaptureFixture[str],
    line: str,
    message: str,
) -> None:
    web(conf, "passwd", stdin="the old password\n")
    before = snapshot(creds)
    capsys.readouterr()
    assert web(conf, "passwd", stdin=line) == 2
    out, err = capsys.readouterr()
    assert (out, err) == ("", message + "\n")
    assert snapshot(creds) == before
    assert creds.verify_password("the old password")


def test_a_bad_config_is_exit_2_and_an_unusable_state_dir_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[web]\nlisten = 1\n")
    assert web(bad, "passwd", stdin=PASSWORD + "\n") == 2
    assert capsys.readouterr().err.startswith("web.listen: 1 — expected host:port")
    conf = tmp_path / "trivpn.toml"
    conf.write_text('[state]\ndir = "state"\n')
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "web").write_text("")  # a file where the directory goes
    assert web(conf, "passwd", stdin=PASSWORD + "\n") == 1
    err = capsys.readouterr().err
    assert err.startswith("trivpn: ") and "cannot write it: File exists" in err
    assert err.count("\n") == 1 and PASSWORD not in err


# --- totp ---------------------------------------------------------------------------------------


def test_totp_enable_needs_a_password(
    conf: Path, creds: WebCredentials, capsys: pytest.CaptureFixture[str]
) -> None:
    assert web(conf, "totp", "enable") == 2
    out, err = capsys.readouterr()
    assert (out, err) == ("", "no web admin password set; run `trivpn web passwd` first\n")
    assert snapshot(creds) == {}


def test_totp_enable_prints_the_uri_and_a_qr_code_then_disable(
    conf: Path, creds: WebCredentials, capsys: pytest.CaptureFixture[str]
) -> None:
    web(conf, "passwd", stdin=PASSWORD + "\n")
    capsys.readouterr()
    assert web(conf, "totp", "enable") == 0
    out, err = capsys.readouterr()
    uri, blank, *qr = out.splitlines()
    totp = pyotp.parse_uri(uri)
    assert uri.startswith("otpauth://totp/trivpn:admin%40")
    assert blank == "" and len(qr) > 10 and all("█" in line or "▀" in line for line in qr)
    assert creds.verify_totp(totp.now(), time.time())
    assert totp.secret not in err and err.startswith("trivpn: TOTP enabled: scan the code")
    assert web(conf, "totp", "enable") == 0
    out, err = capsys.readouterr()
    assert pyotp.parse_uri(out.splitlines()[0]).secret != totp.secret
    assert "with a new secret (the old one no longer works)" in err
    assert web(conf, "totp", "disable") == 0
    assert capsys.readouterr() == ("", "trivpn: TOTP disabled\n")
    assert not creds.totp_enabled()
    assert web(conf, "totp", "disable") == 0
    assert capsys.readouterr() == ("", "trivpn: TOTP was not enabled\n")


# --- tokens -------------------------------------------------------------------------------------


def test_token_add_prints_the_token_alone_once(
    conf: Path, creds: WebCredentials, capsys: pytest.CaptureFixture[str]
) -> None:
    assert web(conf, "token", "add", "ci") == 0
    out, err = capsys.readouterr()
    token = out.removesuffix("\n")
    assert out == token + "\n" and len(token) >= 43 and "\n" not in token
    assert err == "trivpn: added token 'ci'; it is shown only now\n"
    assert creds.verify_token(token) == "ci"
    assert token not in (creds.directory / "tokens.json").read_text()

    assert web(conf, "token", "list") == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0] == "NAME  CREATED"
    assert lines[1].startswith("ci    20") and lines[1].endswith("Z")
    assert len(lines) == 2 and token not in out
    digest = hashlib.sha256(token.encode()).hexdigest()
    assert digest not in out


def test_token_mistakes_are_exit_2_and_change_nothing(
    conf: Path, creds: WebCredentials, capsys: pytest.CaptureFixture[str]
) -> None:
    web(conf, "token", "add", "ci")
    token = capsys.readouterr().out.strip()
    before = snapshot(creds)
    for args, message in [
        (("add", "ci"), "token 'ci' exists; remove it first to replace it"),
        (("add", "no spaces"), "name: 'no spaces' — expected 1 to 64 characters from A-Z a-z 0-9"),
        (("remove", "nope"), "no token named 'nope'"),
    ]:
        assert web(conf, "token", *args) == 2, args
        out, err = capsys.readouterr()
        assert out == "" and err.startswith(message) and err.count("\n") == 1, args
    assert snapshot(creds) == before
    assert creds.verify_token(token) == "ci"


def test_token_remove_and_an_empty_list(
    conf: Path, creds: WebCredentials, capsys: pytest.CaptureFixture[str]
) -> None:
    assert web(conf, "token", "list") == 0
    assert capsys.readouterr() == ("", "")
    web(conf, "token", "add", "ci")
    token = capsys.readouterr().out.strip()
    assert web(conf, "token", "remove", "ci") == 0
    assert capsys.readouterr() == ("", "trivpn: removed token 'ci'\n")
    assert creds.verify_token(token) is None
    assert web(conf, "token", "list") == 0
    assert capsys.readouterr() == ("", "")
