"""Sessions between two in-memory devices: handshake, data, rotation, timers, roaming."""

from __future__ import annotations

import itertools

import pytest
from support.wg_harness import A_ADDR, A_TUN, A_TUN6, B_TUN, Net, Wire, event_types, ip4, ip6

from trivpn.proto.wireguard import EndpointChanged, HandshakeCompleted, Output, PeerConfig
from trivpn.proto.wireguard.messages import (
    MSG_COOKIE_REPLY,
    MSG_INITIATION,
    MSG_RESPONSE,
    MSG_TRANSPORT,
)
from trivpn.proto.wireguard.peer import IndexEntry, IndexTable
from trivpn.proto.wireguard.timers import (
    KEEPALIVE_TIMEOUT,
    REJECT_AFTER_MESSAGES,
    REJECT_AFTER_TIME,
    REKEY_AFTER_MESSAGES,
    REKEY_AFTER_TIME,
    REKEY_TIMEOUT,
    ZERO_KEYS_AFTER,
)

JITTER_MAX = 0.334


def test_handshake_then_data_both_ways() -> None:
    net = Net()
    packet = ip4(A_TUN, B_TUN, b"hello")
    net.send("A", packet)
    kinds = [(w.sender, w.kind, len(w.data)) for w in net.log]
    # initiation, response, then A's queued packet (padded to 16: 25 -> 32, +16 header +16 tag)
    assert kinds == [("A", MSG_INITIATION, 148), ("B", MSG_RESPONSE, 92), ("A", MSG_TRANSPORT, 64)]
    assert net.received["B"] == [packet]
    assert event_types(net.events["A"]) == ["HandshakeCompleted"]
    assert event_types(net.events["B"]) == ["EndpointChanged", "HandshakeCompleted"]
    b_done = net.events["B"][1]
    assert isinstance(b_done, HandshakeCompleted) and b_done.initiator is False

    reply = ip4(B_TUN, A_TUN, b"x" * 1000)
    net.send("B", reply)
    assert net.received["A"] == [reply]
    v6 = ip6(A_TUN6, "fd00::2", b"six")
    net.send("A", v6)
    assert net.received["B"][-1] == v6
    assert not net.counters["A"] and not net.counters["B"]
    assert net.a_peer.last_handshake_time is not None and net.a_peer.rx_bytes > 0


def test_preshared_key_must_match() -> None:
    net = Net(a_psk=b"\x01" * 32, b_psk=b"\x02" * 32)
    net.send("A", ip4(A_TUN, B_TUN))
    assert net.counters["A"]["invalid_response"] == 1
    assert net.received["B"] == []

    good = Net(a_psk=b"\x07" * 32, b_psk=b"\x07" * 32)
    good.handshake()


def test_padding_respects_mtu() -> None:
    net = Net(mtu=1420)
    net.handshake()
    net.send("A", ip4(A_TUN, B_TUN, b"z" * (1415 - 20)))
    assert len(net.log[-1].data) == 16 + 1420 + 16  # padded to the MTU, not to 1424
    net.send("A", ip4(A_TUN, B_TUN, b"z" * (1400 - 20)))
    assert len(net.log[-1].data) == 16 + 1408 + 16
    assert net.received["B"][-1] == ip4(A_TUN, B_TUN, b"z" * 1380)  # padding stripped


def test_responder_uses_new_session_only_after_initiator_confirms_it() -> None:
    net = Net()
    net.drop = lambda w: w.sender == "A" and w.kind == MSG_TRANSPORT
    net.send("A", ip4(A_TUN, B_TUN))
    assert net.b_peer.next is not None and net.b_peer.current is None
    # B has a packet for A but may not use an unconfirmed session: it waits.
    net.send("B", ip4(B_TUN, A_TUN, b"early"))
    assert net.wires("B", MSG_TRANSPORT) == [] and list(net.b_peer.staged)
    net.drop = lambda w: False
    net.send("A", ip4(A_TUN, B_TUN, b"confirm"))
    assert net.b_peer.current is not None and net.b_peer.next is None
    assert net.received["A"] == [ip4(B_TUN, A_TUN, b"early")]


