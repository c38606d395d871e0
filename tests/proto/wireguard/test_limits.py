"""Device.set_usage_limit and Device.set_rates: the usage limit stops a peer's packets once
reached (the one that reaches it still goes, QuotaReached is raised once), within the bound
its docstring states; rates police inner packets each way, keepalives exempt; nothing
unauthenticated or replayed spends a peer's usage or tokens. B is the server side."""

from __future__ import annotations

import ipaddress
import os

from support.wg_harness import A_ADDR, A_TUN, B_ADDR, B_TUN, Net, event_types, ip4

from trivpn.proto.wireguard import Device, Output, Peer, PeerConfig, QuotaReached, crypto
from trivpn.proto.wireguard.messages import INITIATION_LEN, RESPONSE_LEN, TRANSPORT_MIN_LEN

PAYLOAD = 100  # bytes after the 20-byte header: 120, padded to 128, + 32 = 160 on the wire
DATAGRAM = 160


def usage(peer: Peer) -> int:
    return peer.rx_bytes + peer.tx_bytes


def a_batch(net: Net, count: int, payload: int = PAYLOAD) -> list[bytes]:
    """``count`` datagrams A encrypts for B, not delivered."""
    out = Output()
    for i in range(count):
        net.a.send(net.a_peer, ip4(A_TUN, B_TUN, bytes([i]) * payload), net.now, out)
    return [data for data, _ in out.datagrams]


def deliver_to_b(net: Net, datagrams: list[bytes]) -> Output:
    """One receive batch of B, as the front's loop drives it (one shared Output)."""
    out = Output()
    for data in datagrams:
        net.b.receive(data, A_ADDR, net.now, out)
    return out


def test_the_limit_is_crossed_mid_batch_from_the_peer_within_one_datagram() -> None:
    net = Net()
    net.handshake()
    base = usage(net.b_peer)
    remaining = 5 * DATAGRAM - 10  # the fifth datagram reaches it
    net.b.set_usage_limit(net.b_peer, remaining)
    datagrams = a_batch(net, 20)
    assert {len(d) for d in datagrams} == {DATAGRAM}
    out = deliver_to_b(net, datagrams)
    assert len(out.packets) == 5  # the one that reaches the limit still goes
    assert [type(e) for e in out.events] == [QuotaReached]  # once, though 15 more came
    assert net.b.counters["blocked"] == 15
    limit = base + remaining
    assert limit <= usage(net.b_peer) < limit + DATAGRAM  # the docstring's bound
    assert usage(net.b_peer) - base == 5 * DATAGRAM  # the 15 dropped are not counted
    # still at the limit: no second event, and the way toward the peer is shut too
    out = Output()
    net.b.send(net.b_peer, ip4(B_TUN, A_TUN, b"late"), net.now, out)
    assert out.is_empty() and net.b.counters["blocked"] == 16
    # the limit moves: traffic flows again, and a new crossing raises again
    net.b.set_usage_limit(net.b_peer, DATAGRAM)
    out = deliver_to_b(net, a_batch(net, 3))
    assert len(out.packets) == 1 and event_types(out.events) == ["QuotaReached"]
    net.b.set_usage_limit(net.b_peer, None)
    assert not net.b_peer.limited
    assert len(deliver_to_b(net, a_batch(net, 3)).packets) == 3


def test_the_limit_toward_the_peer_stops_a_batch_and_queued_packets() -> None:
    net = Net()
    net.handshake()
    net.b.set_usage_limit(net.b_peer, 3 * DATAGRAM)  # exactly three datagrams
    out = Output()
    for i in range(10):
        net.b.send(net.b_peer, ip4(B_TUN, A_TUN, bytes([i]) * PAYLOAD), net.now, out)
    assert len(out.datagrams) == 3
    assert event_types(out.events) == ["QuotaReached"]
    assert net.b.counters["blocked"] == 7


def test_packets_queued_before_the_handshake_stop_at_the_limit_when_sent() -> None:
    net = Net()  # A initiates; its packets wait for the session, having passed when queued
    net.a.set_usage_limit(net.a_peer, INITIATION_LEN + RESPONSE_LEN + 2 * DATAGRAM)
    out = Output()
    for i in range(10):
        net.a.send(net.a_peer, ip4(A_TUN, B_TUN, bytes([i]) * PAYLOAD), net.now, out)
    assert [len(d) for d, _ in out.datagrams] == [INITIATION_LEN]
    response = net.b.receive(out.datagrams[0][0], A_ADDR, net.now)
    out = net.a.receive(response.datagrams[0][0], B_ADDR, net.now)
    assert [len(d) for d, _ in out.datagrams] == [DATAGRAM, DATAGRAM]
    assert event_types(out.events) == ["HandshakeCompleted", "QuotaReached"]
    assert net.a.counters["blocked"] == 8


def test_the_warning_mark_is_raised_once_before_the_limit() -> None:
    net = Net()
    net.handshake()
    net.b.set_usage_limit(net.b_peer, 10 * DATAGRAM, warn_remaining=2 * DATAGRAM)
    out = deliver_to_b(net, a_batch(net, 12))
    assert len(out.packets) == 10  # the warning mark stops nothing
    assert event_types(out.events) == ["QuotaReached", "QuotaReached"]  # the mark, the limit
    assert net.b.counters["blocked"] == 2


