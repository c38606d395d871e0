"""What an attacker can send: bad macs, replays, floods, garbage, spoofed inner sources."""

from __future__ import annotations

import os
import struct
import time

import pytest
from support.wg_harness import A_ADDR, A_TUN, B_ADDR, B_TUN, Net, event_types, ip4

from trivpn.proto.wireguard import Device, PeerConfig, crypto
from trivpn.proto.wireguard.cookie import HandshakeRateLimiter, LoadMonitor
from trivpn.proto.wireguard.messages import (
    MSG_COOKIE_REPLY,
    MSG_INITIATION,
    MSG_RESPONSE,
    MSG_TRANSPORT,
    pack_cookie_reply,
)
from trivpn.proto.wireguard.timers import REKEY_TIMEOUT


def _count_dh(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    real = crypto.dh

    def counting(private_key: bytes, public_key: bytes) -> bytes:
        calls[0] += 1
        return real(private_key, public_key)

    monkeypatch.setattr(crypto, "dh", counting)
    return calls


def _initiation(net: Net) -> bytes:
    net.drop = lambda w: True
    net.send("A", ip4(A_TUN, B_TUN))
    net.drop = lambda w: False
    wire = net.wires("A", MSG_INITIATION)[-1]
    return wire.data


def test_wrong_mac1_is_dropped_before_any_dh(monkeypatch: pytest.MonkeyPatch) -> None:
    net = Net()
    initiation = _initiation(net)
    calls = _count_dh(monkeypatch)
    for i in (116, 131, 0 + 8):  # a mac1 byte; a body byte covered by mac1
        bad = bytearray(initiation)
        bad[i] ^= 0x80
        out = net.inject("B", bytes(bad), A_ADDR)
        assert out.is_empty()
    assert net.counters["B"]["bad_mac1"] == 3
    assert calls[0] == 0
    # The same path with a valid mac1 does reach the DH (so the counter above could fail).
    net.inject("B", initiation, A_ADDR)
    assert calls[0] > 0


def test_response_with_wrong_mac1_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    net = Net()
    net.drop = lambda w: w.sender == "B"
    net.send("A", ip4(A_TUN, B_TUN))
    response = bytearray(net.wires("B", MSG_RESPONSE)[-1].data)
    response[70] ^= 1
    calls = _count_dh(monkeypatch)
    net.inject("A", bytes(response), ("198.51.100.1", 51820))
    assert net.counters["A"]["bad_mac1"] == 1 and calls[0] == 0


def test_initiation_from_unknown_key_is_refused() -> None:
    net = Net()
    stranger = Device(os.urandom(32), rng=os.urandom, wallclock=time.time)
    peer = stranger.add_peer(PeerConfig(public_key=net.b.public_key, endpoint=B_ADDR))
    initiation = stranger.send(peer, ip4(A_TUN, B_TUN), 0.0).datagrams[0][0]
    assert net.inject("B", initiation, ("192.0.2.50", 1234)).is_empty()
    assert net.counters["B"]["unknown_peer"] == 1  # valid mac1, but not a configured key


def test_replayed_initiation_is_ignored() -> None:
    net = Net()
    initiation = _initiation(net)
    first = net.inject("B", initiation, A_ADDR)
    assert [len(d) for d, _ in first.datagrams] == [92]
    net.now += 1.0  # well past the flood limit: this is about the timestamp
    again = net.inject("B", initiation, A_ADDR)
    assert again.is_empty() and net.counters["B"]["replayed_initiation"] == 1

    # A fresh initiation carrying an older clock is refused too.
    net.wall_offset = -60.0
    net.now += REKEY_TIMEOUT
    stale = _initiation(net)
    assert net.inject("B", stale, A_ADDR).is_empty()
    assert net.counters["B"]["replayed_initiation"] == 2


def test_initiation_flood_is_limited_per_peer() -> None:
    net = Net()
    first = _initiation(net)
    assert net.inject("B", first, A_ADDR).datagrams
    # A new, valid initiation (newer timestamp) 10 ms later: over 50 per second.
    net.a_peer.last_sent_handshake = float("-inf")
    net.wall_offset = 0.05
    net.now += 0.01
    second = _initiation(net)
    assert second != first
    assert net.inject("B", second, A_ADDR).is_empty()
    assert net.counters["B"]["handshake_flood"] == 1
    net.now += 0.02
    net.wall_offset = 0.1
    net.a_peer.last_sent_handshake = float("-inf")
    third = _initiation(net)
    assert net.inject("B", third, A_ADDR).datagrams  # 30 ms after the last accepted one


def test_cookie_reply_under_load_then_retry_with_mac2_succeeds() -> None:
    net = Net(b_under_load_rate=0)  # every handshake message counts as load
    net.send("A", ip4(A_TUN, B_TUN, b"wait for cookie"))
    assert [(w.sender, w.kind) for w in net.log] == [("A", MSG_INITIATION), ("B", MSG_COOKIE_REPLY)]
    assert len(net.log[1].data) == 64
    assert net.counters["B"]["cookie_sent"] == 1 and net.b_peer.next is None
    assert net.a_peer.cookies.has_cookie
    net.advance(REKEY_TIMEOUT + 1)
    retry = net.wires("A", MSG_INITIATION)[-1]
    assert retry.data[-16:] != bytes(16)  # mac2 is set now
    assert net.received["B"] == [ip4(A_TUN, B_TUN, b"wait for cookie")]
    assert "HandshakeCompleted" in event_types(net.events["A"])
    assert net.counters["B"]["cookie_sent"] == 1


def test_forged_cookie_reply_is_ignored() -> None:
    net = Net()
    _initiation(net)
    index = net.a_peer.handshake.local_index
    forged = pack_cookie_reply(index, os.urandom(24), os.urandom(32))
    assert net.inject("A", forged, ("198.51.100.1", 51820)).is_empty()
    assert net.counters["A"]["invalid_cookie_reply"] == 1
    assert not net.a_peer.cookies.has_cookie
    unknown = pack_cookie_reply(index ^ 1, os.urandom(24), os.urandom(32))
    net.inject("A", unknown, ("198.51.100.1", 51820))
    assert net.counters["A"]["unknown_index"] == 1


def test_load_monitor_rate_and_hold() -> None:
    load = LoadMonitor(rate=2)
    assert [load.record(10.0), load.record(10.1), load.record(10.2)] == [False, False, True]
    assert load.under_load(11.1) and not load.under_load(11.3)
    assert not load.record(11.3)  # a new bucket, under the rate again
    with pytest.raises(ValueError):
        LoadMonitor(rate=-1)


def test_handshake_ratelimiter_per_ip() -> None:
    limiter = HandshakeRateLimiter(per_second=20, burst=5)
    assert [limiter.allow("192.0.2.1", 0.0) for _ in range(6)] == [True] * 5 + [False]
    assert limiter.allow("192.0.2.2", 0.0)  # another source has its own bucket
    assert limiter.allow("192.0.2.1", 0.05)  # one token back after 1/20 s
    limiter.allow("192.0.2.9", 10.0)  # triggers a cleanup of idle buckets
    assert len(limiter) == 1


def test_replayed_and_too_old_transport_is_dropped() -> None:
    net = Net()
    net.handshake()
    datagrams = [
        net.a.send(net.a_peer, ip4(A_TUN, B_TUN, bytes([i])), net.now).datagrams[0][0]
        for i in range(3)
    ]
    assert net.inject("B", datagrams[2], A_ADDR).packets
    assert net.inject("B", datagrams[0], A_ADDR).packets  # reordered within the window: fine
    assert net.inject("B", datagrams[2], A_ADDR).is_empty()
    assert net.counters["B"]["replay"] == 1
    kp = net.a_peer.current
    assert kp is not None
    kp.send_counter = 20_000
    net.send("A", ip4(A_TUN, B_TUN))
    assert net.inject("B", datagrams[1], A_ADDR).is_empty()  # now far below the window
    assert net.counters["B"]["replay"] == 2


MALFORMED = [
    (b"", "malformed_too_short"),
    (b"\x01\x00\x00", "malformed_too_short"),
    (struct.pack("<I", 1) + bytes(143), "malformed_initiation_length"),
    (struct.pack("<I", 1) + bytes(145), "malformed_initiation_length"),
    (struct.pack("<I", 2) + bytes(87), "malformed_response_length"),
    (struct.pack("<I", 2) + bytes(89), "malformed_response_length"),
    (struct.pack("<I", 3) + bytes(59), "malformed_cookie_reply_length"),
    (struct.pack("<I", 3) + bytes(61), "malformed_cookie_reply_length"),
    (struct.pack("<I", 4) + bytes(27), "malformed_transport_length"),
    (struct.pack("<I", 0) + bytes(60), "malformed_unknown_type"),
    (struct.pack("<I", 5) + bytes(60), "malformed_unknown_type"),
    (b"\x01\x00\x01\x00" + bytes(144), "malformed_unknown_type"),  # reserved bytes not zero
    (b"\x04\x01\x00\x00" + bytes(60), "malformed_unknown_type"),
    (b"E\x00\x00\x1c" + bytes(24), "malformed_unknown_type"),  # a bare IPv4 packet
]


@pytest.mark.parametrize(("datagram", "reason"), MALFORMED)
def test_malformed_datagrams_are_dropped_and_counted(datagram: bytes, reason: str) -> None:
    net = Net()
    net.handshake()
    before = dict(net.counters["B"])
    out = net.inject("B", datagram, A_ADDR)
    assert out.is_empty()
    assert net.counters["B"][reason] == before.get(reason, 0) + 1
    assert net.counters["B"]["malformed"] == before.get("malformed", 0) + 1


def test_well_sized_garbage_of_each_type_is_dropped_and_counted() -> None:
    net = Net()
    net.handshake()
    for kind, size in ((1, 148), (2, 92), (3, 64), (4, 32), (4, 1500)):
        garbage = struct.pack("<I", kind) + os.urandom(size - 4)
        assert net.inject("B", garbage, A_ADDR).is_empty()
    counters = net.counters["B"]
    assert counters["bad_mac1"] == 2  # initiation and response fail mac1 first
    assert counters["unknown_index"] == 3  # cookie reply, two transports
    assert net.b_peer.endpoint == A_ADDR


def test_transport_with_valid_index_but_bad_tag_is_dropped() -> None:
    net = Net()
    net.handshake()
    good = net.a.send(net.a_peer, ip4(A_TUN, B_TUN), net.now).datagrams[0][0]
    bad = good[:20] + bytes([good[20] ^ 1]) + good[21:]
    assert net.inject("B", bad, A_ADDR).is_empty()
    assert net.counters["B"]["decrypt_failed"] == 1
    assert net.inject("B", good, A_ADDR).packets  # the counter was not burnt by the forgery


def test_spoofed_inner_source_is_dropped() -> None:
    net = Net()
    net.handshake()
    net.send("A", ip4("10.0.0.99", B_TUN, b"spoof"))
    assert net.counters["B"]["spoofed_source"] == 1
    assert ip4("10.0.0.99", B_TUN, b"spoof") not in net.received["B"]
    # B's allowed source for A is 10.0.0.1 only: A may not claim B's address either.
    net.send("A", ip4(B_TUN, B_TUN))
    assert net.counters["B"]["spoofed_source"] == 2


@pytest.mark.parametrize(
    "inner",
    [
        b"\x50" + bytes(30),  # IP version 5
        b"\x45" + bytes(10),  # shorter than an IPv4 header
        b"\x45\x00\x10\x00" + bytes(16),  # IPv4 total length beyond the payload
        b"\x60" + bytes(20),  # shorter than an IPv6 header
        b"\x60\x00\x00\x00\x04\x00" + bytes(34),  # IPv6 payload length beyond the payload
    ],
)
def test_malformed_inner_packet_is_dropped(inner: bytes) -> None:
    net = Net()
    net.handshake()
    net.send("A", inner)
    assert net.counters["B"]["malformed_inner"] == 1
    assert len(net.received["B"]) == 1  # only the handshake's packet
    assert net.log[-1].kind == MSG_TRANSPORT
