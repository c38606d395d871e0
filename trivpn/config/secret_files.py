"""Secrets kept in files of their own, named by a ``*_file`` key."""

import pathlib
from typing import Final

from trivpn.config.errors import InvalidValue

_MAX_SECRET_FILE: Final = 64 * 1024  # a secret file is small; refuse to slurp a huge one


def secret_path(value: object, base_dir: pathlib.Path | None) -> pathlib.Path:
    if not isinstance(value, str) or not value or "\0" in value:
        raise InvalidValue(value, "expected the path of a file holding the secret")
    return pathlib.Path(value) if base_dir is None else base_dir / value


def read_secret(value: object, path: pathlib.Path) -> bytes:
    """The secret in `path` (named `value` in the file); OSError when it cannot be read."""
    with path.open("rb") as f:
        data = f.read(_MAX_SECRET_FILE + 1)
    if len(data) > _MAX_SECRET_FILE:
        raise InvalidValue(value, f"{path} is over 64 KiB; expected a file holding the secret")
    # editors end files with a newline that is not part of the secret
    return data[:-2] if data.endswith(b"\r\n") else data.removesuffix(b"\n")


def read_secret_file(value: object, base_dir: pathlib.Path | None) -> bytes:
    path = secret_path(value, base_dir)
    try:
        return read_secret(value, path)
    except OSError as e:
        raise InvalidValue(value, f"cannot read {path}: {e.strerror or e}") from None
