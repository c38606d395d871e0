"""A new preshared key is set in place: the peer's counters (exported as Prometheus counters)
never go back, its sessions end and the next handshake uses the new key."""

from __future__ import annotations

import ipaddress

import attrs
import trio
import trio.testing
from support.fakes import FakeClient, fake_tun, make_front, until, virtual_wallclock
from support.wg_harness import A_TUN, B_TUN, ip4

from trivpn.config import WireGuardPeerConfig
from trivpn.dataplane.wireguard.peers import peer_config
from trivpn.proto import uapi
from trivpn.proto.wireguard import Peer, crypto

CLIENT_PRIVATE = crypto.clamp(bytes([2]) * 32)
CLIENT = crypto.public_key(CLIENT_PRIVATE)
PSK = bytes(range(32))


def counters(peer: Peer) -> tuple[int, ...]:
    return (peer.rx_bytes, peer.tx_bytes, peer.rx_packets, peer.tx_packets, peer.handshakes)


async def test_counters_survive_a_preshared_key_change(
    autojump_clock: trio.testing.MockClock,
) -> None:
    front = make_front(
        WireGuardPeerConfig(
            name="client",
            public_key=CLIENT,
            allowed_ips=(ipaddress.ip_network(f"{A_TUN}/32"),),
        ),
        wallclock=virtual_wallclock,
    )
    client = FakeClient(front, CLIENT_PRIVATE)
    tun = fake_tun(front)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(front.receive_loop)
        nursery.start_soon(front.timer_loop)
        client.send(ip4(A_TUN, B_TUN, b"one"))
        await until(lambda: len(tun.written) == 1)
        peer = front.device.peers[CLIENT]
        owner = front.router.lookup(ipaddress.ip_address(A_TUN))
        assert owner is not None
        owner.send([ip4(B_TUN, A_TUN, b"back")], trio.current_time())
        await until(lambda: len(client.packets) == 1)
        before = counters(peer)
        assert all(before) and peer.handshakes == 1

        await trio.sleep(1)
        front.uapi_apply([uapi.ConfigurePeer(CLIENT, preshared_key=PSK)])
        assert front.device.peers[CLIENT] is peer and peer.preshared_key == PSK
        assert counters(peer) == before  # in place: nothing starts from zero
        assert peer.current is None  # the session made with the old key ended

        # The client has the new key too: a new handshake, and the counters go on from there.
        client.device.set_preshared_key(client.peer, PSK)
        client.send(ip4(A_TUN, B_TUN, b"two"))
        await until(lambda: len(tun.written) == 2)
        after = counters(peer)
        assert after[4] == before[4] + 1  # one more handshake
        assert all(a > b for a, b in zip(after[:3], before[:3], strict=True)), (before, after)
        assert after[3] >= before[3]  # the front sent no data since, maybe a keepalive
        nursery.cancel_scope.cancel()
    assert tun.written[1] == ip4(A_TUN, B_TUN, b"two")


def test_the_registry_and_a_reload_change_it_in_place_too() -> None:
    static = WireGuardPeerConfig(name="client", public_key=CLIENT, allowed_ips=())
    front = make_front(static)
    peer = front.device.peers[CLIENT]
    peer.rx_packets, peer.handshakes = 7, 3
    config = peer_config(static)
    assert front.apply_peer_config(attrs.evolve(config, preshared_key=PSK)) == "changed"
    assert front.device.peers[CLIENT] is peer and peer.preshared_key == PSK
    assert (peer.rx_packets, peer.handshakes) == (7, 3)
    assert front.apply_peer_config(attrs.evolve(config, preshared_key=PSK)) is None
