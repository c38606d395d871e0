"""Non-blocking UDP sockets for the hot path: batch drains, UDP GSO sends and GRO receives.

With UDP_SEGMENT (GSO) a run of equal-sized datagrams to one endpoint leaves in one sendmsg
and crosses the kernel's stack once; with UDP_GRO the kernel may hand us such a run as one
buffer (with its segment size) that we split. Both are transparent to the peer, which sees
ordinary datagrams, and both fall back to one datagram per call where the kernel says no.

A listener can move to another port while it is in use (``rebind``, for `wg set listen-port`)
and carry a firewall mark (``set_mark``, SO_MARK, for `wg set fwmark`); the object stays, so
its ``dropped`` count and the tasks that wait on it carry on.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Sequence
from typing import Any

import trio

from trivpn.config import Endpoint

BATCH = 128  # receive calls per wakeup before yielding to other tasks
BUFFER_BYTES = 4 << 20  # room for bursts while the other direction holds the CPU
RECV_SIZE = 65535
SOL_UDP = 17
UDP_SEGMENT = 103  # linux/udp.h
UDP_GRO = 104
MAX_SEGMENTS = 64  # UDP_MAX_SEGMENTS in the kernel
MAX_GSO_BYTES = 65000  # stays under the 64 KiB IP datagram limit with headers
_CMSG_SPACE = socket.CMSG_SPACE(4)
_DROPPED = frozenset(
    (errno.EAGAIN, errno.ENOBUFS, errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH,
     errno.EPERM, errno.EINVAL, errno.EMSGSIZE, errno.EHOSTDOWN, errno.EAFNOSUPPORT)
)  # fmt: skip

Addr = tuple[Any, ...]


class DatagramSocket:
    """A non-blocking UDP socket; ``send_many`` and ``drain`` use GSO/GRO when they can."""

    def __init__(self, sock: socket.socket, *, offload: bool = True) -> None:
        self.offload = offload
        self.gso = offload
        self._use(sock)
        self.dropped = 0  # counts on across a rebind: it is this listener's

    def _use(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            sock.setsockopt(socket.SOL_SOCKET, opt, BUFFER_BYTES)
        self.sock = sock
        # A dual-stack socket reaches IPv4 endpoints through v4-mapped addresses.
        self._maps_v4 = sock.family == socket.AF_INET6
        self.gro = False
        if self.offload:
            try:
                sock.setsockopt(SOL_UDP, UDP_GRO, 1)
                self.gro = True
            except OSError:
                pass

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    async def wait_readable(self) -> None:
        """Until the socket is readable; a wait on a socket that ``rebind`` replaced goes on
        on the new one."""
        while True:
            sock = self.sock
            try:
                await trio.lowlevel.wait_readable(sock)
                return
            except trio.ClosedResourceError:
                if self.sock is sock:
                    raise  # closed, not replaced

    @staticmethod
    def mark_of(sock: socket.socket) -> int:
        """The SO_MARK of ``sock`` (0: none)."""
        return sock.getsockopt(socket.SOL_SOCKET, socket.SO_MARK)

    @property
    def fwmark(self) -> int:
        return self.mark_of(self.sock)

    def set_mark(self, mark: int) -> None:
        """SO_MARK on what this socket sends (0: none); OSError (EPERM without CAP_NET_ADMIN)."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)

    def check_mark(self, mark: int) -> None:
        """OSError if ``set_mark(mark)`` would fail; changes nothing."""
        with socket.socket(self.sock.family, socket.SOCK_DGRAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)

    def check_rebind(self, port: int) -> None:
        """OSError (EADDRINUSE, EACCES…) if ``rebind(port)`` would fail; changes nothing."""
        open_like(self.sock, port).close()

    def rebind(self, port: int) -> None:
        """Listen on ``port`` (0: any free one) instead: a new socket on the same address, with
        the same options and mark, takes this one's place; a task waiting in
        ``wait_readable`` moves to it, and the old socket is closed (datagrams still queued
        in it are lost, as on any rebind). OSError, with nothing changed, if it cannot bind.
        Call it from the trio thread."""
        old = self.sock
        new = open_like(old, port)
        try:
            self._use(new)
        except BaseException:
            self.sock = old
            new.close()
            raise
        trio.lowlevel.notify_closing(old)
        old.close()

    def drain(self, limit: int = BATCH) -> list[tuple[bytes, Addr]]:
        """Receive until the socket would block (at most ``limit`` calls); never awaits."""
        batch: list[tuple[bytes, Addr]] = []
        if not self.gro:
            recvfrom = self.sock.recvfrom
            for _ in range(limit):
                try:
                    batch.append(recvfrom(RECV_SIZE))
                except (BlockingIOError, InterruptedError):
                    break
                except ConnectionRefusedError:
                    continue  # an ICMP error for an earlier send; nothing to receive
            return batch
        recvmsg = self.sock.recvmsg
        for _ in range(limit):
            try:
                data, ancillary, _flags, addr = recvmsg(RECV_SIZE, _CMSG_SPACE)
            except (BlockingIOError, InterruptedError):
                break
            except ConnectionRefusedError:
                continue
            segment = 0
            for level, kind, value in ancillary:
                if level == SOL_UDP and kind == UDP_GRO:
                    segment = int.from_bytes(value[:4], "little") if len(value) >= 4 else 0
            if 0 < segment < len(data):
                for i in range(0, len(data), segment):
                    batch.append((data[i : i + segment], addr))
            else:
                batch.append((data, addr))
        return batch

    def _sockaddr(self, addr: Addr) -> Addr:
        if self._maps_v4 and ":" not in addr[0]:
            return ("::ffff:" + addr[0], *addr[1:])
        return addr

    def send(self, data: bytes, addr: Addr | None = None) -> bool:
        """Send one datagram without waiting; False when the kernel dropped it."""
        if addr is not None and self._maps_v4:
            addr = self._sockaddr(addr)
        try:
            if addr is None:
                self.sock.send(data)
            else:
                self.sock.sendto(data, addr)
        except OSError as e:
            if e.errno in _DROPPED:
                self.dropped += 1
                return False
            raise
        return True

    def send_many(self, datagrams: Sequence[bytes], addr: Addr | None = None) -> None:
        """Send datagrams in order to one endpoint, equal-sized runs as one GSO send."""
        if addr is not None and self._maps_v4:
            addr = self._sockaddr(addr)
        n = len(datagrams)
        i = 0
        while i < n:
            size = len(datagrams[i])
            j = i + 1
            if self.gso:
                limit = min(n, i + MAX_SEGMENTS, i + MAX_GSO_BYTES // max(size, 1))
                while j < limit and len(datagrams[j]) == size:
                    j += 1
                if j < limit and len(datagrams[j]) < size:
                    j += 1  # a shorter datagram may end a GSO run
            if j - i == 1:
                self.send(datagrams[i], addr)
            else:
                self._send_segmented(datagrams[i:j], size, addr)
            i = j

    def _send_segmented(self, run: Sequence[bytes], size: int, addr: Addr | None) -> None:
        ancillary = [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", size))]
        try:
            if addr is None:
                self.sock.sendmsg(run, ancillary)
            else:
                self.sock.sendmsg(run, ancillary, 0, addr)
        except OSError as e:
            if e.errno in (errno.EIO, errno.EINVAL, errno.ENOPROTOOPT, errno.EOPNOTSUPP):
                self.gso = False  # this path cannot segment: one datagram per call from now on
                for datagram in run:
                    self.send(datagram, addr)
            elif e.errno in _DROPPED:
                self.dropped += len(run)
            else:
                raise


def open_listener(endpoint: Endpoint, *, offload: bool = True) -> DatagramSocket:
    """A bound, non-blocking UDP socket; ``[::]`` listens dual-stack."""
    sock = socket.socket(endpoint.family, socket.SOCK_DGRAM)
    try:
        if endpoint.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((endpoint.host, endpoint.port))
        return DatagramSocket(sock, offload=offload)
    except BaseException:
        sock.close()
        raise


def open_like(sock: socket.socket, port: int) -> socket.socket:
    """A new UDP socket like the bound ``sock`` (family, address, dual-stack, mark), bound to
    ``port`` (0: any free one); OSError if it cannot be."""
    new = socket.socket(sock.family, socket.SOCK_DGRAM)
    try:
        if sock.family == socket.AF_INET6:
            v6only = sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
            new.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
        mark = DatagramSocket.mark_of(sock)
        if mark:
            new.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
        host, _, *scope = sock.getsockname()  # IPv6: flowinfo and scope id too
        new.bind((host, port, *scope))
    except BaseException:
        new.close()
        raise
    return new


def open_connected(address: Addr, family: int, *, offload: bool = True) -> DatagramSocket:
    """A non-blocking UDP socket connected to ``address`` (the client's view of a server)."""
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.connect(address)
        return DatagramSocket(sock, offload=offload)
    except BaseException:
        sock.close()
        raise
