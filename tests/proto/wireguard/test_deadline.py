"""Device.next_deadline: cheap with many peers, never later than the earliest timer."""

from __future__ import annotations

import ipaddress
import os
import time

from hypothesis import given, settings
from hypothesis import strategies as st
from support.wg_harness import A_TUN, B_TUN, Net, ip4

from trivpn.proto.wireguard import Device, Peer, PeerConfig, keys


def true_min(device: Device) -> float | None:
    deadlines = [d for p in device.peers.values() if (d := p.next_deadline()) is not None]
    return min(deadlines) if deadlines else None


def not_later(hint: float | None, exact: float | None) -> bool:
    return exact is None or (hint is not None and hint <= exact)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["a_send", "b_send", "advance", "tick"]), max_size=30))
def test_hint_never_later_than_the_earliest_timer(steps: list[str]) -> None:
    net = Net()
    for step in steps:
        if step == "a_send":
            net.send("A", ip4(A_TUN, B_TUN))
        elif step == "b_send":
            net.send("B", ip4(B_TUN, A_TUN))
        elif step == "advance":
            net.advance(net.now + 7.0)
        else:
            net.now += 1.0
            net.a.tick(net.now)
            assert net.a.next_deadline() == true_min(net.a)  # exact right after a tick
        for device in (net.a, net.b):
            assert not_later(device.next_deadline(), true_min(device))


def test_next_deadline_looks_only_at_peers_touched_since(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    device = Device(keys.parse_key(keys.genkey(os.urandom)), rng=os.urandom, wallclock=time.time)
    peers = [
        device.add_peer(
            PeerConfig(
                public_key=keys.parse_key(keys.pubkey(keys.genkey(os.urandom))),
                allowed_ips=(ipaddress.ip_network(f"10.9.{i // 250}.{i % 250 + 1}/32"),),
                endpoint=("198.51.100.9", 51820),
                name=f"p{i}",
            )
        )
        for i in range(300)
    ]
    device.tick(0.0)
    calls: list[Peer] = []
    original = Peer.next_deadline

    def counting(self: Peer) -> float | None:
        calls.append(self)
        return original(self)

    monkeypatch.setattr(Peer, "next_deadline", counting)
    device.send(peers[7], ip4("10.9.0.1", "10.9.0.8"), 1.0)  # starts a handshake: a timer
    deadline = device.next_deadline()
    assert calls == [peers[7]]
    assert deadline is not None and deadline <= 1.0 + 5.0 + 0.334  # the retry (with jitter)
    calls.clear()
    assert device.next_deadline() == deadline and calls == []  # nothing touched since
