"""Keys that name files or directories, read against the config file's directory.

Secrets kept in files of their own (a ``*_file`` key beside the inline key), and the keys a
section leaves to a loader in ``loader._LOADERS`` because their meaning needs more than one key
and the file system: the WireGuard private key, the state directory, the registry database's
password and the web admin's TLS files. And the one way trivpn writes a private file:
`write_private_file`.
"""

import errno
import os
import pathlib
import stat
from typing import Any, Final

from trivpn.config.errors import InvalidValue, Problems
from trivpn.config.sections import DEFAULT_STATE_DIR
from trivpn.config.values import structure_key
from trivpn.config.wireguard import DEFAULT_PRIVATE_KEY_FILE

MAX_CONFIG_FILE: Final = 1 << 20  # a config file is small: /dev/zero must not fill memory
MAX_SECRET_FILE: Final = 4096  # a key is 45 bytes; a ToyVPN secret a line


class FileRefused(OSError):
    """A file that is not read: not a regular file, or over its size bound (``strerror``
    says which), so it reads like the system's own refusals."""


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a file"  # a socket cannot be opened at all (ENXIO)


def _size(limit: int) -> str:
    for unit, shift in (("MiB", 20), ("KiB", 10)):
        if limit >= 1 << shift and limit % (1 << shift) == 0:
            return f"{limit >> shift} {unit}"
    return f"{limit} bytes"


def read_regular_file(path: str | os.PathLike[str], limit: int) -> bytes:
    """The bytes of the regular file at ``path``, refused (FileRefused) when it holds more than
    ``limit`` or is anything else: a FIFO, a device; a directory is EISDIR.

    Opened non-blocking, so a FIFO cannot hang the open; the opened fd is checked, not the name,
    so nothing swapped in between is read. OSError for what the system refuses.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    with open(fd, "rb") as f:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
        if not stat.S_ISREG(mode):
            raise FileRefused(errno.EINVAL, f"not a regular file ({_kind(mode)})")
        data = f.read(limit + 1)  # a regular file never blocks, whatever O_NONBLOCK says
    if len(data) > limit:
        raise FileRefused(errno.EFBIG, f"over {_size(limit)}, the most allowed")
    return data


def secret_path(value: object, base_dir: pathlib.Path | None) -> pathlib.Path:
    if not isinstance(value, str) or not value or "\0" in value:
        raise InvalidValue(value, "expected the path of a file holding the secret")
    return pathlib.Path(value) if base_dir is None else base_dir / value


def read_secret(path: pathlib.Path) -> bytes:
    """The secret in `path`; OSError when it cannot be read."""
    data = read_regular_file(path, MAX_SECRET_FILE)
    # editors end files with a newline that is not part of the secret
    return data[:-2] if data.endswith(b"\r\n") else data.removesuffix(b"\n")


def read_secret_file(value: object, base_dir: pathlib.Path | None) -> bytes:
    path = secret_path(value, base_dir)
    try:
        return read_secret(path)
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
            data = read_secret(path)
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
    """[state] dir: a directory, or a path where one can be made (`peer add` and `serve` do)."""
    value = table.pop("dir", None)
    if value is None:
        value = str(DEFAULT_STATE_DIR)
    if not isinstance(value, str) or not value or "\0" in value:
        allowed = 'expected the path of a directory, e.g. "/var/lib/trivpn"'
        return {}, [("dir", InvalidValue(value, allowed))]
    path = pathlib.Path(value) if base_dir is None else base_dir / value
    try:
        is_dir = stat.S_ISDIR(path.stat().st_mode)
    except FileNotFoundError:
        is_dir = True  # made when first needed
    except OSError as e:  # ENOTDIR: a file on the way; EACCES
        return {}, [("dir", InvalidValue(value, f"cannot use {path}: {e.strerror or e}"))]
    if not is_dir:
        why = f"{path} exists and is not a directory; expected a directory (made if missing)"
        return {}, [("dir", InvalidValue(value, why))]
    return {"dir": path}, []


def load_database_password(table: dict[str, Any], base_dir: pathlib.Path | None) -> Loaded:
    """[state] database_password_file: the PostgreSQL password, the file's one line. The file
    must be readable by its owner only (0600 or 0400), like a private key."""
    value = table.pop("database_password_file", None)
    if value is None:
        return {}, []
    try:
        path = secret_path(value, base_dir)
        try:
            mode = path.stat().st_mode
            if stat.S_ISREG(mode) and mode & 0o077:
                raise InvalidValue(
                    value, f"{path} is mode {stat.S_IMODE(mode):04o}; chmod 600 it (a password)"
                )
            data = read_secret(path)
        except OSError as e:
            raise InvalidValue(value, f"cannot read {path}: {e.strerror or e}") from None
        try:
            password = data.decode()
        except UnicodeDecodeError:
            raise InvalidValue(value, f"{path}: the password is not UTF-8 text") from None
        if not password or "\n" in password or "\0" in password:
            raise InvalidValue(value, f"{path}: expected the password on one line")
    except InvalidValue as e:
        return {}, [("database_password_file", e)]
    return {"database_password_file": path, "database_password": password}, []


def load_state(table: dict[str, Any], base_dir: pathlib.Path | None) -> Loaded:
    """[state] dir and database_password_file."""
    loaded, problems = load_state_dir(table, base_dir)
    password, password_problems = load_database_password(table, base_dir)
    return loaded | password, problems + password_problems


def load_web_tls(table: dict[str, Any], base_dir: pathlib.Path | None) -> Loaded:
    """[web] tls_cert and tls_key: both or neither ("" is unset); read by the server."""
    paths: dict[str, pathlib.Path | None] = {}
    problems: Problems = []
    for key in ("tls_cert", "tls_key"):
        value = table.pop(key, "")
        if value == "":
            paths[key] = None
        elif not isinstance(value, str) or "\0" in value:
            problems.append((key, InvalidValue(value, 'expected the path of a PEM file or ""')))
        else:
            paths[key] = pathlib.Path(value) if base_dir is None else base_dir / value
    if problems:
        return {}, problems
    for key, other in (("tls_cert", "tls_key"), ("tls_key", "tls_cert")):
        if paths[key] is None and paths[other] is not None:
            why = f"required with {other}: HTTPS needs both files, or set neither for HTTP"
            return {}, [(key, InvalidValue(None, why, shown="(not set)"))]
    return dict(paths), []


def write_private_file(path: pathlib.Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically, mode 0600: a reader sees the old file or the
    new one, and the new one never exists, even briefly, readable by others. OSError on
    failure, with ``path`` unchanged and no temporary file left."""
    import tempfile  # here: the CLI's commands load the config, few write a file (issue 13)

    # mkstemp makes the file 0600 with O_EXCL; the same directory makes os.replace atomic
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with open(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise
    # the rename itself survives a crash only once the directory is on disk too
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
