"""The real front's timer loop under MockClock(autojump_threshold=0): what the device's
timers send leaves at the virtual time they are due, and a change that moves the next
deadline earlier wakes the sleeping loop."""

from __future__ import annotations

import ipaddress

import pytest
import trio
import trio.testing
from support.fakes import (
    CLIENT_ADDR,
    FakeClient,
    Sent,
    fake_udp,
    make_front,
    until,
    virtual_wallclock,
)
from support.wg_harness import A_TUN, B_TUN, ip4

from trivpn.config import Endpoint, WireGuardPeerConfig
from trivpn.proto import uapi
from trivpn.proto.wireguard import crypto
from trivpn.proto.wireguard.messages import INITIATION_LEN, RESPONSE_LEN
from trivpn.proto.wireguard.timers import REKEY_AFTER_TIME, REKEY_TIMEOUT

CLIENT_PRIVATE = crypto.clamp(bytes([2]) * 32)
CLIENT = crypto.public_key(CLIENT_PRIVATE)
KEEPALIVE_LEN = 32  # a transport message with no payload


def site(keepalive: int | None = 25) -> WireGuardPeerConfig:
    """A peer the server dials (an endpoint, a persistent keepalive): a site gateway."""
    return WireGuardPeerConfig(
        name="site",
        public_key=CLIENT,
        allowed_ips=(ipaddress.ip_network(f"{A_TUN}/32"),),
        endpoint=Endpoint(*CLIENT_ADDR),
        persistent_keepalive=keepalive,
    )


def sizes(sent: list[Sent]) -> list[int]:
    return [len(d) for s in sent for d in s.datagrams]


async def test_handshake_retries_leave_at_the_deadlines_the_device_set(
    autojump_clock: trio.testing.MockClock,
) -> None:
    front = make_front(site(), wallclock=virtual_wallclock)
    udp = fake_udp(front)
    peer = front.device.peers[CLIENT]
    retry_at: list[float | None] = []  # the retry deadline as each initiation left
    udp.on_send = lambda sent: retry_at.append(peer.timers.retransmit_handshake)
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(front.timer_loop)
        await until(lambda: len(udp.sent) == 3, bound=3 * REKEY_TIMEOUT + 1)  # no answer
        nursery.cancel_scope.cancel()
    assert sizes(udp.sent) == [INITIATION_LEN] * 3
    first, second, third = (s.at for s in udp.sent)
    assert first == start  # the keepalive of a new peer is due at once, and so a handshake
    assert second == retry_at[0] and third == retry_at[1]
    assert second is not None and start + REKEY_TIMEOUT <= second < start + REKEY_TIMEOUT + 0.334


async def test_a_peer_added_while_the_loop_sleeps_wakes_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    front = make_front(wallclock=virtual_wallclock)
    udp = fake_udp(front)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(front.timer_loop)
        await trio.sleep(100)  # the loop sleeps: no peer, no deadline
        assert not udp.sent
        added = trio.current_time()
        front.uapi_apply(
            [
                uapi.ConfigurePeer(
                    CLIENT, endpoint=CLIENT_ADDR, persistent_keepalive=25, allowed_ips=()
                )
            ]
        )
        await until(lambda: bool(udp.sent), bound=1)
        nursery.cancel_scope.cancel()
    assert [s.at for s in udp.sent] == [added] and sizes(udp.sent) == [INITIATION_LEN]


async def test_a_keepalive_turned_on_later_wakes_the_loop_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    front = make_front(site(keepalive=None), wallclock=virtual_wallclock)
    udp = fake_udp(front)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(front.timer_loop)
        await trio.sleep(30)
        assert not udp.sent  # nothing to send, nothing due
        config = front.device.peers[CLIENT].config
        assert front.apply_peer_config(config.__class__(CLIENT, persistent_keepalive=25)) == (
            "changed"
        )
        turned_on = trio.current_time()
        await until(lambda: bool(udp.sent), bound=1)
        nursery.cancel_scope.cancel()
    assert [s.at for s in udp.sent] == [turned_on]


async def test_persistent_keepalives_data_and_a_rekey_through_the_front(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """What the sans-IO devices did under a loop of the test's own, now through the front's
    receive and timer loops and its route table."""
    front = make_front(site(), wallclock=virtual_wallclock)
    udp = fake_udp(front)
    client = FakeClient(front, CLIENT_PRIVATE)
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(front.receive_loop)
        nursery.start_soon(front.timer_loop)
        nursery.start_soon(client.run_timers)  # it answers data with a keepalive
        await trio.sleep(60)
        # The server has a packet for the client, 60 s into the session: the route table's
        # owner of the client's address encrypts it.
        owner = front.router.lookup(ipaddress.ip_address(A_TUN))
        assert owner is not None and repr(owner) == "WireGuard peer site"
        owner.send([ip4(B_TUN, A_TUN, b"from the server")], trio.current_time())
        await trio.sleep(140)
        nursery.cancel_scope.cancel()

    assert client.packets == [ip4(B_TUN, A_TUN, b"from the server")]
    peer = front.device.peers[CLIENT]
    assert peer.endpoint == CLIENT_ADDR and peer.current is not None
    sent = [(s.at - start, len(d)) for s in udp.sent if s.at is not None for d in s.datagrams]
    received = [(t - start, size) for t, size in client.sent]
    keepalives = [t for t, size in sent if size == KEEPALIVE_LEN]
    assert keepalives[0] == 0 and len(keepalives) >= 7
    # Each keepalive follows a handshake response at once, or 25 s without any packet
    # either way (the persistent keepalive timer, through the real loop).
    responses = {t for t, size in received if size == RESPONSE_LEN}
    for at in keepalives:
        if at in responses:
            continue
        last = max(t for t, _ in sent + received if t < at)
        assert at - last == pytest.approx(25.0, abs=1e-9), (at, sent, received)
    # The first handshake, and the rekey by the first keepalive after REKEY_AFTER_TIME.
    initiations = [t for t, size in sent if size == INITIATION_LEN]
    assert initiations[0] == 0
    assert len(initiations) == 2 and REKEY_AFTER_TIME < initiations[1] <= 150, initiations
    assert peer.handshakes == 2
