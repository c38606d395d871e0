"""10,000 peers with a persistent keepalive added at once, under MockClock: their first
initiations are spread over FIRST_TIMER_SPREAD and leave in slices of at most TIMER_SLICE,
with other tasks running between slices."""

from __future__ import annotations

import ipaddress

import trio
import trio.testing
from support.fakes import fake_udp, make_front, virtual_wallclock

from trivpn.config import Endpoint, WireGuardPeerConfig
from trivpn.dataplane.wireguard.loops import TIMER_SLICE
from trivpn.proto.wireguard import FIRST_TIMER_SPREAD, Output, crypto
from trivpn.proto.wireguard.messages import INITIATION_LEN

PEERS = 10_000
KEEPALIVE = 25


def crowd() -> list[WireGuardPeerConfig]:
    return [
        WireGuardPeerConfig(
            name=f"site{i}",
            public_key=crypto.public_key(crypto.clamp(i.to_bytes(4, "little") * 8)),
            allowed_ips=(ipaddress.ip_network(ipaddress.IPv4Address(0x0A100000 + i)),),
            endpoint=Endpoint("192.0.2.7", 10000 + i),
            persistent_keepalive=KEEPALIVE,
        )
        for i in range(1, PEERS + 1)
    ]


async def test_a_crowd_of_new_peers_is_spread_and_sliced(
    autojump_clock: trio.testing.MockClock,
) -> None:
    front = make_front(*crowd(), wallclock=virtual_wallclock)
    udp = fake_udp(front)
    device = front.device
    per_tick: list[int] = []  # initiations each device.tick produced
    ticks_between: list[int] = []  # ticks between two turns of another task
    since_turn = 0
    tick = device.tick

    def counting_tick(now: float, out: Output | None = None, *, limit: int | None = None) -> Output:
        nonlocal since_turn
        result = tick(now, out, limit=limit)
        per_tick.append(sum(len(d) == INITIATION_LEN for d, _ in result.datagrams))
        since_turn += 1
        return result

    device.tick = counting_tick  # type: ignore[method-assign]

    async def other_task() -> None:
        """Wakes when the timer loop does, and then at every schedule point while it works."""
        nonlocal since_turn
        while True:
            ticks_between.append(since_turn)
            since_turn = 0
            deadline = device.next_deadline()
            if deadline is not None and deadline <= trio.current_time():
                await trio.sleep(0)
            else:
                await trio.sleep_until(trio.current_time() + 1 if deadline is None else deadline)

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(other_task)
        nursery.start_soon(front.timer_loop)
        await trio.sleep(FIRST_TIMER_SPREAD + 1)
        nursery.cancel_scope.cancel()

    initiations = [s for s in udp.sent for d in s.datagrams if len(d) == INITIATION_LEN]
    first_sends = {s.addr: s.at for s in reversed(initiations)}  # each peer's first
    assert len(first_sends) == PEERS  # every peer initiated ...
    times = [at for at in first_sends.values() if at is not None]
    assert len(times) == PEERS
    assert start <= min(times) and max(times) <= start + FIRST_TIMER_SPREAD  # ... in the spread
    assert max(times) - min(times) > FIRST_TIMER_SPREAD / 2  # spread out, not one burst
    in_first_second = sum(at < start + 1 for at in times)
    assert PEERS / 4 < in_first_second < PEERS * 3 / 4  # roughly uniform
    assert max(per_tick) <= TIMER_SLICE  # no tick does more than one slice
    assert sum(per_tick) >= PEERS
    # the other task ran between any two slices (trio may run it before or after the loop
    # in each batch of runnable tasks, so two slices can meet across a batch boundary)
    assert max(ticks_between) <= 2


async def test_a_few_new_peers_start_at_once(autojump_clock: trio.testing.MockClock) -> None:
    few = crowd()[:3]
    front = make_front(*few, wallclock=virtual_wallclock)
    udp = fake_udp(front)
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(front.timer_loop)
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert [s.at for s in udp.sent[:3]] == [start] * 3  # as wg(8): the handshake at once
