"""``[toyvpn] rate_down``/``rate_up``: every session's packets policed each way by its own
token bucket; drops counted ``rate_limited``. Under MockClock, on a fake socket and TUN."""

from __future__ import annotations

import ipaddress

import trio
import trio.testing
from support.fakes import until
from support.toy_front import SECRET, ToyUdp, toy_front
from support.wg_harness import ip4

from trivpn.config import parse_config
from trivpn.dataplane.toyvpn import ToyVpnFront

RATE = 2_000_000  # 250 kB/s: the burst is the minimum, 64 KiB
SIZE = 1000  # bytes per packet: 65 fit in the burst


def from_client(source: str, n: int) -> bytes:
    return ip4(source, "192.0.2.80", bytes([n % 256]) * (SIZE - 20))


async def connect(front: ToyVpnFront, sock: ToyUdp, client: tuple[str, int]) -> str:
    """A client's handshake; its tunnel address."""
    sock.deliver(b"\x00" + SECRET, client)
    await until(lambda: client in front.protocol.sessions)
    return str(front.protocol.sessions[client].address)


async def test_rates_police_each_session_each_way(autojump_clock: trio.testing.MockClock) -> None:
    front, sock, tun = toy_front(rate_down=RATE, rate_up=RATE)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(front.receive_loop, nursery)
        slow, other = ("198.51.100.2", 4000), ("198.51.100.3", 4000)
        address = await connect(front, sock, slow)
        other_address = await connect(front, sock, other)

        for n in range(100):  # up: one batch from the first client, over its burst
            sock.deliver(from_client(address, n), slow)
        await until(lambda: front.protocol.counters["rate_limited"] == 35)
        assert len(tun.written) == 65
        for n in range(50):  # the other client's bucket is its own
            sock.deliver(from_client(other_address, n), other)
        await until(lambda: len(tun.written) == 115)
        await trio.sleep(1.0)  # refilled, to the burst and no more
        for n in range(100):
            sock.deliver(from_client(address, n), slow)
        await until(lambda: len(tun.written) == 180)
        assert front.protocol.counters["rate_limited"] == 70

        # down: the route of the session polices what the TUN reader hands it
        route = front.router.lookup(ipaddress.ip_address(address))
        assert route is not None
        sent = sum(len(s.datagrams) for s in sock.sent)
        route.send([ip4("192.0.2.80", address, bytes(SIZE - 20))] * 100, trio.current_time())
        assert sum(len(s.datagrams) for s in sock.sent) == sent + 65
        assert front.protocol.counters["rate_limited"] == 70 + 35
        nursery.cancel_scope.cancel()


async def test_without_rates_nothing_is_policed(autojump_clock: trio.testing.MockClock) -> None:
    front, sock, tun = toy_front()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(front.receive_loop, nursery)
        client = ("198.51.100.2", 4000)
        address = await connect(front, sock, client)
        for n in range(200):
            sock.deliver(from_client(address, n), client)
        await until(lambda: len(tun.written) == 200)
        route = front.router.lookup(ipaddress.ip_address(address))
        assert route is not None
        sent = sum(len(s.datagrams) for s in sock.sent)
        route.send([ip4("192.0.2.80", address, bytes(SIZE - 20))] * 200, trio.current_time())
        assert sum(len(s.datagrams) for s in sock.sent) == sent + 200
        assert front.protocol.counters["rate_limited"] == 0
        nursery.cancel_scope.cancel()


def test_rates_are_read_from_the_config() -> None:
    cfg = parse_config(
        '[interface]\naddress = ["10.8.0.1/24"]\n[toyvpn]\nrate_down = "20Mbit"\nrate_up = "none"\n'
    )
    assert (cfg.toyvpn.rate_down, cfg.toyvpn.rate_up) == (20_000_000, None)
