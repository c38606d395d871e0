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
import functools
import logging
from pathlib import Path
from typing import Final

import trio

from trivpn.control import unixsock
from trivpn.proto import uapi

log = logging.getLogger("trivpn")

GET_REQUEST: Final = b"get=1\n\n"  # the whole of a valid get (it takes no keys)
GET_SLICE: Final = 200  # peers read and formatted between two checkpoints of a `get` (~5 ms)

SOCKET_DIR: Final = Path("/var/run/wireguard")
REQUEST_TIMEOUT: Final = 5.0  # seconds a client has to send each request and read the answer
MAX_CONNECTIONS: Final = 16
RECEIVE_BYTES: Final = 65536


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
    await unixsock.serve_unix(
        path,
        functools.partial(_exchange, target, max_request, timeout),
        name="uapi",
        ready=f"`wg` can configure {ifname} through {path}",
        unavailable=f"`wg` cannot configure {ifname}",
        directory_rule=unixsock.DirectoryRule.NOT_WRITABLE,
        max_connections=max_connections,
        timeout=timeout,
        backlog=MAX_CONNECTIONS,
        slow_client="a client took longer than %g s over a request; closed",
        task_status=task_status,
    )


async def sliced_get(target: uapi.Target) -> bytes:
    """The answer to ``get=1``, made a slice of peers at a time with a checkpoint between,
    so that `wg show` with 10,000 peers never holds the loop. Each peer is read as it is
    when its slice runs; one removed meanwhile is left out, one added is not listed."""
    lines = uapi.format_device(target.uapi_device_snapshot())
    for i, key in enumerate(target.uapi_peer_keys(), 1):
        peer = target.uapi_peer_snapshot(key)
        if peer is not None:
            lines += uapi.format_peer(peer)
        if i % GET_SLICE == 0:
            await trio.sleep(0)
    return uapi.format_lines(lines)


# --- one connection ---------------------------------------------------------------------------


async def _exchange(
    target: uapi.Target,
    max_request: int,
    timeout: float,
    stream: trio.SocketStream,
    scope: trio.CancelScope,
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
            await stream.send_all(await _answer(request, target))
            scope.deadline = trio.current_time() + timeout


async def _answer(request: bytes, target: uapi.Target) -> bytes:
    if request == GET_REQUEST:
        try:
            return await sliced_get(target)
        except Exception:
            log.exception("uapi: answering a get failed")
            return uapi.format_errno(errno.EIO)
    try:
        answer = uapi.respond(request, target)
    except Exception:
        log.exception("uapi: applying a request failed")
        return uapi.format_errno(errno.EIO)
    if answer.error is not None:
        log.warning("uapi: request refused: %s (errno %d)", answer.error, answer.error.errno)
    return answer.data
