"""Non-blocking UDP sockets for the hot path: batch drains, UDP GSO sends and GRO receives.

A drain takes many datagrams per syscall with recvmmsg (trivpn.net.recvmmsg) where the
platform has it, else one recvmsg each.

With UDP_SEGMENT (GSO) a run of equal-sized datagrams to one endpoint leaves in one sendmsg
and crosses the kernel's stack once; with UDP_GRO the kernel may hand us such a run as one
buffer (with its segment size) that we split. Both are transparent to the peer, which sees
ordinary datagrams, and both fall back to one datagram per call where the kernel says no.

A listener keeps a *sticky source* (as the kernel's WireGuard and wireguard-go do): each
datagram's destination address arrives with it (IP_PKTINFO / IPV6_RECVPKTINFO), and a reply to
that remote leaves from that address (an IP_PKTINFO / IPV6_PKTINFO cmsg, beside the GSO one), so
a server with a secondary or floating address answers from the address its client dialed, not
from the route's preferred one. The socket is the one owner of that fact, keyed by the remote
address, so it follows a roaming peer for every protocol, bounded (MAX_STICKY remotes). When
the address goes away, the send fails (ENETUNREACH, EINVAL, EADDRNOTAVAIL): the remote's source
is forgotten and the datagram sent again from the kernel's choice. A datagram from a remote
records its destination before any protocol checks it: one spoofing a client's own address
could move where its replies leave from, until the client's next datagram moves it back.

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
from trivpn.net import recvmmsg

BATCH = 128  # datagrams received per wakeup (before a GRO split), then other tasks run
BUFFER_BYTES = 4 << 20  # room for bursts while the other direction holds the CPU
RECV_SIZE = 65535
SOL_UDP = 17
UDP_SEGMENT = 103  # linux/udp.h
UDP_GRO = 104
IP_PKTINFO = 8  # linux/in.h (not in every Python's socket module)
MAX_SEGMENTS = 64  # UDP_MAX_SEGMENTS in the kernel
MAX_GSO_BYTES = 65000  # stays under the 64 KiB IP datagram limit with headers
_CMSG_SPACE = socket.CMSG_SPACE(4)
# struct in_pktinfo {ifindex, spec_dst, addr}; struct in6_pktinfo {addr, ifindex}
_IN_PKTINFO_LEN = 12
_IN6_PKTINFO_LEN = 20
_PKTINFO_SPACE = socket.CMSG_SPACE(_IN6_PKTINFO_LEN)
MAX_STICKY = 1 << 16  # remotes remembered; past it the map starts again (a spoofed flood)
_NO_INDEX = bytes(4)
# A source no longer ours: IPv4 says ENETUNREACH, IPv6 EINVAL (or EADDRNOTAVAIL).
_SOURCE_GONE = frozenset((errno.EINVAL, errno.EADDRNOTAVAIL, errno.ENETUNREACH))
_DROPPED = frozenset(
    (errno.EAGAIN, errno.ENOBUFS, errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH,
     errno.EPERM, errno.EINVAL, errno.EMSGSIZE, errno.EHOSTDOWN, errno.EAFNOSUPPORT)
)  # fmt: skip

Addr = tuple[Any, ...]
Cmsg = tuple[int, int, bytes]


def source_cmsg(level: int, kind: int, value: bytes) -> Cmsg | None:
    """The cmsg that sends from the destination a received pktinfo cmsg names; None if it is
    not one. The interface index is left 0: the route chooses it, as for any reply."""
    if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(value) >= _IN_PKTINFO_LEN:
        # ipi_spec_dst (the source to use) := ipi_addr (the header's destination)
        return (level, kind, _NO_INDEX + value[8:12] + bytes(4))
    if (
        level == socket.IPPROTO_IPV6
        and kind == socket.IPV6_PKTINFO
        and len(value) >= _IN6_PKTINFO_LEN
    ):
        return (level, kind, value[:16] + _NO_INDEX)
    return None


def cmsg_source(cmsg: Cmsg) -> str:
    """The source address a :func:`source_cmsg` sends from (v4-mapped shown as IPv4)."""
    level, _kind, value = cmsg
    if level == socket.IPPROTO_IP:
        return socket.inet_ntop(socket.AF_INET, value[4:8])
    host = socket.inet_ntop(socket.AF_INET6, value[:16])
    return host.removeprefix("::ffff:") if "." in host else host


class DatagramSocket:
    """A non-blocking UDP socket; ``send_many`` and ``drain`` use GSO/GRO when they can."""

    def __init__(
        self,
        sock: socket.socket,
        *,
        offload: bool = True,
        sticky_source: bool = False,
        batched: bool | None = None,
    ) -> None:
        self.offload = offload
        # recvmmsg (None: where the platform has it); its buffers are made at the first drain
        self.batched = recvmmsg.available() if batched is None else batched
        self._mmsg: recvmmsg.MessageBatch | None = None
        self.gso = offload
        self.sticky_source = sticky_source
        # remote (host, port) -> the cmsg sending from the address it last sent to
        self._sources: dict[Addr, Cmsg] = {}
        # the last pktinfo received and its cmsg: one object shared by its remotes
        self._last_pktinfo: tuple[bytes | None, Cmsg] = (None, (0, 0, b""))
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
        if self.sticky_source:
            if self._maps_v4:  # IPv4 datagrams come with a v4-mapped IPV6_PKTINFO too
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
            else:
                sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)

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

    def source_for(self, addr: Addr) -> str | None:
        """The local address replies to ``addr`` leave from; None: the kernel's choice."""
        cmsg = self._sources.get(self._key(self._sockaddr(addr)))
        return None if cmsg is None else cmsg_source(cmsg)

    @staticmethod
    def _key(addr: Addr) -> Addr:
        return addr if len(addr) == 2 else addr[:2]

    def drain(self, limit: int = BATCH) -> list[tuple[bytes, Addr]]:
        """Receive until the socket would block (at most ``limit`` datagrams as received,
        before a GRO split); never awaits. Many per syscall with recvmmsg where there is one.

        With a sticky source, each datagram's destination is remembered for its sender."""
        if self._mmsg is None and self.batched:
            self._mmsg = recvmmsg.MessageBatch()  # on the first drain: a sender needs none
        if self._mmsg is not None:
            received = self._receive_batched(self._mmsg, limit)
        elif self.gro or self.sticky_source:
            received = self._receive_one_by_one(limit)
        else:
            batch: list[tuple[bytes, Addr]] = []
            recvfrom = self.sock.recvfrom
            for _ in range(limit):
                try:
                    batch.append(recvfrom(RECV_SIZE))
                except (BlockingIOError, InterruptedError):
                    break
                except ConnectionRefusedError:
                    continue  # an ICMP error for an earlier send; nothing to receive
            return batch
        return self._split_and_stick(received)

    def _receive_batched(self, batch: recvmmsg.MessageBatch, limit: int) -> list[recvmmsg.Received]:
        received: list[recvmmsg.Received] = []
        fd = self.sock.fileno()
        for _ in range(limit):  # calls: each takes one datagram at least, or ends the loop
            wanted = min(limit - len(received), batch.entries)
            if wanted <= 0:
                break
            try:
                got = batch.receive(fd, wanted)
            except ConnectionRefusedError:
                continue  # an ICMP error for an earlier send, reported once
            received += got
            if len(got) < wanted:
                break  # the socket is empty (or a datagram was too long): epoll says if not
        return received

    def _receive_one_by_one(self, limit: int) -> list[recvmmsg.Received]:
        received: list[recvmmsg.Received] = []
        recvmsg = self.sock.recvmsg
        space = _CMSG_SPACE + (_PKTINFO_SPACE if self.sticky_source else 0)
        for _ in range(limit):
            try:
                data, ancillary, _flags, addr = recvmsg(RECV_SIZE, space)
            except (BlockingIOError, InterruptedError):
                break
            except ConnectionRefusedError:
                continue
            received.append((data, ancillary, addr))
        return received

    def _split_and_stick(self, received: list[recvmmsg.Received]) -> list[tuple[bytes, Addr]]:
        """GRO buffers split at their segment size; each sender's destination remembered."""
        batch: list[tuple[bytes, Addr]] = []
        seen: tuple[object, object] = (None, None)
        segment = 0
        for data, ancillary, addr in received:
            # recvmmsg hands out one object per distinct cmsg set and sender: a datagram like
            # the one before (a burst from one remote to one address) has nothing new to say
            if (ancillary, addr) != seen:
                seen = (ancillary, addr)
                segment = self._cmsgs_of(ancillary, addr)
            if 0 < segment < len(data):
                for i in range(0, len(data), segment):
                    batch.append((data[i : i + segment], addr))
            else:
                batch.append((data, addr))
        return batch

    def _cmsgs_of(self, ancillary: Sequence[Cmsg], addr: Addr) -> int:
        """The GRO segment size a datagram's cmsgs give (0: none); its destination stuck."""
        sources = self._sources
        last_pktinfo, last_cmsg = self._last_pktinfo
        segment = 0
        for level, kind, value in ancillary:
            if level == SOL_UDP and kind == UDP_GRO:
                segment = int.from_bytes(value[:4], "little") if len(value) >= 4 else 0
            elif value == last_pktinfo:  # the usual case: the same address as before
                key = addr if len(addr) == 2 else addr[:2]
                if sources.get(key) is not last_cmsg:
                    self._stick(key, last_cmsg)
            elif (cmsg := source_cmsg(level, kind, value)) is not None:
                last_pktinfo, last_cmsg = value, cmsg
                self._stick(addr if len(addr) == 2 else addr[:2], cmsg)
                self._last_pktinfo = (last_pktinfo, last_cmsg)
        return segment

    def _stick(self, key: Addr, cmsg: Cmsg) -> None:
        sources = self._sources
        if len(sources) >= MAX_STICKY and key not in sources:
            sources.clear()
        sources[key] = cmsg

    def _sockaddr(self, addr: Addr) -> Addr:
        if self._maps_v4 and ":" not in addr[0]:
            return ("::ffff:" + addr[0], *addr[1:])
        return addr

    def _source_gone(self, addr: Addr, e: OSError) -> bool:
        """Whether ``e`` says the sticky source of ``addr`` is no longer ours (then forgotten)."""
        return e.errno in _SOURCE_GONE and self._sources.pop(self._key(addr), None) is not None

    def send(self, data: bytes, addr: Addr | None = None) -> bool:
        """Send one datagram without waiting; False when the kernel dropped it."""
        if addr is not None and self._maps_v4:
            addr = self._sockaddr(addr)
        try:
            if addr is None:
                self.sock.send(data)
            elif (source := self._sources.get(self._key(addr))) is not None:
                try:
                    self.sock.sendmsg((data,), (source,), 0, addr)
                except OSError as e:
                    if not self._source_gone(addr, e):
                        raise
                    self.sock.sendto(data, addr)
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
            elif (source := self._sources.get(self._key(addr))) is not None:
                try:
                    self.sock.sendmsg(run, [*ancillary, source], 0, addr)
                except OSError as e:
                    if not self._source_gone(addr, e):
                        raise
                    self.sock.sendmsg(run, ancillary, 0, addr)
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
    """A bound, non-blocking UDP socket with a sticky source; ``[::]`` listens dual-stack."""
    sock = socket.socket(endpoint.family, socket.SOCK_DGRAM)
    try:
        if endpoint.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((endpoint.host, endpoint.port))
        return DatagramSocket(sock, offload=offload, sticky_source=True)
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
