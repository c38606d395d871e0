"""The WireGuard front's TUN and UDP socket, faked behind the Protocols the front uses
(trivpn.dataplane.wireguard.io_protocols), and a front built on them."""

from __future__ import annotations

import collections
import errno
import ipaddress
import os
import time
from collections.abc import Callable, Sequence

import attrs
import trio

from trivpn.config import WireGuardConfig, WireGuardPeerConfig
from trivpn.dataplane.router import RouteOwner, Router
from trivpn.dataplane.wireguard.front import WireGuardFront
from trivpn.dataplane.wireguard.io_protocols import Addr, UdpSocket
from trivpn.proto.wireguard import Device, Output, PeerConfig, crypto

SERVER_PRIVATE = crypto.clamp(bytes([1]) * 32)
LOOPBACK = "127.0.0.1"
FIRST_PORT = 51820
CLIENT_ADDR = ("192.0.2.2", 40000)
WALL_EPOCH = 1_700_000_000.0


def virtual_wallclock() -> float:
    """A wall clock that moves with trio's (virtual) clock."""
    return WALL_EPOCH + trio.current_time()


class FakeTun:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write_batch(self, packets: Sequence[bytes], *, verify_checksums: bool = True) -> int:
        self.written.extend(packets)
        return 0


@attrs.frozen
class BoundAddress:
    address: tuple[str, int]

    def getsockname(self) -> tuple[str, int]:
        return self.address


@attrs.frozen
class Sent:
    datagrams: list[bytes]
    addr: Addr | None
    at: float | None  # trio's clock, when sent inside trio


class FakeUdp:
    """A UDP socket in memory: ``sent`` holds what left, ``deliver`` is a datagram in.
    Ports in ``ports_in_use`` cannot be bound; ``refuse_mark`` refuses SO_MARK, as the kernel
    does without CAP_NET_ADMIN."""

    def __init__(self, port: int = FIRST_PORT) -> None:
        self.sock = BoundAddress((LOOPBACK, port))
        self.sent: list[Sent] = []
        self.ports_in_use: set[int] = set()
        self.refuse_mark = False
        self.on_send: Callable[[Sent], None] | None = None
        self._mark = 0
        self._inbox: list[tuple[bytes, Addr]] = []
        self._readable: trio.Event | None = None

    @property
    def fwmark(self) -> int:
        return self._mark

    def deliver(self, data: bytes, addr: Addr) -> None:
        self._inbox.append((data, addr))
        if self._readable is not None:
            self._readable.set()

    async def wait_readable(self) -> None:
        while not self._inbox:
            self._readable = trio.Event()
            await self._readable.wait()

    def drain(self) -> list[tuple[bytes, Addr]]:
        batch, self._inbox = self._inbox, []
        return batch

    def send_many(self, datagrams: Sequence[bytes], addr: Addr | None = None) -> None:
        try:
            at: float | None = trio.current_time()
        except RuntimeError:
            at = None
        sent = Sent(list(datagrams), addr, at)
        self.sent.append(sent)
        if self.on_send is not None:
            self.on_send(sent)

    def check_mark(self, mark: int) -> None:
        if self.refuse_mark:
            raise PermissionError(errno.EPERM, "Operation not permitted")

    def set_mark(self, mark: int) -> None:
        self.check_mark(mark)
        self._mark = mark

    def check_rebind(self, port: int) -> None:
        if port in self.ports_in_use:
            raise OSError(errno.EADDRINUSE, "Address already in use")

    def rebind(self, port: int) -> None:
        self.check_rebind(port)
        self.sock = BoundAddress((LOOPBACK, port))


def make_front(
    *peers: WireGuardPeerConfig,
    sock: UdpSocket | None = None,
    tun: FakeTun | None = None,
    router: Router[RouteOwner] | None = None,
    private_key: bytes = SERVER_PRIVATE,
    cfg: WireGuardConfig | None = None,
    wallclock: Callable[[], float] = time.time,
) -> WireGuardFront:
    """A front on fakes (or on ``sock``, a real loopback socket), with its own route table."""
    return WireGuardFront(
        cfg if cfg is not None else WireGuardConfig(enabled=True, peers=peers),
        private_key,
        router=Router() if router is None else router,
        tun=FakeTun() if tun is None else tun,
        sock=FakeUdp() if sock is None else sock,
        mtu=1420,
        counters=collections.Counter(),
        wallclock=wallclock,
    )


def fake_udp(front: WireGuardFront) -> FakeUdp:
    assert isinstance(front.sock, FakeUdp)
    return front.sock


def fake_tun(front: WireGuardFront) -> FakeTun:
    assert isinstance(front.tun, FakeTun)
    return front.tun


class FakeClient:
    """A sans-IO WireGuard client wired to a front on a FakeUdp: what the front sends reaches
    it at once, what it sends is delivered to the front's receive loop. Its clocks are trio's;
    its timers run in ``run_timers``, if a test starts it."""

    def __init__(
        self, front: WireGuardFront, private_key: bytes, *, preshared_key: bytes | None = None
    ) -> None:
        self.udp = fake_udp(front)
        self.device = Device(private_key, rng=os.urandom, wallclock=virtual_wallclock)
        self.peer = self.device.add_peer(
            PeerConfig(
                public_key=front.device.public_key,
                preshared_key=preshared_key,
                allowed_ips=(ipaddress.ip_network("0.0.0.0/0"),),
                endpoint=self.udp.sock.getsockname(),
            )
        )
        self.packets: list[bytes] = []  # decrypted, from the front
        self.received: list[tuple[float, int]] = []  # (time, size) of each datagram in
        self.sent: list[tuple[float, int]] = []  # (time, size) of each datagram out
        self.udp.on_send = self._from_front

    def _from_front(self, sent: Sent) -> None:
        assert sent.addr == CLIENT_ADDR, sent.addr
        for data in sent.datagrams:
            now = trio.current_time()
            self.received.append((now, len(data)))
            self._transmit(self.device.receive(data, self.udp.sock.getsockname(), now))

    def _transmit(self, out: Output) -> None:
        for data, _ in out.datagrams:
            self.sent.append((trio.current_time(), len(data)))
            self.udp.deliver(data, CLIENT_ADDR)
        self.packets.extend(out.packets)

    def send(self, packet: bytes) -> None:
        self._transmit(self.device.send(self.peer, packet, trio.current_time()))

    async def run_timers(self) -> None:
        """Tick at each deadline (one checked every 10 ms: a client needs no better)."""
        while True:
            deadline = self.device.next_deadline()
            if deadline is not None and deadline <= trio.current_time():
                self._transmit(self.device.tick(trio.current_time()))
            await trio.sleep(0.01)


async def until(condition: Callable[[], bool], bound: float = 5.0) -> None:
    """Wait (in virtual 1 ms steps under MockClock) until ``condition()``, at most ``bound``."""
    with trio.fail_after(bound):
        while not condition():
            await trio.sleep(0.001)