def test_initiator_rekeys_after_rekey_after_time_and_old_session_drains() -> None:
    net = Net()
    net.handshake()
    first = net.a_peer.current
    assert first is not None
    net.advance(REKEY_AFTER_TIME - 1)
    net.send("A", ip4(A_TUN, B_TUN, b"still old"))
    assert net.a_peer.current is first and not net.wires("A", MSG_INITIATION, since=1)

    # A datagram encrypted with the old session, delivered after the rotation below.
    late = net.a.send(net.a_peer, ip4(A_TUN, B_TUN, b"late"), net.now)
    b_old = net.b_peer.current
    net.now = REKEY_AFTER_TIME + 1
    net.send("A", ip4(A_TUN, B_TUN, b"rekey"))
    assert len(net.wires("A", MSG_INITIATION)) == 2
    assert net.a_peer.current is not first and net.a_peer.previous is first
    # A's keepalive on the new session confirmed it to B.
    assert net.b_peer.previous is b_old and net.b_peer.current is not b_old
    net.send("A", ip4(A_TUN, B_TUN, b"new session"))
    assert net.received["B"][-1] == ip4(A_TUN, B_TUN, b"new session")
    out = net.inject("B", late.datagrams[-1][0], A_ADDR)
    assert out.packets == [ip4(A_TUN, B_TUN, b"late")]  # previous session still accepted


def test_responder_does_not_rekey_on_time() -> None:
    net = Net()
    net.handshake()
    net.now = REKEY_AFTER_TIME + 5
    net.send("B", ip4(B_TUN, A_TUN))
    assert net.wires("B", MSG_INITIATION) == []
    assert net.received["A"] == [ip4(B_TUN, A_TUN)]


def test_initiator_rekeys_when_receiving_near_reject_after_time() -> None:
    net = Net()
    net.handshake()
    net.now = REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT + 1
    net.send("B", ip4(B_TUN, A_TUN))
    assert len(net.wires("A", MSG_INITIATION)) == 2
    assert net.a_peer.current is not None and net.a_peer.current.created == net.now


def test_rekey_after_messages_and_reject_after_messages() -> None:
    net = Net()
    net.handshake()
    kp = net.a_peer.current
    assert kp is not None
    kp.send_counter = REKEY_AFTER_MESSAGES + 1
    net.now = REKEY_TIMEOUT  # past the handshake rate limit
    net.drop = lambda w: True
    net.send("A", ip4(A_TUN, B_TUN))
    assert [w.kind for w in net.log[-2:]] == [MSG_TRANSPORT, MSG_INITIATION]

    net2 = Net()
    net2.handshake()
    kp2 = net2.a_peer.current
    assert kp2 is not None
    kp2.send_counter = REJECT_AFTER_MESSAGES
    net2.now = REKEY_TIMEOUT  # past the handshake rate limit
    net2.drop = lambda w: True
    net2.send("A", ip4(A_TUN, B_TUN))
    assert net2.log[-1].kind == MSG_INITIATION  # nothing encrypted with an exhausted key
    assert list(net2.a_peer.staged) == [ip4(A_TUN, B_TUN)]


def test_handshake_retries_every_rekey_timeout_then_gives_up() -> None:
    net = Net()
    net.drop = lambda w: True  # B never hears anything
    net.send("A", ip4(A_TUN, B_TUN))
    net.advance(300)
    times = [w.time for w in net.wires("A", MSG_INITIATION)]
    assert len(times) == 20  # the first + 19 retries, like the Linux module and wireguard-go
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(REKEY_TIMEOUT <= g < REKEY_TIMEOUT + JITTER_MAX for g in gaps), gaps
    assert len({round(g, 6) for g in gaps}) > 1  # jittered
    assert event_types(net.events["A"]) == ["HandshakeFailed"]
    failed_at = [w.time for w in net.log][-1]
    assert times[-1] < failed_at + 1e-9
    assert net.counters["A"]["staged_dropped"] == 1 and not net.a_peer.staged
    assert times[-1] - times[0] >= 90  # REKEY_ATTEMPT_TIME


