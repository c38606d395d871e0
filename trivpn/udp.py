"""Non-blocking UDP sockets driven by trio's readiness waits (the hot path's socket edge)."""

from __future__ import annotations

import errno
import socket

import trio

from trivpn.config import Endpoint

BATCH = 128  # datagrams drained per wakeup before yielding to other tasks
BUFFER_BYTES = 4 << 20  # room for bursts while the other direction holds the CPU
RECV_SIZE = 65535


def open_listener(endpoint: Endpoint) -> socket.socket:
    """A bound, non-blocking UDP socket; ``[::]`` listens dual-stack."""
    sock = socket.socket(endpoint.family, socket.SOCK_DGRAM)
    try:
        if endpoint.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            sock.setsockopt(socket.SOL_SOCKET, opt, BUFFER_BYTES)
        sock.bind((endpoint.host, endpoint.port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def drain(sock: socket.socket, limit: int = BATCH) -> list[tuple[bytes, tuple[object, ...]]]:
    """Receive until the socket would block (at most ``limit``); never awaits."""
    batch = []
    recvfrom = sock.recvfrom
    for _ in range(limit):
        try:
            batch.append(recvfrom(RECV_SIZE))
        except (BlockingIOError, InterruptedError):
            break
        except ConnectionRefusedError:
            continue  # an ICMP error for an earlier send; nothing to receive here
    return batch


def send(sock: socket.socket, data: bytes, addr: tuple[object, ...]) -> bool:
    """Send one datagram without waiting; False when the kernel dropped it."""
    try:
        sock.sendto(data, addr)
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.ENOBUFS, errno.ECONNREFUSED, errno.EHOSTUNREACH,
                       errno.ENETUNREACH, errno.EPERM, errno.EINVAL, errno.EMSGSIZE):
            return False
        raise
    return True


async def wait_readable(sock: socket.socket) -> None:
    await trio.lowlevel.wait_readable(sock)
