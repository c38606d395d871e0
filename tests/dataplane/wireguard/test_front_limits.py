"""The front enforces quotas and rates (PeerPolicies): a peer is blocked over its quota at
the crossing (mid-batch), warned once per period at 80 %, unblocked by more quota, a period's
roll-over or a usage reset loaded from the registry; its rates reach the device. Under
MockClock, the wall clock moving with trio's; the usage keeper is played by ``keep``."""

from __future__ import annotations

import datetime
import ipaddress
import logging
from collections.abc import Mapping

import pytest
import trio
import trio.testing
from support.fakes import WALL_EPOCH, FakeClient, fake_tun, make_front, until, virtual_wallclock
from support.wg_harness import A_TUN, B_TUN, ip4

from trivpn.config import WireGuardPeerConfig
from trivpn.control.status_socket import peer_entry
from trivpn.dataplane.wireguard.front import WireGuardFront
from trivpn.dataplane.wireguard.peers import peer_config
from trivpn.dataplane.wireguard.policy import PendingUsage
from trivpn.proto.periods import QuotaPeriod, period_end
from trivpn.proto.policy import PeerState, Policy, Quota
from trivpn.proto.usage import NO_USAGE, PeriodCount, UsageDelta, UsageRecord
from trivpn.proto.wireguard import crypto
from trivpn.proto.wireguard.messages import INITIATION_LEN, RESPONSE_LEN

CLIENT_PRIVATE = crypto.clamp(bytes([2]) * 32)
CLIENT = crypto.public_key(CLIENT_PRIVATE)
OTHER = crypto.public_key(crypto.clamp(bytes([3]) * 32))
HANDSHAKE = INITIATION_LEN + RESPONSE_LEN  # what the client's first handshake counts
PACKET = 480  # an inner packet of this size travels as a 512-byte datagram
DATAGRAM = 512
QUOTA = 4096  # crossed by the 8th packet after the handshake: 240 + 8 * 512 = 4336
MIDNIGHT = period_end(QuotaPeriod.DAY, WALL_EPOCH) - WALL_EPOCH  # s of trio's clock


def client_config() -> WireGuardPeerConfig:
    return WireGuardPeerConfig(
        name="client", public_key=CLIENT, allowed_ips=(ipaddress.ip_network(f"{A_TUN}/32"),)
    )


def set_policy(front: WireGuardFront, policy: Policy) -> str | None:
    """What the registry sync does for a `peer set`."""
    return front.apply_peer_config(peer_config(client_config()), policy=policy)


def packet(n: int) -> bytes:
    return ip4(A_TUN, B_TUN, bytes([n]) * (PACKET - 20))


def keep(
    front: WireGuardFront, store: dict[bytes, UsageRecord], wallclock: float | None = None
) -> list[PendingUsage]:
    """One flush of the usage keeper, with ``store`` as the registry (it adds, as SQL does)."""
    taken = front.policies.pending_usage()
    wallclock = virtual_wallclock() if wallclock is None else wallclock
    for item in taken:
        record = store.get(item.public_key, NO_USAGE)
        delta = item.delta
        store[item.public_key] = record.added(delta.rx, delta.tx, wallclock, delta.counted)
    front.policies.usage_stored(dict(store), taken)
    return taken


