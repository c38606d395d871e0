"""Per-peer counters the status and metrics report: packets each way, handshakes."""

from support.wg_harness import A_TUN, B_TUN, Net, ip4

from trivpn.proto.wireguard.timers import REKEY_AFTER_TIME


def test_packets_and_handshakes_are_counted_per_peer() -> None:
    net = Net()
    net.handshake()  # one data packet A -> B completes the session
    for _ in range(3):
        net.send("B", ip4(B_TUN, A_TUN))
    assert (net.b_peer.rx_packets, net.b_peer.tx_packets) == (1, 3)
    assert (net.a_peer.rx_packets, net.a_peer.tx_packets) == (3, 1)
    assert net.a_peer.handshakes == net.b_peer.handshakes == 1
    net.advance(REKEY_AFTER_TIME + 1)
    net.send("A", ip4(A_TUN, B_TUN))  # the initiator rekeys on sending after REKEY_AFTER_TIME
    net.send("A", ip4(A_TUN, B_TUN))
    assert net.a_peer.handshakes == 2
    assert net.b_peer.rx_packets >= 3
