"""Cryptokey routing on the one route table: named owners, the longest prefix, networks
moving between peers, and the source check of decrypted packets against the same table."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import trio
import trio.testing
from support.fakes import FakeClient, fake_tun, make_front, until, virtual_wallclock
from support.wg_harness import B_TUN, ip4

from trivpn.config import WireGuardPeerConfig
from trivpn.dataplane.wireguard.front import WireGuardFront
from trivpn.dataplane.wireguard.routes import BURST, PeerRoute
from trivpn.dataplane.wireguard.uapi_target import PeerChange
from trivpn.proto import uapi
from trivpn.proto.wireguard import crypto

net = ipaddress.ip_network
addr = ipaddress.ip_address
SITE_PRIVATE = crypto.clamp(bytes([2]) * 32)
SITE, OFFICE = crypto.public_key(SITE_PRIVATE), crypto.public_key(crypto.clamp(bytes([3]) * 32))


def peer(name: str, key: bytes, *allowed: str) -> WireGuardPeerConfig:
    return WireGuardPeerConfig(name=name, public_key=key, allowed_ips=tuple(map(net, allowed)))


def owner_name(front: WireGuardFront, address: str) -> str:
    return repr(front.router.lookup(addr(address)))


def test_owners_are_named_and_the_longest_prefix_wins() -> None:
    front = make_front(peer("site", SITE, "10.0.0.0/8"), peer("office", OFFICE, "10.1.0.0/16"))
    assert owner_name(front, "10.1.2.3") == "WireGuard peer office"
    assert owner_name(front, "10.2.0.1") == "WireGuard peer site"
    owner = front.router.lookup(addr("10.2.0.1"))
    assert isinstance(owner, PeerRoute) and owner.peer is front.device.peers[SITE]
    assert front.device.peers[SITE].allowed_ips == (net("10.0.0.0/8"),)
    assert front.routed_networks() == {net("10.0.0.0/8"), net("10.1.0.0/16")}


def test_a_network_given_to_another_peer_moves_and_both_are_reported() -> None:
    front = make_front(peer("site", SITE, "10.0.0.0/8"), peer("office", OFFICE, "10.1.0.0/16"))
    reported: list[Sequence[PeerChange]] = []
    front.on_peer_change = reported.append
    front.uapi_apply([uapi.ConfigurePeer(SITE, allowed_ips=(net("10.1.0.0/16"),))])
    assert owner_name(front, "10.1.2.3") == "WireGuard peer site"
    assert front.device.peers[OFFICE].allowed_ips == ()
    assert front.device.peers[SITE].allowed_ips == (net("10.0.0.0/8"), net("10.1.0.0/16"))
    (changes,) = reported
    # the loser first: a registry frees the network before giving it to the other
    assert [(c.public_key, c.allowed_ips) for c in changes] == [
        (OFFICE, ()),
        (SITE, (net("10.0.0.0/8"), net("10.1.0.0/16"))),
    ]
    assert len(front.router) == 2


def test_a_removed_peer_takes_its_routes_and_only_them() -> None:
    front = make_front(peer("site", SITE, "10.0.0.0/8"), peer("office", OFFICE, "10.1.0.0/16"))
    assert front.discard_peer(OFFICE)
    assert owner_name(front, "10.1.2.3") == "WireGuard peer site"
    assert front.routed_networks() == {net("10.0.0.0/8")}


async def test_a_decrypted_packet_may_come_only_from_its_peers_own_networks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The source check asks the route table: a source inside the site's /8 but routed to
    the office (a longer prefix) is the office's, not the site's."""
    front = make_front(
        peer("site", SITE, "10.0.0.0/8"),
        peer("office", OFFICE, "10.1.0.0/16"),
        wallclock=virtual_wallclock,
    )
    site = FakeClient(front, SITE_PRIVATE)
    tun = fake_tun(front)
    counters = front.device.counters
    async with trio.open_nursery() as nursery:
        nursery.start_soon(front.receive_loop)
        site.send(ip4("10.2.0.1", B_TUN, b"own"))
        await until(lambda: len(tun.written) == 1)
        site.send(ip4("10.1.2.3", B_TUN, b"the office's"))
        await until(lambda: counters["spoofed_source"] == 1)
        site.send(ip4("192.0.2.7", B_TUN, b"nobody's"))
        await until(lambda: counters["spoofed_source"] == 2)
        front.discard_peer(OFFICE)  # its /16 is now inside the site's /8 only
        site.send(ip4("10.1.2.3", B_TUN, b"now the site's"))
        await until(lambda: len(tun.written) == 2)
        nursery.cancel_scope.cancel()
    assert tun.written == [
        ip4("10.2.0.1", B_TUN, b"own"),
        ip4("10.1.2.3", B_TUN, b"now the site's"),
    ]
    assert counters["spoofed_source"] == 2


async def test_a_long_run_to_one_peer_leaves_in_bursts_sent_as_they_are_sealed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A TUN batch for one peer goes out BURST datagrams at a time, in order: a client's
    socket drains one burst while the next is sealed instead of overflowing on the batch."""
    front = make_front(peer("site", SITE, "10.0.0.0/8"), wallclock=virtual_wallclock)
    site = FakeClient(front, SITE_PRIVATE)
    fake_tun(front)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(front.receive_loop)
        site.send(ip4("10.2.0.1", B_TUN, b"hello"))  # the handshake, then a session
        await until(lambda: front.device.peers[SITE].rx_bytes > 0)
        owner = front.router.lookup(addr("10.2.0.1"))
        assert owner is not None
        before = len(site.udp.sent)
        run = [ip4(B_TUN, "10.2.0.1", b"%03d" % i) for i in range(2 * BURST + 5)]
        owner.send(run, trio.current_time())
        nursery.cancel_scope.cancel()
    sends = site.udp.sent[before:]
    assert [len(s.datagrams) for s in sends] == [BURST, BURST, 5]
    assert site.packets[-len(run) :] == run