def blocked_log(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What the policy logged of the client."""
    lines = [r.getMessage() for r in caplog.records if "peer client" in r.getMessage()]
    return [line for line in lines if "quota" in line or "active again" in line]


async def burst_over_quota(front: WireGuardFront, client: FakeClient, count: int = 10) -> None:
    """``count`` packets from the client in one receive batch; the quota is crossed in it."""
    tun = fake_tun(front)
    before = len(tun.written)
    client.send(packet(0))  # the handshake, then the packet
    await until(lambda: len(tun.written) == before + 1)
    for n in range(1, count):
        client.send(packet(n))  # delivered together: the loop drains them as one batch
    await until(lambda: front.peer_state(CLIENT)[0] is PeerState.OVER_QUOTA)


async def test_over_quota_mid_batch_blocks_within_one_datagram_and_more_quota_unblocks(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "trivpn")
    front = make_front(client_config(), wallclock=virtual_wallclock)
    set_policy(front, Policy(quota=Quota(QUOTA, QuotaPeriod.TOTAL)))
    client = FakeClient(front, CLIENT_PRIVATE)
    tun = fake_tun(front)
    peer = front.device.peers[CLIENT]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(front.receive_loop)
        nursery.start_soon(front.timer_loop)
        nursery.start_soon(front.policy_loop)
        await burst_over_quota(front, client)
        assert len(tun.written) == 8  # the one that crossed the quota went
        assert front.device.counters["blocked"] == 2
        assert peer.blocked and peer.keypairs == (None, None, None)
        used = front.peer_usage(CLIENT).total
        assert used == HANDSHAKE + 8 * DATAGRAM
        assert QUOTA <= used < QUOTA + DATAGRAM  # past it by less than one datagram

        assert set_policy(front, Policy(quota=Quota(2 * QUOTA, QuotaPeriod.TOTAL))) == "changed"
        assert not peer.blocked and front.peer_state(CLIENT)[0] is PeerState.ACTIVE
        nursery.cancel_scope.cancel()
    assert blocked_log(caplog) == [
        # the batch crossed 80 % and the quota: the events are handled after it
        "wireguard: peer client has used 105% of its quota 4KiB/total (4336 bytes)",
        "wireguard: peer client blocked: over its quota 4KiB/total; its sessions end",
        "wireguard: peer client active again (was over_quota)",
    ]


async def test_a_usage_reset_loaded_from_the_registry_unblocks_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    front = make_front(client_config(), wallclock=virtual_wallclock)
    set_policy(front, Policy(quota=Quota(QUOTA, QuotaPeriod.MONTH)))
    client = FakeClient(front, CLIENT_PRIVATE)
    store: dict[bytes, UsageRecord] = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(front.receive_loop)
        nursery.start_soon(front.timer_loop)
        nursery.start_soon(front.policy_loop)
        await burst_over_quota(front, client)
        keep(front, store)
        assert front.peer_state(CLIENT)[0] is PeerState.OVER_QUOTA  # storing changes nothing
        assert front.policies.pending_usage() == []
        front.policies.load_usage({CLIENT: store[CLIENT].reset()})  # `peer reset-usage`
        assert not front.device.peers[CLIENT].blocked  # within the call
        assert front.peer_state(CLIENT)[0] is PeerState.ACTIVE
        assert front.peer_usage(CLIENT).lifetime_rx == store[CLIENT].lifetime_rx
        nursery.cancel_scope.cancel()


async def test_a_day_quota_rolls_over_at_midnight_and_warns_once_per_day(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "trivpn")
    front = make_front(client_config(), wallclock=virtual_wallclock)
    set_policy(front, Policy(quota=Quota(QUOTA, QuotaPeriod.DAY)))
    client = FakeClient(front, CLIENT_PRIVATE)
    store: dict[bytes, UsageRecord] = {}
    peer = front.device.peers[CLIENT]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(front.receive_loop)
        nursery.start_soon(front.timer_loop)
        nursery.start_soon(front.policy_loop)
        await burst_over_quota(front, client)
        keep(front, store)
        await trio.sleep_until(MIDNIGHT - 1)
        assert peer.blocked
        await trio.sleep_until(MIDNIGHT + 0.01)
        assert not peer.blocked and front.peer_state(CLIENT)[0] is PeerState.ACTIVE
        assert front.peer_usage(CLIENT).used(QuotaPeriod.DAY, virtual_wallclock()) == 0
        # the new day: usage from another gateway loaded, over 80 %: warned again, once
        today = store[CLIENT].added(0, 3500, virtual_wallclock())
        assert today.day == PeriodCount("2023-11-15", 3500)
        front.policies.load_usage({CLIENT: today})
        front.policies.load_usage({CLIENT: today})
        assert not peer.blocked
        nursery.cancel_scope.cancel()
    logged = blocked_log(caplog)
    warnings = [line for line in logged if "of its quota" in line]
    assert warnings == [
        "wireguard: peer client has used 105% of its quota 4KiB/day (4336 bytes)",
        "wireguard: peer client has used 85% of its quota 4KiB/day (3500 bytes)",
    ]
    assert logged.count("wireguard: peer client active again (was over_quota)") == 1


async def test_rates_reach_the_device_and_are_kept_when_unchanged(
    autojump_clock: trio.testing.MockClock,
) -> None:
    front = make_front(client_config(), wallclock=virtual_wallclock)
    peer = front.device.peers[CLIENT]
    assert not peer.limited  # no policy: nothing per packet
    set_policy(front, Policy(rate_down=20_000_000, rate_up=5_000_000))
    down, up = peer.rate_down, peer.rate_up
    assert down is not None and up is not None and peer.limited
    assert (down.rate, up.rate) == (2_500_000, 625_000)  # bytes per second
    set_policy(front, Policy(rate_down=20_000_000, rate_up=5_000_000, enabled=False))
    set_policy(front, Policy(rate_down=20_000_000, rate_up=5_000_000))
    assert peer.rate_down is down and peer.rate_up is up  # the buckets (and tokens) kept
    set_policy(front, Policy(rate_down=20_000_000))
    assert peer.rate_down is down and peer.rate_up is None
    set_policy(front, Policy())
    assert not peer.limited


def fake_traffic(front: WireGuardFront, rx: int, tx: int) -> None:
    peer = front.device.peers[CLIENT]
    peer.rx_bytes += rx
    peer.tx_bytes += tx


def pending(front: WireGuardFront) -> Mapping[bytes, tuple[int, int]]:
    return {p.public_key: (p.delta.rx, p.delta.tx) for p in front.policies.pending_usage()}


def test_pending_stored_and_reloaded_usage() -> None:
    front = make_front(client_config(), wallclock=virtual_wallclock_at_epoch)
    front.add_peer(
        WireGuardPeerConfig(
            name="quiet", public_key=OTHER, allowed_ips=(ipaddress.ip_network("10.0.0.9/32"),)
        )
    )
    policies = front.policies
    assert policies.usage(CLIENT) == NO_USAGE  # not loaded: counts from nothing
    fake_traffic(front, 100, 50)
    taken = policies.pending_usage()
    assert taken == [
        PendingUsage(CLIENT, 100, 50, UsageDelta(CLIENT, 100, 50, 150, 0))
    ]  # the quiet peer has nothing
    assert policies.pending_usage() == taken  # pending until stored
    stored = NO_USAGE.added(100, 50, WALL_EPOCH).added(1000, 0, WALL_EPOCH)  # another writer
    fake_traffic(front, 7, 3)  # counted while the store wrote
    policies.usage_stored({CLIENT: stored}, taken)
    assert pending(front) == {CLIENT: (7, 3)}
    assert policies.usage(CLIENT) == stored.added(7, 3, WALL_EPOCH)

    # a record read afresh (a reset elsewhere): what is pending stays pending, but what was
    # counted before the reset counts in the lifetime only
    policies.load_usage({CLIENT: stored.reset(), OTHER: NO_USAGE.added(5, 5, WALL_EPOCH)})
    assert pending(front) == {CLIENT: (7, 3)}
    assert policies.usage(CLIENT) == stored.reset().added(7, 3, WALL_EPOCH, counted=0)
    assert policies.usage(OTHER).total == 10

    # replaced by a reload (removed, added again): nothing lost, nothing counted twice
    assert front.discard_peer(CLIENT)
    front.add_peer(client_config())
    assert front.device.peers[CLIENT].rx_bytes == 0  # a new Peer's counters
    fake_traffic(front, 1, 1)
    assert pending(front) == {CLIENT: (8, 4)}
    assert policies.usage(CLIENT) == stored.reset().added(8, 4, WALL_EPOCH, counted=2)

    # removed: its last delta is handed out once, and stored like the others
    assert front.discard_peer(CLIENT)
    taken = policies.pending_usage()
    assert [(p.public_key, p.delta.rx, p.delta.tx) for p in taken] == [(CLIENT, 8, 4)]
    assert policies.pending_usage() == []
    record = stored.reset().added(8, 4, WALL_EPOCH)
    policies.usage_stored({CLIENT: record}, taken)
    assert policies.pending_usage() == [] and policies.usage(CLIENT) == record
    # added back later: it goes on from its record
    front.add_peer(client_config())
    fake_traffic(front, 2, 0)
    assert pending(front) == {CLIENT: (2, 0)}


def virtual_wallclock_at_epoch() -> float:
    return WALL_EPOCH


def test_the_status_entry_carries_policy_and_usage() -> None:
    front = make_front(client_config(), wallclock=virtual_wallclock_at_epoch)
    set_policy(front, Policy(quota=Quota(50 * 1024**3, QuotaPeriod.MONTH), rate_up=5_000_000))
    front.policies.load_usage({CLIENT: NO_USAGE.added(1000, 2000, WALL_EPOCH - 40 * 86400)})
    fake_traffic(front, 10, 20)
    entry = peer_entry(front, front.device.peers[CLIENT], WALL_EPOCH)
    assert {k: entry[k] for k in entry if "quota" in k or "rate" in k or "usage" in k} == {
        "quota_bytes": 50 * 1024**3,
        "quota_period": "month",
        "rate_down_bps": None,
        "rate_up_bps": 5_000_000,
        "usage_bytes": 30,  # last month's 3000 bytes count for it no more
    }
    assert (entry["lifetime_rx_bytes"], entry["lifetime_tx_bytes"]) == (1010, 2020)
    assert entry["state"] == "active"


async def test_the_80_percent_warning_comes_once_per_period_and_blocks_nothing(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "trivpn")
    front = make_front(client_config(), wallclock=virtual_wallclock)
    set_policy(front, Policy(quota=Quota(QUOTA, QuotaPeriod.MONTH)))
    client = FakeClient(front, CLIENT_PRIVATE)
    tun = fake_tun(front)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(front.receive_loop)
        nursery.start_soon(front.timer_loop)
        nursery.start_soon(front.policy_loop)
        for n in range(7):  # 240 + 7 * 512 = 3824: past 80 % (3277) at the 6th, under 4096
            client.send(packet(n))
            await until(lambda: len(tun.written) == n + 1)  # noqa: B023 (awaited here)
            if n == 4:
                assert blocked_log(caplog) == []
        assert blocked_log(caplog) == [
            "wireguard: peer client has used 80% of its quota 4KiB/month (3312 bytes)"
        ]
        # a larger quota, and past its 80 % too, in the same month: not warned again
        set_policy(front, Policy(quota=Quota(2 * QUOTA, QuotaPeriod.MONTH)))
        for n in range(7, 13):  # 3824 + 6 * 512 = 6896, over 6554
            client.send(packet(n))
            await until(lambda: len(tun.written) == n + 1)  # noqa: B023
        assert front.peer_state(CLIENT)[0] is PeerState.ACTIVE
        assert len(blocked_log(caplog)) == 1
        nursery.cancel_scope.cancel()


def test_usage_another_writer_added_is_checked_when_stored() -> None:
    front = make_front(client_config(), wallclock=virtual_wallclock_at_epoch)
    set_policy(front, Policy(quota=Quota(QUOTA, QuotaPeriod.TOTAL)))
    store = {CLIENT: NO_USAGE.added(4000, 0, WALL_EPOCH)}  # another gateway's, not loaded
    fake_traffic(front, 50, 50)
    assert front.peer_state(CLIENT)[0] is PeerState.ACTIVE  # 100 bytes seen
    keep(front, store, WALL_EPOCH)
    assert front.peer_usage(CLIENT).total == 4100
    assert front.peer_state(CLIENT)[0] is PeerState.OVER_QUOTA  # at once, when stored
    assert front.device.peers[CLIENT].blocked


def test_each_cause_is_lifted_on_its_own() -> None:
    front = make_front(client_config(), wallclock=virtual_wallclock_at_epoch)
    peer = front.device.peers[CLIENT]
    quota = Quota(QUOTA, QuotaPeriod.TOTAL)
    front.policies.load_usage({CLIENT: NO_USAGE.added(QUOTA, 0, WALL_EPOCH)})
    past = datetime.datetime.fromtimestamp(WALL_EPOCH - 1, datetime.UTC)
    later = datetime.datetime.fromtimestamp(WALL_EPOCH + 3600, datetime.UTC)
    set_policy(front, Policy(enabled=False, expires=past, quota=quota))
    assert front.peer_state(CLIENT)[0] is PeerState.DISABLED and peer.blocked
    set_policy(front, Policy(expires=past, quota=quota))  # enabled
    assert front.peer_state(CLIENT)[0] is PeerState.EXPIRED and peer.blocked
    set_policy(front, Policy(expires=later, quota=quota))  # a later expiry
    assert front.peer_state(CLIENT)[0] is PeerState.OVER_QUOTA and peer.blocked
    set_policy(front, Policy(expires=later, quota=Quota(QUOTA + 1, QuotaPeriod.TOTAL)))
    assert front.peer_state(CLIENT)[0] is PeerState.ACTIVE and not peer.blocked
    assert peer.usage_limit == QUOTA + 1 - QUOTA + peer.rx_bytes + peer.tx_bytes  # 1 byte left
