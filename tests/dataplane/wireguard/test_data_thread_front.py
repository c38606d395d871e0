"""A WireGuard front whose socket and timers the data thread serves
(``run_on_data_thread``): steady traffic hands nothing to trio (the first handshake's
endpoint change goes there); a change made on the trio side that may move a deadline wakes
the thread; ``tick`` at ``next_deadline`` runs the device's timers. The front runs here on
the test's own thread, as the data thread would run it."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import trio
import trio.testing
from support.fakes import FakeClient, fake_tun, fake_udp, make_front
from support.wg_harness import A_TUN, B_TUN, ip4

from trivpn.config import WireGuardPeerConfig
from trivpn.proto.wireguard import PeerConfig, crypto

SERVER_PRIVATE = crypto.clamp(bytes([1]) * 32)
CLIENT_PRIVATE = crypto.clamp(bytes([2]) * 32)
OTHER_PUBLIC = crypto.public_key(crypto.clamp(bytes([3]) * 32))


async def test_timers_and_wakes_on_the_data_thread(
    autojump_clock: trio.testing.MockClock,
) -> None:
    peer = WireGuardPeerConfig(
        name="client",
        public_key=crypto.public_key(CLIENT_PRIVATE),
        allowed_ips=(ipaddress.ip_network(f"{A_TUN}/32"),),
        persistent_keepalive=25,
    )
    front = make_front(peer, private_key=SERVER_PRIVATE)
    handed: list[Callable[..., object]] = []
    wakes: list[float] = []
    front.run_on_data_thread(
        lambda fn, *args: handed.append(fn), lambda: wakes.append(trio.current_time())
    )
    client = FakeClient(front, CLIENT_PRIVATE)
    client.send(ip4(A_TUN, B_TUN, b"first"))  # an initiation, then the data behind it
    front.receive_ready(trio.current_time)
    front.receive_ready(trio.current_time)
    assert len(fake_tun(front).written) == 1
    for n in range(20):
        client.send(ip4(A_TUN, B_TUN, bytes([n])))
        front.receive_ready(trio.current_time)
    assert len(fake_tun(front).written) == 21
    # to trio: the endpoint the handshake set (for the kernel routes), nothing per packet
    assert [getattr(fn, "__name__", fn) for fn in handed] == ["routes_changed"]

    deadline = front.next_deadline()
    assert deadline is not None and deadline > trio.current_time()
    await trio.sleep_until(deadline)
    sent = len(fake_udp(front).sent)
    front.tick(trio.current_time())
    assert len(fake_udp(front).sent) > sent  # the persistent keepalive, by the thread
    assert front.next_deadline() != deadline

    woken = len(wakes)
    front.apply_peer_config(
        PeerConfig(public_key=OTHER_PUBLIC, endpoint=("192.0.2.9", 51820), persistent_keepalive=5)
    )
    assert len(wakes) > woken  # a trio-side change: the thread is told to recompute
