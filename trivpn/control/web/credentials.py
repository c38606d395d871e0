"""The web admin's credentials, in ``<state dir>/web/`` (mode 0700), each file 0600:

- ``password``: an Argon2id hash string (libsodium's, with its salt and parameters);
- ``totp``: the base32 secret of the TOTP second factor (RFC 6238), when enabled;
- ``tokens.json``: API tokens, name -> SHA-256 of the token and when it was made.

Every write replaces a file atomically (`write_private_file`), so a reader sees the old
credentials or the new ones. Secrets are never logged; the CLI prints a new one once.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import attrs
import nacl.exceptions
import nacl.pwhash
import pyotp

from trivpn.config import PEER_NAME, PEER_NAME_ALLOWED, write_private_file
from trivpn.config.files import read_regular_file

# Argon2id at 3 passes over 64 MiB: about 0.2 s a hash here, above OWASP's floor (2 passes,
# 19 MiB). libsodium's MODERATE (256 MiB, about 1 s) would let a few concurrent logins take
# most of a small VPS's memory; the login rate limit bounds guessing, not this.
OPSLIMIT: Final = nacl.pwhash.argon2id.OPSLIMIT_MODERATE
MEMLIMIT: Final = nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE
MIN_PASSWORD: Final = 8  # characters
TOTP_ISSUER: Final = "trivpn"
TOKEN_BYTES: Final = 32

_MAX_FILE: Final = 1 << 20  # tokens.json with thousands of tokens; /dev/zero must not fit


class CredentialsError(Exception):
    """The credentials files cannot be read or written (the system's or a damaged file)."""


class Refused(CredentialsError):
    """An operator's request that cannot be done as asked; nothing was changed."""


@attrs.frozen
class TokenInfo:
    name: str
    created: str  # ISO 8601, UTC


def check_password(text: str) -> None:
    """Refused for a password too short to set; the text is never in the message."""
    if len(text) < MIN_PASSWORD:
        what = "empty" if not text else f"{len(text)} characters"
        raise Refused(f"password: {what} — expected at least {MIN_PASSWORD} characters")


def _token_hash(token: str) -> str:
    # A token is 32 random bytes: guessing one is hopeless however fast the hash, so a fast
    # hash is right here (and lets every API request be checked cheaply); slow hashes are for
    # passwords people choose.
    return hashlib.sha256(token.encode()).hexdigest()


def _utc(now: float) -> str:
    moment = datetime.datetime.fromtimestamp(int(now), datetime.UTC)
    return moment.isoformat().replace("+00:00", "Z")


class WebCredentials:
    """The credentials under ``state_dir``; a file is read on each call, so a change from the
    CLI holds at once for a running server."""

    def __init__(self, state_dir: Path) -> None:
        self.directory = state_dir / "web"
        self._password = self.directory / "password"
        self._totp = self.directory / "totp"
        self._tokens = self.directory / "tokens.json"

    # --- files ------------------------------------------------------------------------------

    def _read(self, path: Path) -> bytes | None:
        try:
            return read_regular_file(path, _MAX_FILE)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise CredentialsError(f"{path}: cannot read it: {e.strerror or e}") from e

    def _write(self, path: Path, data: bytes) -> None:
        try:
            # the state dir 0700 too when made here, as the peer registry makes it
            self.directory.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.directory.mkdir(mode=0o700, exist_ok=True)
            write_private_file(path, data)
        except OSError as e:
            raise CredentialsError(f"{path}: cannot write it: {e.strerror or e}") from e

    def _remove(self, path: Path) -> None:
        try:
            path.unlink()
        except OSError as e:
            raise CredentialsError(f"{path}: cannot remove it: {e.strerror or e}") from e

    # --- the password -----------------------------------------------------------------------

    def has_password(self) -> bool:
        return self._read(self._password) is not None

    def set_password(self, text: str) -> None:
        check_password(text)
        hashed = nacl.pwhash.argon2id.str(text.encode(), opslimit=OPSLIMIT, memlimit=MEMLIMIT)
        self._write(self._password, hashed + b"\n")

    def verify_password(self, text: str) -> bool:
        stored = self._read(self._password)
        if stored is None:
            return False
        try:
            return bool(nacl.pwhash.verify(stored.strip(), text.encode()))
        except nacl.exceptions.CryptPrefixError as e:  # a damaged file must not read as "wrong"
            raise CredentialsError(f"{self._password}: not a password hash") from e
        except nacl.exceptions.InvalidkeyError:
            return False

    # --- TOTP -------------------------------------------------------------------------------

    def _totp_secret(self) -> str | None:
        data = self._read(self._totp)
        return None if data is None else data.decode("ascii", "replace").strip()

    def totp_enabled(self) -> bool:
        return self._totp_secret() is not None

    def enable_totp(self, account: str) -> str:
        """A new secret, stored; its otpauth:// URI (for an authenticator app) returned.
        Refused without a password: TOTP is a second factor, not a first."""
        if not self.has_password():
            raise Refused("no web admin password set; run `trivpn web passwd` first")
        secret = pyotp.random_base32()  # 160 bits, as RFC 4226 recommends
        self._write(self._totp, secret.encode() + b"\n")
        return pyotp.TOTP(secret).provisioning_uri(name=account, issuer_name=TOTP_ISSUER)

    def disable_totp(self) -> bool:
        """False when it was not enabled."""
        if not self.totp_enabled():
            return False
        self._remove(self._totp)
        return True

    def verify_totp(self, code: str, now: float) -> int | None:
        """The 30 s step (RFC 6238) that ``code`` is the code of, or None; the step before and
        after now's are accepted for clock drift. The caller refuses a step used before."""
        secret = self._totp_secret()
        if secret is None or not (code.isascii() and code.isdigit()):
            return None
        totp = pyotp.TOTP(secret)
        try:
            now_step = totp.timecode(int(now))
            for step in (now_step - 1, now_step, now_step + 1):
                if hmac.compare_digest(code.encode(), totp.generate_otp(step).encode()):
                    return step
        except (ValueError, TypeError) as e:  # a damaged file: not base32
            raise CredentialsError(f"{self._totp}: not a TOTP secret") from e
        return None

    # --- API tokens -------------------------------------------------------------------------

    def _token_table(self) -> dict[str, dict[str, str]]:
        data = self._read(self._tokens)
        if data is None:
            return {}
        try:
            table = json.loads(data)
            if not isinstance(table, dict) or not all(
                isinstance(v, Mapping) and isinstance(v.get("sha256"), str) for v in table.values()
            ):
                raise ValueError("expected {name: {sha256, created}}")
        except ValueError as e:
            raise CredentialsError(f"{self._tokens}: damaged: {e}") from e
        return table

    def _save_tokens(self, table: Mapping[str, Mapping[str, str]]) -> None:
        self._write(self._tokens, json.dumps(table, indent=2, sort_keys=True).encode() + b"\n")

    def add_token(self, name: str, now: float) -> str:
        """A new token named ``name``, stored hashed; the text is returned, once."""
        if not PEER_NAME.fullmatch(name):
            raise Refused(f"name: {name!r} — {PEER_NAME_ALLOWED}")
        table = self._token_table()
        if name in table:
            raise Refused(f"token {name!r} exists; remove it first to replace it")
        token = secrets.token_urlsafe(TOKEN_BYTES)
        table[name] = {"sha256": _token_hash(token), "created": _utc(now)}
        self._save_tokens(table)
        return token

    def remove_token(self, name: str) -> None:
        table = self._token_table()
        if table.pop(name, None) is None:
            raise Refused(f"no token named {name!r}")
        self._save_tokens(table)

    def tokens(self) -> list[TokenInfo]:
        return [
            TokenInfo(name, str(entry.get("created", "")))
            for name, entry in sorted(self._token_table().items())
        ]

    def verify_token(self, token: str) -> str | None:
        """The name of the token ``token``, or None. Every entry is compared, in constant time
        each, so the time taken says nothing about which one matched."""
        digest = _token_hash(token)
        found: str | None = None
        for name, entry in self._token_table().items():
            if hmac.compare_digest(digest.encode(), entry["sha256"].encode()):
                found = name
        return found
