"""Device.set_private_key: the server's static key changes at runtime (`wg set … private-key`).

``A`` is the client, ``B`` the server whose key changes (wg_harness.Net). Time is explicit.
"""

from __future__ import annotations

import ipaddress
import random

from support.wg_harness import A_TUN, B_ADDR, B_TUN, Net, ip4

from trivpn.proto.wireguard import PeerConfig, crypto
from trivpn.proto.wireguard.messages import MSG_INITIATION, MSG_TRANSPORT
from trivpn.proto.wireguard.timers import KEEPALIVE_TIMEOUT, REKEY_TIMEOUT

NEW_KEY = random.Random(99).randbytes(32)


def connected() -> Net:
    net = Net()
    net.handshake()
    net.send("B", ip4(B_TUN, A_TUN, b"pong"))
    assert net.received["A"] == [ip4(B_TUN, A_TUN, b"pong")]
    return net


def a_learns_new_server_key(net: Net, *, keepalive: int | None = None) -> None:
    """On the client: `wg set … peer <old> remove; wg set … peer <new> endpoint … allowed-ips …`."""
    net.a.remove_peer(net.a_peer.public_key)
    net.a_peer = net.a.add_peer(
        PeerConfig(
            public_key=net.b.public_key,
            allowed_ips=(ipaddress.ip_network(f"{B_TUN}/32"),),
            endpoint=B_ADDR,
            persistent_keepalive=keepalive,
            name="B",
        )
    )


def test_a_client_with_the_new_public_key_handshakes_and_exchanges_data() -> None:
    net = connected()
    old_public = net.b.public_key
    old_session = net.b_peer.current
    assert old_session is not None

    net.now += 1
    assert net.b.set_private_key(NEW_KEY) is True
    assert net.b.public_key == crypto.public_key(crypto.clamp(NEW_KEY)) != old_public
    assert net.b.identity.private_key == crypto.clamp(NEW_KEY)
    # every session and handshake of the peer ended, keys erased, indices released
    assert net.b_peer.keypairs == (None, None, None)
    assert old_session.send_key.is_wiped() and old_session.receive_key.is_wiped()
    assert len(net.b._index) == 0
    assert net.b.peers[net.a.public_key] is net.b_peer  # the peer itself stays

    a_learns_new_server_key(net)
    net.send("A", ip4(A_TUN, B_TUN, b"again"))
    assert net.received["B"][-1] == ip4(A_TUN, B_TUN, b"again")
    net.send("B", ip4(B_TUN, A_TUN, b"back"))
    assert net.received["A"][-1] == ip4(B_TUN, A_TUN, b"back")
    assert net.b_peer.handshakes == 2
    assert not net.counters["B"]


def test_a_client_with_the_old_key_gets_no_answer_and_old_sessions_do_not_decrypt() -> None:
    net = connected()
    # A datagram of the old session, held back to arrive after the change.
    net.drop = lambda wire: wire.sender == "A"
    net.send("A", ip4(A_TUN, B_TUN, b"late"))
    late = net.log[-1]
    assert late.kind == MSG_TRANSPORT
    net.drop = lambda wire: False
    received = len(net.received["B"])

    net.now += 1
    changed_at = net.now
    net.b.set_private_key(NEW_KEY)
    out = net.inject("B", late.data, net.a_addr)
    assert out.is_empty() and net.counters["B"]["unknown_index"] == 1

    # A keeps sending on its old session, then re-handshakes with the old server key.
    net.send("A", ip4(A_TUN, B_TUN, b"lost"))
    net.advance(net.now + KEEPALIVE_TIMEOUT + 3 * REKEY_TIMEOUT + 1)
    assert net.wires("A", MSG_INITIATION, since=changed_at)  # A did try
    assert net.counters["B"]["bad_mac1"] >= 1  # mac1 of the old public key
    # never an answer: B's only datagrams are its own initiations (its timer for the data it
    # sent before), which A, knowing only the old key, refuses in turn
    assert {w.kind for w in net.wires("B", since=changed_at)} == {MSG_INITIATION}
    assert net.counters["A"]["unknown_peer"] >= 1
    assert len(net.received["B"]) == received


def test_the_same_key_is_a_no_op() -> None:
    net = connected()
    session = net.b_peer.current
    private = net.b.identity.private_key
    unclamped = bytes([private[0] | 7]) + private[1:31] + bytes([private[31] | 128])
    for key in (private, unclamped):
        assert net.b.set_private_key(key) is False
    assert net.b_peer.current is session and session is not None
    net.send("A", ip4(A_TUN, B_TUN, b"still"))
    assert net.received["B"][-1] == ip4(A_TUN, B_TUN, b"still")
    assert net.b_peer.handshakes == 1


def test_a_peer_with_the_new_own_key_is_removed() -> None:
    net = connected()
    own = net.b.identity.private_key
    # B takes A's key pair: A is now B's own public key (wireguard-go removes such a peer).
    a_private = net.a.identity.private_key
    assert net.b.set_private_key(a_private) is True
    assert net.a.public_key not in net.b.peers and net.b_peer.removed
    assert net.b.public_key == net.a.public_key
    assert net.b.set_private_key(own) is True and not net.b.peers


def test_queued_traffic_reconnects_at_once_with_the_new_key() -> None:
    net = connected()
    net.now += 1
    net.b.set_private_key(NEW_KEY)
    a_learns_new_server_key(net)  # A knows the new key but has no endpoint-side session yet
    # B has a packet for A: no session, so it queues it and initiates now (no REKEY_TIMEOUT).
    net.send("B", ip4(B_TUN, A_TUN, b"queued"))
    assert net.received["A"][-1] == ip4(B_TUN, A_TUN, b"queued")
    assert net.b_peer.current is not None and net.b_peer.current.is_initiator


def test_a_persistent_keepalive_reconnects_with_the_new_key() -> None:
    net = connected()
    net.b.set_persistent_keepalive(net.b_peer, 25)
    net.advance(net.now + 1)  # the first keepalive goes at once
    net.now += 1
    changed_at = net.now
    net.b.set_private_key(NEW_KEY)
    a_learns_new_server_key(net)
    net.advance(net.now + 26)  # the next keepalive finds no session: a handshake first
    assert [w.kind for w in net.wires("B", since=changed_at)][:1] == [MSG_INITIATION]
    assert net.b_peer.current is not None and net.a_peer.current is not None
    assert net.b_peer.handshakes == 2


def test_the_mac1_key_follows_the_new_public_key() -> None:
    net = connected()
    net.now += 1
    net.b.set_private_key(NEW_KEY)
    # An initiation made for the new key passes mac1 (and finds no peer: a stranger's key).
    stranger = Net(seed=7)
    stranger.a.remove_peer(stranger.a_peer.public_key)
    peer = stranger.a.add_peer(PeerConfig(public_key=net.b.public_key, endpoint=B_ADDR))
    out = stranger.a.send(peer, ip4(A_TUN, B_TUN), net.now)
    (initiation, _), *_ = out.datagrams
    net.inject("B", initiation, ("192.0.2.50", 1))
    assert net.counters["B"]["bad_mac1"] == 0 and net.counters["B"]["unknown_peer"] == 1
