"""The WireGuard receive loop tells ``after_tun_write`` (the TUN reader's ``tun_written``)
how many decrypted packets a batch wrote to the TUN, once they are written, and says
nothing of a batch that wrote none (a handshake)."""

from __future__ import annotations

import collections
import ipaddress

import trio
import trio.testing
from support.fakes import FakeClient, FakeTun, FakeUdp, until
from support.wg_harness import A_TUN, B_TUN, ip4

from trivpn.config import WireGuardConfig, WireGuardPeerConfig
from trivpn.dataplane.router import RouteOwner, Router
from trivpn.dataplane.wireguard.front import WireGuardFront
from trivpn.proto.wireguard import crypto

SERVER_PRIVATE = crypto.clamp(bytes([1]) * 32)
CLIENT_PRIVATE = crypto.clamp(bytes([2]) * 32)


async def test_called_once_per_batch_written_to_the_tun(
    autojump_clock: trio.testing.MockClock,
) -> None:
    tun = FakeTun()
    calls: list[tuple[int, int]] = []  # (packets told, packets the TUN held) of each call
    peer = WireGuardPeerConfig(
        name="client",
        public_key=crypto.public_key(CLIENT_PRIVATE),
        allowed_ips=(ipaddress.ip_network(f"{A_TUN}/32"),),
    )
    front = WireGuardFront(
        WireGuardConfig(enabled=True, peers=(peer,)),
        SERVER_PRIVATE,
        router=Router[RouteOwner](),
        tun=tun,
        sock=FakeUdp(),
        mtu=1420,
        counters=collections.Counter(),
        after_tun_write=lambda n: calls.append((n, len(tun.written))),
    )
    client = FakeClient(front, CLIENT_PRIVATE)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(front.receive_loop)
        client.send(ip4(A_TUN, B_TUN, b"first"))  # queued behind the handshake
        await until(lambda: len(tun.written) == 1)
        await trio.testing.wait_all_tasks_blocked()
        # the initiation's batch wrote nothing; the first data packet's wrote one
        assert calls == [(1, 1)]
        for n in range(3):  # one batch of three
            client.send(ip4(A_TUN, B_TUN, bytes([n])))
        await until(lambda: len(tun.written) == 4)
        await trio.testing.wait_all_tasks_blocked()
        assert calls == [(1, 1), (3, 4)]
        nursery.cancel_scope.cancel()
