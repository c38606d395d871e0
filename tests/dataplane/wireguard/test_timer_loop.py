"""The devices driven by a tiny trio loop under MockClock(autojump_threshold=0).

This is the shape the server will have: one task per device that waits for a datagram or
its next deadline, whichever comes first, with ``now`` from ``trio.current_time()``.
"""

from __future__ import annotations

import ipaddress
import itertools
import random

import trio
import trio.testing
from support.wg_harness import A_ADDR, A_TUN, B_ADDR, B_TUN, ip4

from trivpn.proto.wireguard import Device, Output, Peer, PeerConfig

Datagram = tuple[bytes, tuple[str, int]]


async def _run_device(
    device: Device,
    inbox: trio.MemoryReceiveChannel[Datagram],
    outbox: trio.MemorySendChannel[bytes],
    delivered: list[tuple[float, bytes]],
    sent: list[tuple[float, int]],
) -> None:
    out = Output()
    while True:
        deadline = device.next_deadline()
        with trio.move_on_at(float("inf") if deadline is None else deadline):
            data, addr = await inbox.receive()
            device.receive(data, addr, trio.current_time(), out)
        device.tick(trio.current_time(), out)
        for datagram, _ in out.datagrams:
            sent.append((trio.current_time(), len(datagram)))
            await outbox.send(datagram)
        delivered.extend((trio.current_time(), p) for p in out.packets)
        out.clear()


async def _forward(
    rx: trio.MemoryReceiveChannel[bytes], tx: trio.MemorySendChannel[Datagram], src: tuple[str, int]
) -> None:
    async for data in rx:
        await trio.sleep(0.005)  # a little link latency
        await tx.send((data, src))


async def test_persistent_keepalive_and_data_under_mock_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rnd = random.Random(7)
    a = Device(rnd.randbytes(32), rng=rnd.randbytes, wallclock=lambda: 1e9 + trio.current_time())
    b = Device(rnd.randbytes(32), rng=rnd.randbytes, wallclock=lambda: 1e9 + trio.current_time())
    a.add_peer(
        PeerConfig(
            public_key=b.public_key,
            allowed_ips=(ipaddress.ip_network(f"{B_TUN}/32"),),
            endpoint=B_ADDR,
            persistent_keepalive=25,
        )
    )
    b_peer: Peer = b.add_peer(
        PeerConfig(public_key=a.public_key, allowed_ips=(ipaddress.ip_network(f"{A_TUN}/32"),))
    )
    to_b_tx, to_b_rx = trio.open_memory_channel[Datagram](100)
    to_a_tx, to_a_rx = trio.open_memory_channel[Datagram](100)
    a_out_tx, a_out_rx = trio.open_memory_channel[bytes](100)
    b_out_tx, b_out_rx = trio.open_memory_channel[bytes](100)
    delivered_a: list[tuple[float, bytes]] = []
    delivered_b: list[tuple[float, bytes]] = []
    sent_a: list[tuple[float, int]] = []
    sent_b: list[tuple[float, int]] = []

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_run_device, a, to_a_rx, a_out_tx, delivered_a, sent_a)
        nursery.start_soon(_run_device, b, to_b_rx, b_out_tx, delivered_b, sent_b)
        nursery.start_soon(_forward, a_out_rx, to_b_tx, A_ADDR)
        nursery.start_soon(_forward, b_out_rx, to_a_tx, B_ADDR)
        await trio.sleep(60)
        # The server side has a packet for the client, 60 s into the session.
        reply = b.send(b_peer, ip4(B_TUN, A_TUN, b"from the server"), trio.current_time())
        for datagram, addr in reply.datagrams:
            assert addr == A_ADDR
            await to_a_tx.send((datagram, B_ADDR))
        await trio.sleep(140)
        nursery.cancel_scope.cancel()

    assert trio.current_time() - start >= 200  # virtual time: the test itself is instant
    assert [len(p) for _, p in delivered_a] == [20 + len(b"from the server")]
    assert b_peer.endpoint == A_ADDR and b_peer.current is not None
    keepalives = [t - start for t, size in sent_a if size == 32]
    # One right after the handshake, then every 25 s of silence on A's side.
    assert len(keepalives) >= 8
    gaps = [round(y - x, 3) for x, y in itertools.pairwise(keepalives)]
    assert all(g <= 25.0 for g in gaps), gaps
    # The first handshake, and the rekey by the first keepalive after REKEY_AFTER_TIME.
    initiations = [t - start for t, size in sent_a if size == 148]
    assert len(initiations) == 2 and 120 < initiations[1] <= 150, initiations
