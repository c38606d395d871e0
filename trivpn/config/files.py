"""Keys that name files or directories, read against the config file's directory.

Secrets kept in files of their own (a ``*_file`` key beside the inline key), and the keys a
section leaves to a loader in ``loader._LOADERS`` because their meaning needs more than one key
and the file system: the WireGuard private key and the state directory.
"""

import pathlib
from typing import Any, Final

from trivpn.config.errors import InvalidValue, Problems
from trivpn.config.values import structure_key
from trivpn.config.wireguard import DEFAULT_PRIVATE_KEY_FILE

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


# A loader takes the keys it owns out of a section's table and returns the values of their
# fields, set after cattrs has structured the rest, and the problems it found.
Loaded = tuple[dict[str, Any], Problems]


def load_private_key(table: dict[str, Any], base_dir: pathlib.Path | None) -> Loaded:
    """[wireguard] private_key or private_key_file, which defaults to DEFAULT_PRIVATE_KEY_FILE.

    A file that does not exist is no problem (`serve` generates it); "" means no file.
    """
    inline = table.pop("private_key", None)
    file_value = table.pop("private_key_file", None)
    if inline is not None:
        problems: Problems = []
        if file_value is not None:
            both = "set either private_key or private_key_file, not both"
            problems.append(("private_key_file", InvalidValue(file_value, both)))
        try:
            return {"private_key": structure_key(inline, None), "private_key_file": None}, problems
        except InvalidValue as e:
            return {}, [*problems, ("private_key", e)]
    if file_value is None:
        file_value = str(DEFAULT_PRIVATE_KEY_FILE)
    if file_value == "":
        return {"private_key_file": None}, []
    try:
        path = secret_path(file_value, base_dir)
        try:
            data = read_secret(file_value, path)
        except FileNotFoundError:
            return {"private_key_file": path}, []
        except OSError as e:
            raise InvalidValue(file_value, f"cannot read {path}: {e.strerror or e}") from None
        try:
            key = structure_key(data, None)
        except InvalidValue as e:
            raise InvalidValue(file_value, f"{path}: {e.allowed}") from None
    except InvalidValue as e:
        return {}, [("private_key_file", e)]
    return {"private_key": key, "private_key_file": path}, []


def load_state_dir(table: dict[str, Any], base_dir: pathlib.Path | None) -> Loaded:
    value = table.pop("dir", None)
    if value is None:
        return {}, []
    if not isinstance(value, str) or not value or "\0" in value:
        allowed = 'expected the path of a directory, e.g. "/var/lib/trivpn"'
        return {}, [("dir", InvalidValue(value, allowed))]
    path = pathlib.Path(value)
    return {"dir": path if base_dir is None else base_dir / path}, []
