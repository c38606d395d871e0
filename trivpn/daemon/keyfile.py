"""The server's private key: inline in the config, or its key file, created (mode 0600) on first
use; `serve` and `peer add` both take it from here."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from trivpn.config import WireGuardConfig
from trivpn.config.files import MAX_SECRET_FILE, read_regular_file
from trivpn.proto.wireguard import keys

log = logging.getLogger("trivpn")


class KeyFileError(Exception):
    """The key file exists but cannot be used; the message names it."""


class PrivateKeyNotSet(KeyFileError):
    """The config has neither a private key nor a key file (private_key_file = "")."""


class KeyDirectoryMissing(KeyFileError):
    """The key file is to be made in a directory that does not exist (and is not state.dir):
    a config mistake."""


def _directory_missing(path: Path) -> str:
    return (
        f"wireguard.private_key_file: {str(path)!r} — its directory {path.parent} does not "
        "exist; create it, or keep the key in state.dir (the only directory trivpn makes)"
    )


def key_directory_problem(wg: WireGuardConfig, state_dir: Path) -> str | None:
    """Why the key file `serve` would make cannot be made, checked before anything starts."""
    path = wg.private_key_file
    if wg.private_key is not None or path is None or path.parent == state_dir:
        return None
    return None if path.parent.is_dir() else _directory_missing(path)


def server_private_key(wg: WireGuardConfig, state_dir: Path | None = None) -> bytes:
    """The server's private key: the config's own (inline, or read from its existing key file
    by the loader), else a new one in ``private_key_file``; its directory is made only when
    it is ``state_dir`` (the config's state.dir)."""
    if wg.private_key is not None:
        return wg.private_key
    if wg.private_key_file is None:
        raise PrivateKeyNotSet("wireguard.private_key: (not set)")
    return load_or_create_private_key(wg.private_key_file, state_dir)


def load_or_create_private_key(path: Path, state_dir: Path | None = None) -> bytes:
    """The private key stored at ``path``; a new one is generated there if the file is absent.

    The file is created with O_EXCL and mode 0600, so a key never exists, even briefly, with
    wider permissions. A missing directory is made (0700) only when it is ``state_dir``: a
    typo elsewhere must not create directories anywhere, as root. Only the public key is
    ever logged.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return _read(path)
    except FileNotFoundError as e:
        if path.parent != state_dir:
            raise KeyDirectoryMissing(_directory_missing(path)) from e
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as mkdir_error:
            raise KeyFileError(
                f"wireguard.private_key_file: cannot create {path.parent}: {mkdir_error.strerror}"
            ) from mkdir_error
        return load_or_create_private_key(path)
    except OSError as e:
        raise KeyFileError(f"wireguard.private_key_file: cannot create {path}: {e.strerror}") from e
    text = keys.genkey(os.urandom)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
    log.info(
        "wireguard: generated a new private key in %s (public key %s)", path, keys.pubkey(text)
    )
    return keys.parse_key(text)


def _read(path: Path) -> bytes:
    try:
        mode = path.stat().st_mode
        text = read_regular_file(path, MAX_SECRET_FILE).decode()
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else "not text"
        raise KeyFileError(f"wireguard.private_key_file: cannot read {path}: {reason}") from e
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning(
            "wireguard: %s is readable by others (mode %o); chmod 600 it", path, mode & 0o777
        )
    try:
        return keys.parse_key(text.strip())
    except ValueError as e:
        raise KeyFileError(f"wireguard.private_key_file: {path}: {e}") from e
