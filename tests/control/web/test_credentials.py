"""The web admin's credentials: an Argon2id password hash, a TOTP secret and hashed API tokens,
in private files under the state dir that are replaced atomically."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pyotp
import pytest

from trivpn.config import write_private_file
from trivpn.control.web import credentials
from trivpn.control.web.credentials import CredentialsError, Refused, WebCredentials

# RFC 6238's own secret ("12345678901234567890"), in base32, and one of its test times
RFC_SECRET = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
T = 1111111109.0  # at 30 s steps this is step 37037036, 29 s into it
T_STEP = 37037036
STEP = 30


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def creds(tmp_path: Path) -> WebCredentials:
    return WebCredentials(tmp_path / "state")


@pytest.fixture
def with_totp(creds: WebCredentials) -> WebCredentials:
    creds.set_password("correct horse")
    creds.enable_totp("admin@test")
    (creds.directory / "totp").write_text(RFC_SECRET + "\n")
    return creds


# --- the password -----------------------------------------------------------------------------


def test_password_round_trip(creds: WebCredentials) -> None:
    assert not creds.has_password()
    assert not creds.verify_password("correct horse")
    creds.set_password("correct horse")
    assert creds.has_password()
    assert creds.verify_password("correct horse")
    assert not creds.verify_password("correct horsf")
    assert not creds.verify_password("")


def test_password_is_an_argon2id_hash_at_the_chosen_cost(creds: WebCredentials) -> None:
    creds.set_password("correct horse")
    stored = (creds.directory / "password").read_text()
    assert "correct horse" not in stored
    memlimit_kib = credentials.MEMLIMIT // 1024
    assert stored.startswith(f"$argon2id$v=19$m={memlimit_kib},t={credentials.OPSLIMIT},p=1$")


@pytest.mark.parametrize("text", ["", "1234567"])
def test_short_passwords_are_refused_and_not_shown(creds: WebCredentials, text: str) -> None:
    with pytest.raises(Refused, match="at least 8 characters") as info:
        creds.set_password(text)
    assert text == "" or text not in str(info.value)
    assert not creds.directory.exists()


def test_a_new_password_replaces_the_old(creds: WebCredentials) -> None:
    creds.set_password("first password")
    creds.set_password("second password")
    assert creds.verify_password("second password")
    assert not creds.verify_password("first password")


def test_a_damaged_password_file_is_an_error_not_a_pass(creds: WebCredentials) -> None:
    creds.set_password("correct horse")
    (creds.directory / "password").write_text("not a hash\n")
    with pytest.raises(CredentialsError, match="not a password hash"):
        creds.verify_password("correct horse")


# --- files --------------------------------------------------------------------------------------


def test_files_are_0600_in_a_0700_dir(creds: WebCredentials) -> None:
    creds.set_password("correct horse")
    creds.enable_totp("admin@test")
    creds.add_token("ci", T)
    assert mode(creds.directory.parent) == 0o700  # the state dir, made here
    assert mode(creds.directory) == 0o700
    names = sorted(p.name for p in creds.directory.iterdir())
    assert names == ["password", "tokens.json", "totp"]  # no temporary file left
    for path in creds.directory.iterdir():
        assert mode(path) == 0o600, path


def test_write_private_file_replaces_atomically_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("old")
    path.chmod(0o644)
    old_inode = path.stat().st_ino
    write_private_file(path, b"new")
    assert path.read_bytes() == b"new"
    assert mode(path) == 0o600
    assert path.stat().st_ino != old_inode  # a new file renamed over, not rewritten in place
    assert [p.name for p in tmp_path.iterdir()] == ["secret"]


def test_write_private_file_failing_leaves_the_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "secret"
    path.write_bytes(b"old")

    def fail(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError, match="No space"):
        write_private_file(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["secret"]


def test_an_unwritable_dir_is_a_credentials_error(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("a file, not a directory")
    with pytest.raises(CredentialsError, match="cannot write"):
        WebCredentials(tmp_path / "state").set_password("correct horse")


# --- TOTP ---------------------------------------------------------------------------------------


def test_totp_needs_a_password_first(creds: WebCredentials) -> None:
    with pytest.raises(Refused, match="web passwd"):
        creds.enable_totp("admin@test")
    assert not creds.totp_enabled()
    assert not creds.directory.exists()


def test_totp_enable_stores_the_secret_of_its_uri(creds: WebCredentials) -> None:
    creds.set_password("correct horse")
    uri = creds.enable_totp("admin@test")
    totp = pyotp.parse_uri(uri)
    assert isinstance(totp, pyotp.TOTP)
    assert totp.issuer == "trivpn"
    assert totp.name == "admin@test"
    assert (creds.directory / "totp").read_text().strip() == totp.secret
    assert creds.verify_totp(totp.at(T), T) == T_STEP


def test_totp_rfc6238_code_at_a_fixed_time(with_totp: WebCredentials) -> None:
    # RFC 6238, appendix B: SHA-1, T = 1111111109 gives 07081804 (8 digits); 6 digits: 081804
    assert with_totp.verify_totp("081804", T) == T_STEP
    assert with_totp.verify_totp("081805", T) is None
    assert with_totp.verify_totp("", T) is None
    assert with_totp.verify_totp("08180x", T) is None
    assert with_totp.verify_totp("٠٨١٨٠٤", T) is None  # Arabic-Indic digits: isdigit(), not ASCII


def test_totp_accepts_one_step_either_side_not_two_and_says_which(
    with_totp: WebCredentials,
) -> None:
    totp = pyotp.TOTP(RFC_SECRET)
    for steps in (-1, 0, 1):
        assert with_totp.verify_totp(totp.at(T + steps * STEP), T) == T_STEP + steps
    for steps in (-2, 2):
        code = totp.at(T + steps * STEP)
        assert code not in {totp.at(T + s * STEP) for s in (-1, 0, 1)}  # the test can fail
        assert with_totp.verify_totp(code, T) is None, steps


def test_totp_disable(with_totp: WebCredentials) -> None:
    assert with_totp.disable_totp()
    assert not with_totp.totp_enabled()
    assert with_totp.verify_totp("081804", T) is None
    assert not with_totp.disable_totp()


# --- API tokens ---------------------------------------------------------------------------------


def test_tokens_are_stored_hashed_and_verified(creds: WebCredentials) -> None:
    token = creds.add_token("ci", T)
    assert len(token) >= 43  # 32 bytes, urlsafe base64
    text = (creds.directory / "tokens.json").read_text()
    assert token not in text
    table = json.loads(text)
    assert table == {
        "ci": {
            "sha256": hashlib.sha256(token.encode()).hexdigest(),
            "created": "2005-03-18T01:58:29Z",
        }
    }
    assert creds.verify_token(token) == "ci"
    assert creds.verify_token(token[:-1]) is None
    assert creds.verify_token("") is None


def test_tokens_are_told_apart_listed_and_removed(creds: WebCredentials) -> None:
    ci = creds.add_token("ci", T)
    ops = creds.add_token("ops@laptop", T + 60)
    assert ci != ops
    assert creds.verify_token(ops) == "ops@laptop"
    assert [(t.name, t.created) for t in creds.tokens()] == [
        ("ci", "2005-03-18T01:58:29Z"),
        ("ops@laptop", "2005-03-18T01:59:29Z"),
    ]
    creds.remove_token("ci")
    assert creds.verify_token(ci) is None
    assert creds.verify_token(ops) == "ops@laptop"
    assert [t.name for t in creds.tokens()] == ["ops@laptop"]


def test_token_mistakes_change_nothing(creds: WebCredentials) -> None:
    token = creds.add_token("ci", T)
    before = (creds.directory / "tokens.json").read_bytes()
    with pytest.raises(Refused, match="exists"):
        creds.add_token("ci", T)
    with pytest.raises(Refused, match="expected 1 to 64 characters"):
        creds.add_token("bad name", T)
    with pytest.raises(Refused, match="no token named 'nope'"):
        creds.remove_token("nope")
    assert (creds.directory / "tokens.json").read_bytes() == before
    assert creds.verify_token(token) == "ci"


def test_a_damaged_tokens_file_is_an_error(creds: WebCredentials) -> None:
    creds.add_token("ci", T)
    (creds.directory / "tokens.json").write_text('{"ci": "abc"}')
    with pytest.raises(CredentialsError, match="damaged"):
        creds.verify_token("x")


def test_no_credentials_yet(creds: WebCredentials) -> None:
    assert creds.tokens() == []
    assert creds.verify_token("x") is None
    assert not creds.totp_enabled()
    assert creds.verify_totp("081804", T) is None
