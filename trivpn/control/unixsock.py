"""A unix-socket server for root only: what the control socket and the UAPI socket share.

The socket's directory is made 0700 (an existing one must be ours and pass a
:class:`DirectoryRule`); the socket is made 0600 before it listens, and each client's
credentials (SO_PEERCRED) must be root's or the server's own user's. Connections are bounded in
number, each is served in its own task under a deadline its handler may move. Running out of
descriptors (EMFILE and the like) pauses accepting, logged, until it passes. A stale socket
that a killed predecessor left (nobody answers on it) is removed at start; a live one belongs to
another process, and then the server logs why and ends without touching it. The socket is
removed on the way out if it is still ours.
"""

from __future__ import annotations

import enum
import logging
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

import trio

from trivpn.control.accept import RefusalLog, RetryingListener

log = logging.getLogger("trivpn")

_UNIX_PATH_MAX: Final = 107  # sun_path holds 108 bytes with the NUL
_PEERCRED: Final = struct.Struct("3i")  # struct ucred: pid, uid, gid

# Serves one accepted, permitted client; the scope is its deadline (move it to give more time).
Handler = Callable[[trio.SocketStream, trio.CancelScope], Awaitable[None]]


class SetupError(Exception):
    """The socket cannot be set up; the message says why."""


class DirectoryRule(enum.Enum):
    """What an existing socket directory may grant others: (forbidden mode bits, complaint)."""

    PRIVATE = (0o077, "is open to others (mode {mode:o})")
    NOT_WRITABLE = (0o022, "is writable by others")


async def serve_unix(
    path: Path,
    handler: Handler,
    *,
    name: str,
    ready: str,
    unavailable: str,
    directory_rule: DirectoryRule,
    max_connections: int,
    timeout: float,
    backlog: int | None = None,
    slow_client: str = "a client took longer than %g s; closed",
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``handler`` on the unix socket ``path`` until cancelled.

    Log lines start with ``name:``; ``ready`` is logged once the socket listens, and a socket
    that cannot be set up is logged as ``<why>; <unavailable>`` and the task ends (started).
    ``backlog`` is listen()'s queue, ``max_connections`` if None; ``slow_client`` is the log
    line (with the timeout as ``%g``) for a connection whose deadline passed.
    """
    try:
        listener, identity = await _listen(
            path, directory_rule, max_connections if backlog is None else backlog, name
        )
    except SetupError as e:
        log.error("%s: %s; %s", name, e, unavailable)
        task_status.started()
        return
    log.info("%s: %s", name, ready)
    # A shortage of descriptors is waited out here: raised, it would end the whole server.
    accepting = RetryingListener(listener, name)
    limiter = trio.CapacityLimiter(max_connections)
    refusals = RefusalLog(name)
    try:
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                stream = await accepting.accept()
                try:
                    limiter.acquire_on_behalf_of_nowait(stream)
                except trio.WouldBlock:
                    refusals.refused("%d connections at once; refusing one", max_connections)
                    await stream.aclose()
                    continue
                nursery.start_soon(
                    _connection, stream, handler, limiter, timeout, name, slow_client, refusals
                )
    finally:
        # No await here: the task is being cancelled, and a checkpoint would end it early.
        _remove_if_ours(path, identity, name)
        listener.socket.close()


# --- the socket file ---------------------------------------------------------------------------


async def _listen(
    path: Path, rule: DirectoryRule, backlog: int, name: str
) -> tuple[trio.SocketListener, tuple[int, int]]:
    """A listening socket at ``path`` and its (device, inode), after the checks above."""
    if len(os.fsencode(path)) > _UNIX_PATH_MAX:
        raise SetupError(f"{path}: longer than a unix socket path can be")
    _prepare_directory(path.parent, rule)
    await _remove_stale(path, name)
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        await sock.bind(os.fspath(path))
        # Sockets are made with the umask's mode (commonly 0755, already too tight for others
        # to connect, which needs write permission); narrow it before listening, so that there
        # is no moment when others could connect.
        os.chmod(path, 0o600)
        info = os.stat(path)
        sock.listen(backlog)
    except OSError as e:
        sock.close()
        raise SetupError(f"{path}: {e.strerror}") from e
    return trio.SocketListener(sock), (info.st_dev, info.st_ino)


def _prepare_directory(directory: Path, rule: DirectoryRule) -> None:
    try:
        directory.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        pass
    except OSError as e:
        raise SetupError(f"{directory}: {e.strerror}") from e
    info = os.lstat(directory)
    if not stat.S_ISDIR(info.st_mode):
        raise SetupError(f"{directory} is not a directory")
    if info.st_uid != os.geteuid():
        raise SetupError(f"{directory} belongs to uid {info.st_uid}, not to us")
    forbidden, complaint = rule.value
    if info.st_mode & forbidden:
        raise SetupError(f"{directory} {complaint.format(mode=info.st_mode & 0o777)}")


async def _remove_stale(path: Path, name: str) -> None:
    """Remove a socket nobody listens on; refuse to touch a live one or anything else."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise SetupError(f"{path} exists and is not a socket")
    with trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            with trio.fail_after(1):
                await probe.connect(os.fspath(path))
        except (ConnectionRefusedError, FileNotFoundError):
            pass  # stale: nobody listens
        except (OSError, trio.TooSlowError) as e:
            raise SetupError(f"{path} cannot be probed: {e}") from e
        else:
            raise SetupError(f"{path} is in use by another process")
    path.unlink(missing_ok=True)
    log.info("%s: removed the stale socket %s", name, path)


def _remove_if_ours(path: Path, identity: tuple[int, int], name: str) -> None:
    """Unlink the socket unless something else has replaced it since."""
    try:
        info = os.lstat(path)
        if (info.st_dev, info.st_ino) == identity:
            path.unlink()
    except FileNotFoundError:
        pass
    except OSError as e:
        log.warning("%s: removing %s failed: %s", name, path, e.strerror)


# --- one connection ---------------------------------------------------------------------------


def client_allowed(sock: trio.socket.SocketType | socket.socket) -> bool:
    """Whether the peer of a connected unix socket is root or the server's own user."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    _pid, uid, _gid = _PEERCRED.unpack(raw)
    return uid in (0, os.geteuid())


async def _connection(
    stream: trio.SocketStream,
    handler: Handler,
    limiter: trio.CapacityLimiter,
    timeout: float,
    name: str,
    slow_client: str,
    refusals: RefusalLog,
) -> None:
    try:
        async with stream:
            if not client_allowed(stream.socket):
                refusals.refused("refused a client that is neither root nor our user")
                return
            with trio.move_on_after(timeout) as scope:
                await handler(stream, scope)
            if scope.cancelled_caught:
                log.info(f"%s: {slow_client}", name, timeout)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
        log.debug("%s: connection failed: %s", name, e)
    except Exception:
        # One client's failure is never the server's: log it and drop the connection.
        log.exception("%s: serving a connection failed", name)
    finally:
        limiter.release_on_behalf_of(stream)
