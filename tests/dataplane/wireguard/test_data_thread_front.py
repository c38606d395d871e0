"""A WireGuard front whose socket the data thread serves (``run_on_data_thread``): its
flushes reach trio only through the handoff, and wake the timer task only when the device's
next deadline moved earlier than the one it sleeps to. The handoff here runs what it is
given at once, in the trio thread, and records it."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import trio
import trio.testing
from support.fakes import FakeClient, fake_tun, make_front
from support.wg_harness import A_TUN, B_TUN, ip4

from trivpn.config import WireGuardPeerConfig
from trivpn.proto.wireguard import crypto

SERVER_PRIVATE = crypto.clamp(bytes([1]) * 32)
CLIENT_PRIVATE = crypto.clamp(bytes([2]) * 32)


async def test_timer_task_woken_through_the_handoff_only_for_an_earlier_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    peer = WireGuardPeerConfig(
        name="client",
        public_key=crypto.public_key(CLIENT_PRIVATE),
        allowed_ips=(ipaddress.ip_network(f"{A_TUN}/32"),),
    )
    front = make_front(peer, private_key=SERVER_PRIVATE)
    handed: list[str] = []

    def handoff(fn: Callable[..., object], *args: object) -> None:
        handed.append(getattr(fn, "__name__", repr(fn)))
        fn(*args)

    front.run_on_data_thread(handoff)
    client = FakeClient(front, CLIENT_PRIVATE)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(front.timer_loop)
        await trio.testing.wait_all_tasks_blocked()
        client.send(ip4(A_TUN, B_TUN, b"first"))  # an initiation: the handshake's timers
        front.receive_ready(trio.current_time)
        front.receive_ready(trio.current_time)  # the first data packet
        assert len(fake_tun(front).written) == 1
        assert "wake" in handed
        await trio.testing.wait_all_tasks_blocked()
        woken = handed.count("wake")
        for n in range(20):  # steady traffic moves no deadline earlier
            client.send(ip4(A_TUN, B_TUN, bytes([n])))
            front.receive_ready(trio.current_time)
        assert len(fake_tun(front).written) == 21
        assert handed.count("wake") == woken
        nursery.cancel_scope.cancel()
