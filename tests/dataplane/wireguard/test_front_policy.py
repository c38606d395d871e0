"""The front blocks peers by their policy: disabled at once, expired at the deadline (a timer
in the front, the wall clock injected); unblocked with no restart, the client reconnecting by
its own handshake retry. Under MockClock, the wall clock moving with trio's."""

from __future__ import annotations

import datetime
import ipaddress
import logging

import pytest
import trio
import trio.testing
from support.fakes import WALL_EPOCH, FakeClient, fake_tun, make_front, until, virtual_wallclock
from support.wg_harness import A_TUN, B_TUN, ip4

from trivpn.config import WireGuardPeerConfig
from trivpn.dataplane.wireguard.front import WireGuardFront
from trivpn.dataplane.wireguard.peers import peer_config
from trivpn.proto.policy import PeerState, Policy, format_expires
from trivpn.proto.wireguard import crypto

CLIENT_PRIVATE = crypto.clamp(bytes([2]) * 32)
CLIENT = crypto.public_key(CLIENT_PRIVATE)
TICK = 0.01  # s: how close to the deadline the block is checked here
EXPIRY_IN = 100.0  # s of virtual time from the start


def at(seconds: float) -> datetime.datetime:
    """The wall-clock moment ``seconds`` of trio's (virtual) clock."""
    return datetime.datetime.fromtimestamp(WALL_EPOCH + seconds, datetime.UTC)


def client_config(**policy: object) -> WireGuardPeerConfig:
    return WireGuardPeerConfig(
        name="client",
        public_key=CLIENT,
        allowed_ips=(ipaddress.ip_network(f"{A_TUN}/32"),),
        **policy,  # type: ignore[arg-type]
    )


def set_policy(front: WireGuardFront, policy: Policy) -> str | None:
    """What the registry sync does for a `peer set`."""
    return front.apply_peer_config(peer_config(client_config()), policy=policy)


def to_client(front: WireGuardFront, payload: bytes) -> None:
    """A packet from the TUN for the client."""
    owner = front.router.lookup(ipaddress.ip_address(A_TUN))
    assert owner is not None
    owner.send([ip4(B_TUN, A_TUN, payload)], trio.current_time())


async def test_expiry_blocks_at_the_deadline_and_a_later_one_unblocks(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "trivpn")
    front = make_front(client_config(expires=at(EXPIRY_IN)), wallclock=virtual_wallclock)
    client = FakeClient(front, CLIENT_PRIVATE)
    tun = fake_tun(front)
    peer = front.device.peers[CLIENT]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(front.receive_loop)
        nursery.start_soon(front.timer_loop)
        nursery.start_soon(front.policy_loop)
        client.send(ip4(A_TUN, B_TUN, b"one"))
        await until(lambda: len(tun.written) == 1)
        assert front.peer_state(CLIENT)[0] is PeerState.ACTIVE

        await trio.sleep_until(EXPIRY_IN - TICK)
        assert not peer.blocked and peer.current is not None
        to_client(front, b"before")
        await until(lambda: len(client.packets) == 1)

        await trio.sleep_until(EXPIRY_IN + TICK)
        assert peer.blocked and front.peer_state(CLIENT)[0] is PeerState.EXPIRED
        assert peer.keypairs == (None, None, None)  # keys erased
        assert peer.next_deadline() is None  # no timer: the server initiates nothing
        # packets from the TUN for it are dropped and counted
        sent = len(client.received)
        to_client(front, b"after")
        assert front.device.counters["blocked"] == 1
        # its old session is gone; its new initiations get no answer
        client.send(ip4(A_TUN, B_TUN, b"two"))
        assert client.peer.current is not None  # the client does not know yet
        nursery.start_soon(client.run_timers)
        await until(lambda: front.device.counters["blocked"] >= 3, bound=30)
        assert len(client.received) == sent and len(tun.written) == 1
        assert front.device.counters["unknown_index"] >= 1  # the data on the erased session

        # a later expiry: active again, and the client's own retry reconnects
        assert set_policy(front, Policy(expires=at(EXPIRY_IN + 3600))) == "changed"
        assert not peer.blocked and front.peer_state(CLIENT)[0] is PeerState.ACTIVE
        handshakes = client.peer.handshakes
        await until(lambda: client.peer.handshakes > handshakes, bound=20)  # its next retry
        client.send(ip4(A_TUN, B_TUN, b"three"))
        await until(lambda: len(tun.written) == 2)
        assert tun.written[1] == ip4(A_TUN, B_TUN, b"three")
        nursery.cancel_scope.cancel()
    logged = [r.getMessage() for r in caplog.records if "client" in r.getMessage()]
    expired = "wireguard: peer client blocked: expired at 2023-11-14T22:15:00Z; its sessions end"
    assert format_expires(at(EXPIRY_IN)) == "2023-11-14T22:15:00Z"
    assert logged.count(expired) == 1, logged
    assert logged.count("wireguard: peer client active again (was expired)") == 1, logged