def test_session_rejected_after_reject_after_time() -> None:
    net = Net()
    net.handshake()
    held = net.a.send(net.a_peer, ip4(A_TUN, B_TUN, b"held"), net.now).datagrams[0][0]
    net.now = REJECT_AFTER_TIME + 0.5
    out = net.inject("B", held, A_ADDR)
    assert out.packets == [] and net.counters["B"]["expired_keypair"] == 1
    # A does not send on the expired session either: it starts a handshake.
    net.drop = lambda w: True
    net.send("A", ip4(A_TUN, B_TUN))
    assert net.log[-1].kind == MSG_INITIATION


def test_keepalive_after_keepalive_timeout_when_nothing_to_send() -> None:
    net = Net()
    net.handshake()
    t0 = net.now
    net.advance(t0 + KEEPALIVE_TIMEOUT + 1)
    keepalives = [w for w in net.wires("B", MSG_TRANSPORT) if len(w.data) == 32]
    assert [w.time for w in keepalives] == [t0 + KEEPALIVE_TIMEOUT]
    assert net.received["A"] == []  # a keepalive carries no packet


def test_no_keepalive_when_data_went_back() -> None:
    net = Net()
    net.handshake()
    net.now = 2.0
    net.send("B", ip4(B_TUN, A_TUN))
    net.advance(30)
    assert [len(w.data) for w in net.wires("B")] == [92, 64]  # response, data: no keepalive


def test_new_handshake_when_data_gets_no_answer() -> None:
    net = Net()
    net.handshake()
    net.advance(KEEPALIVE_TIMEOUT + 1)  # B's keepalive answered A's first packet
    assert net.a_peer.timers.new_handshake is None
    net.drop = lambda w: w.sender == "B"
    net.send("A", ip4(A_TUN, B_TUN))
    sent_at = net.now
    net.advance(sent_at + 30)
    initiations = net.wires("A", MSG_INITIATION, since=sent_at)
    assert initiations, "A should try a new handshake"
    delay = initiations[0].time - sent_at
    assert (
        KEEPALIVE_TIMEOUT + REKEY_TIMEOUT <= delay < KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + JITTER_MAX
    )


def test_persistent_keepalive() -> None:
    net = Net(a_keepalive=25)
    net.advance(0)  # the first tick sends a keepalive, which needs a handshake first
    assert [w.kind for w in net.log] == [MSG_INITIATION, MSG_RESPONSE, MSG_TRANSPORT]
    net.advance(100)
    keepalives = [w.time for w in net.wires("A", MSG_TRANSPORT) if len(w.data) == 32]
    assert keepalives == [0.0, 25.0, 50.0, 75.0, 100.0]
    assert net.wires("B", MSG_TRANSPORT) == []  # keepalives need no answer


def test_roaming_endpoint_follows_authenticated_packets() -> None:
    net = Net()
    net.handshake()
    assert net.b_peer.endpoint == A_ADDR
    # Unauthenticated data from elsewhere does not move the endpoint.
    forged = bytearray(net.a.send(net.a_peer, ip4(A_TUN, B_TUN), net.now).datagrams[0][0])
    forged[-1] ^= 1
    net.inject("B", bytes(forged), ("192.0.2.66", 6666))
    assert net.b_peer.endpoint == A_ADDR and net.counters["B"]["decrypt_failed"] == 1

    net.a_addr = ("203.0.113.7", 5555)
    net.send("A", ip4(A_TUN, B_TUN, b"moved"))
    assert net.b_peer.endpoint == ("203.0.113.7", 5555)
    moved = [e for e in net.events["B"] if isinstance(e, EndpointChanged)][-1]
    assert (moved.old, moved.new) == (A_ADDR, ("203.0.113.7", 5555))
    net.send("B", ip4(B_TUN, A_TUN, b"to new place"))  # the harness asserts the address
    assert net.received["A"][-1] == ip4(B_TUN, A_TUN, b"to new place")


def test_keys_zeroed_after_three_times_reject_after_time() -> None:
    net = Net()
    net.handshake()
    a_kp, b_kp = net.a_peer.current, net.b_peer.current
    assert a_kp is not None and b_kp is not None
    held = net.a.send(net.a_peer, ip4(A_TUN, B_TUN), net.now).datagrams[0][0]
    net.advance(ZERO_KEYS_AFTER - 1)
    assert not a_kp.send_key.is_wiped()
    net.advance(ZERO_KEYS_AFTER + 1)
    for kp in (a_kp, b_kp):
        assert kp.send_key.is_wiped() and kp.receive_key.is_wiped()
    assert net.a_peer.keypairs == (None, None, None) == net.b_peer.keypairs
    assert "SessionExpired" in event_types(net.events["A"])
    assert "SessionExpired" in event_types(net.events["B"])
    assert len(net.a._index) == 0 and len(net.b._index) == 0
    net.inject("B", held, A_ADDR)
    assert net.counters["B"]["unknown_index"] == 1