def test_unauthenticated_and_replayed_datagrams_spend_neither_usage_nor_tokens() -> None:
    net = Net()
    net.handshake()
    rate_bps = 8 * 2 * DATAGRAM  # two packets a second, after the minimum burst (64 KiB)
    net.b.set_usage_limit(net.b_peer, 2 * DATAGRAM)
    net.b.set_rates(net.b_peer, None, rate_bps, net.now)
    good = a_batch(net, 1)[0]
    forged = bytearray(good)
    forged[-1] ^= 1  # the tag fails
    before = usage(net.b_peer)
    for _ in range(1000):
        net.b.receive(bytes(forged), A_ADDR, net.now)
    assert net.b.counters["decrypt_failed"] == 1000 and usage(net.b_peer) == before
    assert len(net.b.receive(good, A_ADDR, net.now).packets) == 1
    for _ in range(1000):  # 160 kB replayed: more than the burst and the quota
        net.b.receive(good, A_ADDR, net.now)
    assert net.b.counters["replay"] == 1000 and usage(net.b_peer) == before + DATAGRAM
    assert len(net.b.receive(a_batch(net, 1)[0], A_ADDR, net.now).packets) == 1
    assert net.b.counters["blocked"] == net.b.counters["rate_limited"] == 0


def test_a_rate_from_the_peer_drops_over_it_and_refills_with_time() -> None:
    net = Net()
    net.handshake()
    rate_bps = 8_000_000  # 1 MB/s: the burst is the minimum, 64 KiB
    net.b.set_rates(net.b_peer, None, rate_bps, net.now)
    size = 1000  # the inner packet's length is what the bucket counts
    out = deliver_to_b(net, a_batch(net, 100, payload=size - 20))
    assert len(out.packets) == 65536 // size == 65
    assert net.b.counters["rate_limited"] == 35
    rx = net.b_peer.rx_bytes
    net.now += 0.01  # 10 kB refilled
    out = deliver_to_b(net, a_batch(net, 20, payload=size - 20))
    assert len(out.packets) == 10 and net.b.counters["rate_limited"] == 45
    assert net.b_peer.rx_bytes == rx + 20 * 1040  # usage counts what the rate dropped too
    # unchanged rates keep the bucket (empty now); a new rate starts a full one
    net.b.set_rates(net.b_peer, None, rate_bps, net.now)
    assert len(deliver_to_b(net, a_batch(net, 5, payload=size - 20)).packets) == 0
    net.b.set_rates(net.b_peer, None, 2 * rate_bps, net.now)
    assert len(deliver_to_b(net, a_batch(net, 5, payload=size - 20)).packets) == 5
    # keepalives are never rate-limited
    dropped = net.b.counters["rate_limited"]
    packets = net.b_peer.rx_packets
    deliver_to_b(net, a_batch(net, 200, payload=size - 20))  # empties the bucket
    assert net.b.counters["rate_limited"] > dropped
    dropped = net.b.counters["rate_limited"]
    net.a.set_persistent_keepalive(net.a_peer, 25)  # a keepalive at once
    out = Output()
    net.a.tick(net.now, out)
    assert [len(d) for d, _ in out.datagrams] == [TRANSPORT_MIN_LEN]
    assert len(deliver_to_b(net, [d for d, _ in out.datagrams]).packets) == 0
    assert net.b_peer.rx_packets == packets + 200 + 1
    assert net.b.counters["rate_limited"] == dropped


def test_a_rate_toward_the_peer_does_not_slow_another_peer() -> None:
    server = Device(crypto.clamp(bytes([9]) * 32), rng=os.urandom, wallclock=lambda: 0.0)
    clients: list[tuple[Device, Peer]] = []
    for n, tunnel in enumerate(("10.0.0.1", "10.0.0.3")):
        client = Device(crypto.clamp(bytes([n + 1]) * 32), rng=os.urandom, wallclock=lambda: 0.0)
        server_peer = server.add_peer(
            PeerConfig(
                public_key=client.public_key,
                allowed_ips=(ipaddress.ip_network(f"{tunnel}/32"),),
            )
        )
        to_server = client.add_peer(
            PeerConfig(
                public_key=server.public_key,
                allowed_ips=(ipaddress.ip_network("0.0.0.0/0"),),
                endpoint=B_ADDR,
            )
        )
        addr = ("198.51.100.9", 40000 + n)
        # handshake: initiation, response, first data (which confirms the session)
        out = client.send(to_server, ip4(tunnel, B_TUN, b"hello"), 0.0)
        reply = server.receive(out.datagrams[0][0], addr, 0.0)
        first = client.receive(reply.datagrams[0][0], B_ADDR, 0.0)
        for data, _ in first.datagrams + out.datagrams[1:]:
            server.receive(data, addr, 0.0)
        assert server_peer.current is not None
        clients.append((client, server_peer))
    (_, slow), (_, fast) = clients
    server.set_rates(slow, 8_000_000, None, 0.0)  # toward it: 1 MB/s, burst 64 KiB
    out = Output()
    for i in range(200):
        packet = ip4(B_TUN, "10.0.0.1", bytes([i]) * 980)  # 1000 bytes
        server.send(slow, packet, 0.0, out)
        server.send(fast, ip4(B_TUN, "10.0.0.3", bytes([i]) * 980), 0.0, out)
    to_slow = [d for d, a in out.datagrams if a == ("198.51.100.9", 40000)]
    to_fast = [d for d, a in out.datagrams if a == ("198.51.100.9", 40001)]
    assert (len(to_slow), len(to_fast)) == (65, 200)
    assert server.counters["rate_limited"] == 135
    out = Output()
    server.send(slow, ip4(B_TUN, "10.0.0.1", bytes(980)), 0.5, out)  # refilled
    assert len(out.datagrams) == 1