async def test_disable_blocks_at_once_and_enable_lets_it_reconnect(
    autojump_clock: trio.testing.MockClock,
) -> None:
    front = make_front(client_config(), wallclock=virtual_wallclock)
    client = FakeClient(front, CLIENT_PRIVATE)
    tun = fake_tun(front)
    peer = front.device.peers[CLIENT]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(front.receive_loop)
        nursery.start_soon(front.timer_loop)
        nursery.start_soon(front.policy_loop)
        nursery.start_soon(client.run_timers)
        client.send(ip4(A_TUN, B_TUN, b"one"))
        await until(lambda: len(tun.written) == 1)

        assert set_policy(front, Policy(enabled=False)) == "changed"
        assert peer.blocked and peer.current is None  # at once: no timer involved
        assert front.peer_state(CLIENT) == (PeerState.DISABLED, Policy(enabled=False))
        assert set_policy(front, Policy(enabled=False)) is None  # the same again: no change
        client.send(ip4(A_TUN, B_TUN, b"two"))
        await trio.sleep(30)  # the client retries; nothing gets through
        assert len(tun.written) == 1 and front.device.counters["blocked"] >= 1

        assert set_policy(front, Policy()) == "changed"
        assert not peer.blocked and front.peer_state(CLIENT)[0] is PeerState.ACTIVE
        handshakes = client.peer.handshakes
        await until(lambda: client.peer.handshakes > handshakes, bound=20)  # its next retry
        client.send(ip4(A_TUN, B_TUN, b"three"))
        await until(lambda: tun.written[-1] == ip4(A_TUN, B_TUN, b"three"))
        nursery.cancel_scope.cancel()


async def test_a_blocked_peer_with_a_keepalive_is_not_initiated_until_unblocked(
    autojump_clock: trio.testing.MockClock,
) -> None:
    keepalive = WireGuardPeerConfig(
        name="site",
        public_key=CLIENT,
        allowed_ips=(ipaddress.ip_network(f"{A_TUN}/32"),),
        endpoint=None,
        persistent_keepalive=25,
        enabled=False,
    )
    front = make_front(keepalive, wallclock=virtual_wallclock)
    client = FakeClient(front, CLIENT_PRIVATE)
    peer = front.device.peers[CLIENT]
    peer.endpoint = ("192.0.2.2", 40000)  # as if it had roamed there
    assert peer.blocked  # blocked before its first packet
    async with trio.open_nursery() as nursery:
        nursery.start_soon(front.receive_loop)
        nursery.start_soon(front.timer_loop)
        nursery.start_soon(front.policy_loop)
        await trio.sleep(60)
        assert client.received == []  # no initiation, no keepalive
        front.apply_peer_config(peer_config(keepalive), policy=Policy())
        await until(lambda: peer.current is not None)  # initiated at once, as wg(8)
        assert client.received[0][0] == 60
        nursery.cancel_scope.cancel()


def test_a_removed_peer_forgets_its_policy() -> None:
    front = make_front(client_config(enabled=False))
    assert front.peer_state(CLIENT)[0] is PeerState.DISABLED
    assert front.discard_peer(CLIENT)
    assert front.peer_state(CLIENT) == (PeerState.ACTIVE, Policy())
    front.apply_peer_config(peer_config(client_config()))  # back, with no policy given
    assert not front.device.peers[CLIENT].blocked
