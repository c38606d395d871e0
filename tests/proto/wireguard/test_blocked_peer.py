"""Device.set_blocked: a blocked peer's sessions end (keys erased), its initiations get no
answer, nothing is initiated toward it (not even by its keepalive), packets to it are dropped;
each counted as "blocked". Unblocked, the next handshake works; with a keepalive it starts at
once."""

from __future__ import annotations

from support.wg_harness import A_TUN, B_TUN, Net, ip4

from trivpn.proto.wireguard import messages


def test_blocked_both_ways_and_back() -> None:
    net = Net(a_keepalive=25)  # A initiates toward B by its keepalive; B is the "server"
    net.handshake()
    assert net.b.set_blocked(net.b_peer, True)
    assert not net.b.set_blocked(net.b_peer, True)  # already
    assert net.b_peer.keypairs == (None, None, None)
    assert net.b.next_deadline() is None  # no timer of the blocked peer

    sent = len(net.wires("B"))
    net.send("B", ip4(B_TUN, A_TUN, b"to a"))  # from B's TUN: dropped
    assert net.counters["B"]["blocked"] == 1 and net.received["A"] == []
    net.advance(120.0)  # A's retries reach B; B answers none
    assert net.counters["B"]["blocked"] > 1
    assert len(net.wires("A", messages.MSG_INITIATION)) > 1
    assert net.wires("B", since=0.0)[sent:] == []  # B sent nothing at all

    assert net.b.set_blocked(net.b_peer, False)
    handshakes = net.b_peer.handshakes
    net.send("A", ip4(A_TUN, B_TUN, b"lost"))  # on A's old session: unanswered
    net.advance(net.now + 20.0)  # A's new-handshake timer: 15 s without an answer
    assert net.b_peer.handshakes == handshakes + 1
    net.send("A", ip4(A_TUN, B_TUN, b"again"))
    assert net.received["B"][-1] == ip4(A_TUN, B_TUN, b"again")


def test_unblocking_a_peer_with_a_keepalive_initiates_at_once() -> None:
    net = Net(a_keepalive=25)
    net.handshake()
    assert net.a.set_blocked(net.a_peer, True)  # A is the side with the keepalive now
    net.advance(net.now + 100.0)
    assert net.wires("A", messages.MSG_INITIATION, since=net.now - 99.0) == []
    net.a.set_blocked(net.a_peer, False)
    net.advance(net.now)
    assert len(net.wires("A", messages.MSG_INITIATION, since=net.now)) == 1
