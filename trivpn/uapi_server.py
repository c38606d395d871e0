"""The UAPI socket: the stock `wg` tool configures a running trivpn as it does wireguard-go.

`wg` finds a userspace interface by its socket, ``/var/run/wireguard/<ifname>.sock``. Only
root may use it: the directory is made 0700 (an existing one must be ours and writable by no
one else), the socket is 0600, and each client's credentials (SO_PEERCRED) must be root's or
the server's own user's. Each connection is served in its own task, with a bound on request
size, a deadline per request and a bound on connections at once. A stale socket that a killed
predecessor left (nobody answers on it) is removed at start; a live one belongs to another
process with the same interface name, and then the UAPI stays off while the VPN runs on. The
socket is removed on the way out if it is still ours.

Not done: wireguard-go exits when its socket file is deleted; trivpn keeps serving.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import stat
import struct
from pathlib import Path
from typing import Final

import trio

from trivpn import uapi

log = logging.getLogger("trivpn")

SOCKET_DIR: Final = Path("/var/run/wireguard")
REQUEST_TIMEOUT: Final = 5.0  # seconds a client has to send each request and read the answer
MAX_CONNECTIONS: Final = 16
RECEIVE_BYTES: Final = 65536
_UNIX_PATH_MAX: Final = 107  # sun_path holds 108 bytes with the NUL
_PEERCRED: Final = struct.Struct("3i")  # struct ucred: pid, uid, gid


class UapiSetupError(Exception):
    """The socket cannot be set up; the message says why."""


def socket_path(ifname: str, directory: Path = SOCKET_DIR) -> Path:
    return directory / f"{ifname}.sock"


async def serve_uapi(
    target: uapi.Target,
    ifname: str,
    *,
    directory: Path = SOCKET_DIR,
    max_request: int = uapi.MAX_REQUEST_BYTES,
    timeout: float = REQUEST_TIMEOUT,
    max_connections: int = MAX_CONNECTIONS,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `wg` on ``<directory>/<ifname>.sock`` until cancelled.

    A socket that cannot be set up is logged and the task ends: the VPN itself runs on.
    """
    path = socket_path(ifname, directory)
    try:
        listener, identity = await _listen(path)
    except UapiSetupError as e:
        log.error("uapi: %s; `wg` cannot configure %s", e, ifname)
        task_status.started()
        return
    log.info("uapi: `wg` can configure %s through %s", ifname, path)
    limiter = trio.CapacityLimiter(max_connections)
    try:
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                stream = await listener.accept()
                try:
                    limiter.acquire_on_behalf_of_nowait(stream)
                except trio.WouldBlock:
                    log.warning("uapi: %d connections at once; refusing one", max_connections)
                    await stream.aclose()
                    continue
                nursery.start_soon(_connection, stream, target, limiter, max_request, timeout)
    finally:
        # No await here: the task is being cancelled, and a checkpoint would end it early.
        _remove_if_ours(path, identity)
        listener.socket.close()


# --- the socket file ---------------------------------------------------------------------------


async def _listen(path: Path) -> tuple[trio.SocketListener, tuple[int, int]]:
    """A listening socket at ``path`` and its (device, inode), after the checks above."""
    if len(os.fsencode(path)) > _UNIX_PATH_MAX:
        raise UapiSetupError(f"{path}: longer than a unix socket path can be")
    _prepare_directory(path.parent)
    await _remove_stale(path)
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        await sock.bind(os.fspath(path))
        # Sockets are made with the umask's mode (commonly 0755, already too tight for others
        # to connect, which needs write permission); narrow it before listening.
        os.chmod(path, 0o600)
        info = os.stat(path)
        sock.listen(MAX_CONNECTIONS)
    except OSError as e:
        sock.close()
        raise UapiSetupError(f"{path}: {e.strerror}") from e
    return trio.SocketListener(sock), (info.st_dev, info.st_ino)


def _prepare_directory(directory: Path) -> None:
    try:
        directory.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        pass
    except OSError as e:
        raise UapiSetupError(f"{directory}: {e.strerror}") from e
    info = os.lstat(directory)
    if not stat.S_ISDIR(info.st_mode):
        raise UapiSetupError(f"{directory} is not a directory")
    if info.st_uid != os.geteuid():
        raise UapiSetupError(f"{directory} belongs to uid {info.st_uid}, not to us")
    if info.st_mode & 0o022:
        raise UapiSetupError(f"{directory} is writable by others")


async def _remove_stale(path: Path) -> None:
    """Remove a socket nobody listens on; refuse to touch a live one or anything else."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise UapiSetupError(f"{path} exists and is not a socket")
    probe = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with probe:
        try:
            with trio.fail_after(1):
                await probe.connect(os.fspath(path))
        except (ConnectionRefusedError, FileNotFoundError):
            pass  # stale: nobody listens
        except (OSError, trio.TooSlowError) as e:
            raise UapiSetupError(f"{path} cannot be probed: {e}") from e
        else:
            raise UapiSetupError(f"{path} is in use by another process")
    path.unlink(missing_ok=True)
    log.info("uapi: removed the stale socket %s", path)


def _remove_if_ours(path: Path, identity: tuple[int, int]) -> None:
    """Unlink the socket unless something else has replaced it since."""
    try:
        info = os.lstat(path)
        if (info.st_dev, info.st_ino) == identity:
            path.unlink()
    except FileNotFoundError:
        pass
    except OSError as e:
        log.warning("uapi: removing %s failed: %s", path, e.strerror)


# --- one connection ---------------------------------------------------------------------------


def _client_allowed(stream: trio.SocketStream) -> bool:
    raw = stream.socket.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    _pid, uid, _gid = _PEERCRED.unpack(raw)
    return uid in (0, os.geteuid())


async def _connection(
    stream: trio.SocketStream,
    target: uapi.Target,
    limiter: trio.CapacityLimiter,
    max_request: int,
    timeout: float,
) -> None:
    try:
        async with stream:
            if not _client_allowed(stream):
                log.warning("uapi: refused a client that is neither root nor our user")
                return
            with trio.move_on_after(timeout) as scope:
                await _exchange(stream, target, scope, max_request, timeout)
            if scope.cancelled_caught:
                log.info("uapi: a client took longer than %g s over a request; closed", timeout)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
        log.debug("uapi: connection failed: %s", e)
    except Exception:
        # One client's failure is never the server's: log it and drop the connection.
        log.exception("uapi: serving a connection failed")
    finally:
        limiter.release_on_behalf_of(stream)


async def _exchange(
    stream: trio.SocketStream,
    target: uapi.Target,
    scope: trio.CancelScope,
    max_request: int,
    timeout: float,
) -> None:
    """Answer requests until the client hangs up (`wg` sends one, then closes)."""
    reader = uapi.RequestReader(max_request)
    while True:
        data = await stream.receive_some(RECEIVE_BYTES)
        if not data:
            return
        try:
            requests = reader.feed(data)
        except uapi.RequestTooLarge as e:
            log.warning("uapi: %s; closed", e)
            await stream.send_all(uapi.format_errno(e.errno))
            return
        for request in requests:
            await stream.send_all(_answer(request, target))
            scope.deadline = trio.current_time() + timeout


def _answer(request: bytes, target: uapi.Target) -> bytes:
    try:
        answer = uapi.respond(request, target)
    except Exception:
        log.exception("uapi: applying a request failed")
        return uapi.format_errno(errno.EIO)
    if answer.error is not None:
        log.warning("uapi: request refused: %s (errno %d)", answer.error, answer.error.errno)
    return answer.data
