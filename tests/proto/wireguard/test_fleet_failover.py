"""Device.fleet_endpoints: a gateway of a fleet that receives transport data for a session it
never had, from an endpoint the fleet knows as one of its peers', initiates toward that peer
at once (its session was with another gateway), at most once per REKEY_TIMEOUT; data from
any other endpoint changes nothing. Gateway C shares B's private key (one identity)."""

from __future__ import annotations

import ipaddress
import random

from support.wg_harness import A_ADDR, A_TUN, B_TUN, Net, ip4

from trivpn.proto.wireguard import Device, Output, PeerConfig, messages
from trivpn.proto.wireguard.timers import KEEPALIVE_TIMEOUT, REKEY_TIMEOUT


def _fleet() -> tuple[Net, Device, bytes]:
    """A's session is with B; C is B's twin, with A as a peer it has no session with. Also
    A's next transport datagram (sent toward B's address: what a floating address brings)."""
    net = Net(seed=3)
    net.handshake()
    c = Device(net.b.identity.private_key, rng=random.Random(7).randbytes, wallclock=net.wallclock)
    c.add_peer(
        PeerConfig(
            public_key=net.a.public_key,
            allowed_ips=(ipaddress.ip_network(f"{A_TUN}/32"),),
            name="A",
        )
    )
    out = net.a.send(net.a_peer, ip4(A_TUN, B_TUN, b"on the old session"), net.now)
    (data, _) = out.datagrams[0]
    assert data[0] == messages.MSG_TRANSPORT
    return net, c, data


def _initiations(out: Output) -> list[tuple[bytes, tuple[str, int]]]:
    return [(d, addr) for d, addr in out.datagrams if d[0] == messages.MSG_INITIATION]


def test_data_from_a_known_endpoint_initiates_once_toward_it() -> None:
    net, c, data = _fleet()
    c.fleet_endpoints = {A_ADDR: net.a.public_key}
    out = c.receive(data, A_ADDR, net.now)
    assert out.packets == []  # not decrypted: C never had that session
    assert [addr for _, addr in _initiations(out)] == [A_ADDR]
    assert len(out.datagrams) == 1
    assert c.peers[net.a.public_key].endpoint == A_ADDR
    assert c.counters["fleet_failover"] == 1 and c.counters["unknown_index"] == 1

    # A answers C's initiation (it sees B's address: the same identity); the session is C's
    ((initiation, _),) = _initiations(out)
    answer = net.a.receive(initiation, ("198.51.100.1", 51820), net.now)
    ((response, _),) = answer.datagrams
    assert response[0] == messages.MSG_RESPONSE
    keepalive = c.receive(response, A_ADDR, net.now)
    assert c.peers[net.a.public_key].current is not None
    for sent, _ in keepalive.datagrams:  # C's keepalive confirms the session to A
        net.a.receive(sent, ("198.51.100.1", 51820), net.now)
    out = net.a.send(net.a_peer, ip4(A_TUN, B_TUN, b"resumed"), net.now)
    ((resumed, _),) = out.datagrams
    assert c.receive(resumed, A_ADDR, net.now).packets == [ip4(A_TUN, B_TUN, b"resumed")]


def test_data_from_an_unknown_endpoint_changes_nothing() -> None:
    net, c, data = _fleet()
    c.fleet_endpoints = {("192.0.2.9", 4000): net.a.public_key}
    out = c.receive(data, A_ADDR, net.now)
    assert out.datagrams == [] and out.events == []
    assert c.peers[net.a.public_key].endpoint is None
    assert c.counters["fleet_failover"] == 0 and c.counters["unknown_index"] == 1


def test_a_known_endpoint_of_a_key_that_is_not_our_peer_changes_nothing() -> None:
    net, c, data = _fleet()
    c.fleet_endpoints = {A_ADDR: bytes(32)}
    assert c.receive(data, A_ADDR, net.now).datagrams == []


def test_a_blocked_peer_gets_no_initiation() -> None:
    net, c, data = _fleet()
    c.fleet_endpoints = {A_ADDR: net.a.public_key}
    c.set_blocked(c.peers[net.a.public_key], True)
    assert c.receive(data, A_ADDR, net.now).datagrams == []
    assert c.counters["fleet_failover"] == 0


def test_at_most_one_initiation_per_rekey_timeout() -> None:
    net, c, data = _fleet()
    c.fleet_endpoints = {A_ADDR: net.a.public_key}
    t0 = net.now
    assert len(_initiations(c.receive(data, A_ADDR, t0))) == 1
    for later in (t0, t0 + 1.0, t0 + REKEY_TIMEOUT - 0.001):
        assert c.receive(data, A_ADDR, later).datagrams == []
    assert c.counters["fleet_failover"] == 1
    assert len(_initiations(c.receive(data, A_ADDR, t0 + REKEY_TIMEOUT))) == 1
    assert c.counters["fleet_failover"] == 2


def test_a_peer_alive_here_is_not_pointed_away_by_a_spoofed_datagram() -> None:
    """B holds A's live session; a datagram for an unknown index that claims A's stale fleet
    endpoint (anyone can send one) changes nothing until A has been silent here long enough
    for a stock client to give up on its session."""
    net = Net(seed=3)
    net.handshake()
    b, a_key = net.b, net.a.public_key
    stale = ("192.0.2.77", 51820)
    b.fleet_endpoints = {stale: a_key}
    out = net.a.send(net.a_peer, ip4(A_TUN, B_TUN, b"alive"), net.now)
    ((data, _),) = out.datagrams
    assert b.receive(data, A_ADDR, net.now).packets  # authenticated, here
    spoofed = bytes([messages.MSG_TRANSPORT, 0, 0, 0]) + bytes([0xEE] * 4) + bytes(24)
    quiet = KEEPALIVE_TIMEOUT + REKEY_TIMEOUT
    for later in (net.now, net.now + quiet - 0.001):
        assert b.receive(spoofed, stale, later).datagrams == []
        assert b.peers[a_key].endpoint == A_ADDR
    assert b.counters["fleet_failover"] == 0
    assert len(_initiations(b.receive(spoofed, stale, net.now + quiet))) == 1
    assert b.peers[a_key].endpoint == stale