def test_remove_and_re_add_peer_at_runtime() -> None:
    net = Net()
    net.handshake()
    held = net.a.send(net.a_peer, ip4(A_TUN, B_TUN), net.now).datagrams[0][0]
    kp = net.b_peer.current
    assert kp is not None
    config = net.b_peer.config
    net.b.remove_peer(net.a.public_key)
    assert kp.receive_key.is_wiped() and len(net.b._index) == 0
    assert net.b.send(net.b_peer, ip4(B_TUN, A_TUN), net.now).is_empty()
    net.inject("B", held, A_ADDR)
    assert net.counters["B"]["unknown_index"] == 1
    with pytest.raises(KeyError):
        net.b.remove_peer(net.a.public_key)

    net.b_peer = net.b.add_peer(config)
    net.now = REKEY_TIMEOUT + 1
    net.a_peer.zero_key_material()
    net.send("A", ip4(A_TUN, B_TUN, b"again"))
    assert net.received["B"][-1] == ip4(A_TUN, B_TUN, b"again")


def test_add_peer_rejects_duplicates_and_own_key() -> None:
    net = Net()
    with pytest.raises(ValueError, match="already exists"):
        net.b.add_peer(PeerConfig(public_key=net.a.public_key))
    with pytest.raises(ValueError, match="own public key"):
        net.b.add_peer(PeerConfig(public_key=net.b.public_key))
    with pytest.raises(ValueError, match="32 bytes"):
        PeerConfig(public_key=b"short")
    with pytest.raises(ValueError, match="low-order"):
        net.b.add_peer(PeerConfig(public_key=bytes(32)))
    assert (
        PeerConfig(public_key=bytes(range(32)), persistent_keepalive=0).persistent_keepalive is None
    )
    assert "preshared" not in repr(PeerConfig(public_key=bytes(32), preshared_key=b"s" * 32))


def test_output_can_be_shared_across_calls() -> None:
    net = Net()
    net.handshake()
    out = Output()
    for i in range(3):
        net.a.send(net.a_peer, ip4(A_TUN, B_TUN, bytes([i])), net.now, out)
    assert len(out.datagrams) == 3
    batch = Output()
    for data, _ in out.datagrams:
        net.b.receive(data, A_ADDR, net.now, batch)
    assert batch.packets == [ip4(A_TUN, B_TUN, bytes([i])) for i in range(3)]
    batch.clear()
    assert batch.is_empty()


def test_cookie_reply_is_not_sent_when_not_under_load() -> None:
    net = Net()
    net.handshake()
    assert net.wires("B", MSG_COOKIE_REPLY) == []
    assert isinstance(net.log[0], Wire) and net.log[0].data[-16:] == bytes(16)  # no mac2


def test_index_table_never_hands_out_zero_or_a_used_index() -> None:
    net = Net()
    values = iter([bytes(4), b"\x05\x00\x00\x00", b"\x05\x00\x00\x00", b"\x06\x00\x00\x00"])
    table = IndexTable(lambda n: next(values))
    assert table.new_index(net.a_peer) == 5  # 0 skipped
    assert table.new_index(net.a_peer) == 6  # 5 is taken
    assert table.entries[5] == IndexEntry(peer=net.a_peer, keypair=None)  # handshaking
    stuck = IndexTable(lambda n: b"\x05\x00\x00\x00")
    stuck.new_index(net.a_peer)
    with pytest.raises(RuntimeError, match="used indices"):
        stuck.new_index(net.a_peer)


def test_an_index_names_its_peer_and_keypair() -> None:
    net = Net()
    net.handshake()
    entries = net.b._index.entries
    (entry,) = [e for e in entries.values() if e.keypair is not None]
    assert entry.peer is net.b_peer and entry.keypair is net.b_peer.current
