"""trivpn.registry.usage_sync: the usage keeper under MockClock, on a real SQLite registry.

The front's side is first `Policies`: the `PeerPolicies` usage contract on `UsageMeter`s,
with counters the test moves (what the data path does) and a quota that blocks; then the
real front (its `PeerPolicies`) with the registry sync, as the server wires them.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import pytest
import trio
import trio.testing
from support.fakes import make_front, virtual_wallclock

from trivpn.config import StateConfig, WireGuardPeerConfig
from trivpn.dataplane.wireguard.front import WireGuardFront
from trivpn.dataplane.wireguard.policy import PendingUsage
from trivpn.proto.periods import QuotaPeriod
from trivpn.proto.policy import PeerState, Policy, Quota
from trivpn.proto.usage import NO_USAGE, UsageDelta, UsageMeter, UsageRecord
from trivpn.proto.wireguard import crypto, keys
from trivpn.registry import store
from trivpn.registry.api import RegistryStore
from trivpn.registry.store import AddressPlan, Registry, RegistryBusy
from trivpn.registry.sync import PeerSync, registry_opener
from trivpn.registry.usage_sync import FLUSH_INTERVAL, OTHERS_RELOAD_INTERVAL, UsageKeeper

T = TypeVar("T")
PLAN = AddressPlan(subnets=(ipaddress.IPv4Network("10.8.0.0/24"),))
KEY_A = crypto.public_key(keys.generate_private_key(lambda n: b"\x0a" * n))
KEY_B = crypto.public_key(keys.generate_private_key(lambda n: b"\x0b" * n))
WALLCLOCK = 1_796_126_400.0  # 2026-12-01 12:00 UTC: the usage rows' periods
MIB = 1 << 20


@dataclasses.dataclass(frozen=True)
class Pending:
    public_key: bytes
    rx: int
    tx: int
    delta: UsageDelta


class Policies:
    """`PeerPolicies`' usage contract: pending deltas (removed peers' included, then
    forgotten), records stored and loaded, and a peer blocked while over its quota."""

    def __init__(self, quota: int | None = None) -> None:
        self.quota = quota
        self.counters: dict[bytes, tuple[int, int]] = {}
        self.meters: dict[bytes, UsageMeter] = {}
        self.removed: list[Pending] = []
        self.blocked: set[bytes] = set()

    def add_peer(self, key: bytes) -> None:
        self.counters[key] = (0, 0)
        self.meters.setdefault(key, UsageMeter(NO_USAGE))
        self._check(key)

    def count(self, key: bytes, rx: int, tx: int) -> None:
        """Traffic: the peer's counters move (as `wg show`'s transfer does)."""
        old_rx, old_tx = self.counters[key]
        self.counters[key] = (old_rx + rx, old_tx + tx)
        self._check(key)

    def remove_peer(self, key: bytes) -> None:
        rx, tx = self.counters.pop(key)
        delta = self.meters.pop(key).delta(key, rx, tx)
        if delta.rx or delta.tx:
            self.removed.append(Pending(key, rx, tx, delta))

    def usage(self, key: bytes) -> UsageRecord:
        return self.meters[key].current(*self.counters[key], WALLCLOCK)

    def used(self, key: bytes) -> int:
        return self.usage(key).total

    def pending_usage(self) -> list[Pending]:
        taken, self.removed = self.removed, []
        for key, meter in self.meters.items():
            rx, tx = self.counters[key]
            delta = meter.delta(key, rx, tx)
            if delta.rx or delta.tx:
                taken.append(Pending(key, rx, tx, delta))
        return taken

    def usage_stored(self, stored: Mapping[bytes, UsageRecord], taken: Sequence[Pending]) -> None:
        for u in taken:
            meter = self.meters.get(u.public_key)
            if meter is not None:
                meter.stored(stored[u.public_key], u.rx, u.tx)
                self._check(u.public_key)

    def load_usage(self, records: Mapping[bytes, UsageRecord]) -> None:
        for key, record in records.items():
            if key in self.meters:
                self.meters[key].reloaded(record, *self.counters[key])
                self._check(key)

    def _check(self, key: bytes) -> None:
        over = self.quota is not None and self.used(key) >= self.quota
        (self.blocked.add if over else self.blocked.discard)(key)


async def inline(fn: Callable[[], T], /) -> T:
    """The 'thread' work inline: deterministic under MockClock."""
    await trio.lowlevel.checkpoint()
    return fn()


def make_sync(path: Path) -> PeerSync:
    return PeerSync(
        make_front(), registry_opener(StateConfig(dir=path.parent)), (), PLAN, run_sync=inline
    )


def make_keeper(policies: Policies, sync: PeerSync) -> UsageKeeper[Pending]:
    keeper = UsageKeeper(policies, sync.with_registry, wallclock=lambda: WALLCLOCK)
    sync.on_foreign_commit = keeper.registry_changed
    return keeper


def stored(path: Path) -> dict[bytes, UsageRecord]:
    """What another process reads from the registry now."""
    if not path.exists():
        return {}
    with Registry.open(path, create=False) as registry:
        return registry.usage_records()


def totals(path: Path) -> dict[bytes, int]:
    return {key: record.total for key, record in stored(path).items()}


async def within(seconds: float, done: Callable[[], bool]) -> None:
    """Wait until ``done()``, for ``seconds`` at most (of the mock clock)."""
    with trio.fail_after(seconds):
        while not done():
            await trio.sleep(0.01)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return store.registry_path(tmp_path)


async def test_usage_is_added_every_interval_and_the_file_made_by_the_first_flush(
    path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    policies = Policies()
    policies.add_peer(KEY_A)
    sync = make_sync(path)
    keeper = make_keeper(policies, sync)
    async with trio.open_nursery() as nursery:
        await nursery.start(sync.run)
        await nursery.start(keeper.run)
        await trio.sleep(FLUSH_INTERVAL * 2)
        assert not path.exists()  # nothing counted: no registry made
        policies.count(KEY_A, 1000, 200)
        await within(FLUSH_INTERVAL, path.exists)
        record = stored(path)[KEY_A]
        assert (record.lifetime_rx, record.lifetime_tx, record.total) == (1000, 200, 1200)
        assert policies.pending_usage() == []  # stored: nothing pending any more

        policies.count(KEY_A, 1, 2)
        await trio.sleep(FLUSH_INTERVAL / 2)
        assert totals(path) == {KEY_A: 1200}  # not before the interval
        await trio.sleep(FLUSH_INTERVAL)
        assert totals(path) == {KEY_A: 1203}  # added, not written over
        assert policies.usage(KEY_A) == stored(path)[KEY_A]
        nursery.cancel_scope.cancel()


async def test_shutdown_flushes_what_the_interval_has_not_yet(
    path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    policies = Policies()
    policies.add_peer(KEY_A)
    policies.add_peer(KEY_B)
    sync = make_sync(path)
    keeper = make_keeper(policies, sync)
    async with trio.open_nursery() as nursery:
        await nursery.start(sync.run)
        await nursery.start(keeper.run)
        policies.count(KEY_A, 5000, 0)
        policies.count(KEY_B, 0, 7)
        policies.remove_peer(KEY_B)  # removed before any flush: its bytes still count
        await trio.sleep(1.0)
        nursery.cancel_scope.cancel()
    assert totals(path) == {KEY_A: 5000, KEY_B: 7}


async def test_startup_loads_usage_so_an_over_quota_peer_is_blocked_before_traffic(
    path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    with Registry.open(path) as registry:
        registry.add_usage(
            [UsageDelta(KEY_A, 3 * MIB, 2 * MIB), UsageDelta(KEY_B, MIB, 0)], WALLCLOCK
        )
    policies = Policies(quota=4 * MIB)
    policies.add_peer(KEY_A)
    policies.add_peer(KEY_B)
    assert not policies.blocked  # not loaded yet: counts from NO_USAGE
    sync = make_sync(path)
    keeper = make_keeper(policies, sync)
    async with trio.open_nursery() as nursery:
        await nursery.start(sync.run)
        await nursery.start(keeper.run)
        # started: the server's socket serves from here on
        assert policies.blocked == {KEY_A}
        assert policies.used(KEY_B) == MIB
        nursery.cancel_scope.cancel()


async def test_a_reset_by_another_process_is_loaded_within_a_second_and_unblocks(
    path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    cli = Registry.open(path)  # what `trivpn peer …` commits through
    cli.add("alice", KEY_A, None, PLAN)
    cli.add_usage([UsageDelta(KEY_A, 5 * MIB, 0)], WALLCLOCK)
    policies = Policies(quota=4 * MIB)
    policies.add_peer(KEY_A)
    sync = make_sync(path)
    keeper = make_keeper(policies, sync)
    async with trio.open_nursery() as nursery:
        await nursery.start(sync.run)
        await nursery.start(keeper.run)
        assert policies.blocked == {KEY_A}
        policies.count(KEY_A, 100, 0)  # a handshake's worth, still pending
        await trio.sleep(0.3)  # the watcher is mid-interval
        cli.reset_usage("alice")
        await within(1.0, lambda: not policies.blocked)
        assert policies.used(KEY_A) == 0  # counted before the reset: it does not come back
        lifetime = policies.usage(KEY_A).lifetime_rx
        assert lifetime == 5 * MIB + 100  # the lifetime counters are never reset
        policies.count(KEY_A, 30, 0)  # after the reset: counts
        assert policies.used(KEY_A) == 30
        await trio.sleep(FLUSH_INTERVAL)
        assert totals(path) == {KEY_A: 30}
        with Registry.open(path) as check:
            assert check.usage_records([KEY_A])[KEY_A].lifetime_rx == 5 * MIB + 130
        nursery.cancel_scope.cancel()
    cli.close()


class Failing:
    """`PeerSync.with_registry` that refuses while ``broken`` (a locked database)."""

    def __init__(self, inner: Callable[..., Awaitable[object]]) -> None:
        self.inner = inner
        self.broken = False
        self.refused = 0

    async def __call__(
        self, fn: Callable[[RegistryStore], T], /, *, create: bool = False, close: bool = False
    ) -> T | None:
        if self.broken:
            self.refused += 1
            await trio.lowlevel.checkpoint()
            raise RegistryBusy("database is locked")
        return await self.inner(fn, create=create, close=close)  # type: ignore[return-value]


async def test_a_database_error_is_logged_once_and_retried_and_nothing_is_lost(
    path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    policies = Policies()
    policies.add_peer(KEY_A)
    policies.add_peer(KEY_B)
    sync = make_sync(path)
    access = Failing(sync.with_registry)
    keeper = UsageKeeper(policies, access, wallclock=lambda: WALLCLOCK)
    async with trio.open_nursery() as nursery:
        await nursery.start(sync.run)
        await nursery.start(keeper.run)
        access.broken = True
        policies.count(KEY_A, 10, 0)
        policies.count(KEY_B, 20, 0)
        await trio.sleep(FLUSH_INTERVAL + 0.1)
        policies.remove_peer(KEY_B)  # taken by the failed flush, then removed
        policies.count(KEY_A, 1, 0)
        await trio.sleep(FLUSH_INTERVAL * 3)
        assert access.refused == 4
        assert policies.used(KEY_A) == 11  # forwarding and counting went on
        failures = [r for r in caplog.records if "usage: storing" in r.getMessage()]
        assert len(failures) == 1  # at most one line a minute
        assert "RegistryBusy: database is locked" in failures[0].getMessage()
        access.broken = False
        await trio.sleep(FLUSH_INTERVAL)
        assert totals(path) == {KEY_A: 11, KEY_B: 20}
        assert policies.pending_usage() == []
        nursery.cancel_scope.cancel()
    assert totals(path) == {KEY_A: 11, KEY_B: 20}  # the last flush had nothing more to add


async def test_a_failed_last_flush_says_what_is_lost(
    path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    policies = Policies()
    policies.add_peer(KEY_A)
    sync = make_sync(path)
    access = Failing(sync.with_registry)
    keeper = UsageKeeper(policies, access, wallclock=lambda: WALLCLOCK)
    async with trio.open_nursery() as nursery:
        await nursery.start(sync.run)
        await nursery.start(keeper.run)
        access.broken = True
        policies.count(KEY_A, 10, 0)
        await trio.sleep(FLUSH_INTERVAL + 0.1)  # one warning (the flush is retried)
        nursery.cancel_scope.cancel()
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [
        "usage: storing 1 peer(s)' usage at shutdown failed (RegistryBusy: database is locked); "
        "it is lost"
    ]
    assert not path.exists()


async def test_a_failed_startup_load_is_retried(
    path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    with Registry.open(path) as registry:
        registry.add_usage([UsageDelta(KEY_A, 5 * MIB, 0)], WALLCLOCK)
    policies = Policies(quota=4 * MIB)
    policies.add_peer(KEY_A)
    sync = make_sync(path)
    access = Failing(sync.with_registry)
    access.broken = True
    keeper = UsageKeeper(policies, access, wallclock=lambda: WALLCLOCK)
    async with trio.open_nursery() as nursery:
        await nursery.start(sync.run)
        await nursery.start(keeper.run)  # starts anyway: forwarding must not wait
        assert not policies.blocked
        access.broken = False
        await trio.sleep(FLUSH_INTERVAL + 0.1)
        assert policies.blocked == {KEY_A}
        nursery.cancel_scope.cancel()


async def test_other_gateways_usage_is_read_when_told_at_most_once_per_interval(
    path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    policies = Policies(quota=4 * MIB)
    policies.add_peer(KEY_A)  # counts nothing here
    sync = make_sync(path)
    loads: list[float] = []

    async def counting(
        fn: Callable[[RegistryStore], T], /, *, create: bool = False, close: bool = False
    ) -> T | None:
        if not create:  # the reads, not the flushes
            loads.append(trio.current_time())
        return await sync.with_registry(fn, create=create, close=close)

    keeper = UsageKeeper(policies, counting, wallclock=lambda: WALLCLOCK)
    async with trio.open_nursery() as nursery:
        await nursery.start(sync.run)
        await nursery.start(keeper.run)
        with Registry.open(path) as other:  # another gateway stores what it counted
            other.add_usage([UsageDelta(KEY_A, 5 * MIB, 0)], WALLCLOCK)
        start = trio.current_time()
        for _ in range(20):  # a notification from each flush of a busy fleet
            keeper.others_added()
            await trio.sleep(0.1)
        assert policies.blocked == {KEY_A}  # the fleet's sum, here too
        await trio.sleep(OTHERS_RELOAD_INTERVAL)  # told last at 1.9 s
        # 20 notifications in 2 s: read at once, then once more (for the later ones)
        told = [round(t - start, 1) for t in loads if t >= start]
        assert told == [0.0, OTHERS_RELOAD_INTERVAL]
        nursery.cancel_scope.cancel()


async def test_a_reload_and_a_restart_never_take_usage_back(
    path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    policies = Policies()
    policies.add_peer(KEY_A)
    sync = make_sync(path)
    keeper = make_keeper(policies, sync)
    async with trio.open_nursery() as nursery:
        await nursery.start(sync.run)
        await nursery.start(keeper.run)
        policies.count(KEY_A, 700, 300)
        await trio.sleep(FLUSH_INTERVAL + 0.1)
        policies.count(KEY_A, 50, 0)  # pending when the records are read again
        assert await keeper.flush()  # what the server does before a reload
        assert await keeper.load()
        assert policies.used(KEY_A) == 1050
        policies.count(KEY_A, 5, 0)
        keeper.registry_changed()  # a reload from the registry keeps what is pending
        await trio.sleep(0.1)
        assert policies.used(KEY_A) == 1055
        nursery.cancel_scope.cancel()
    assert totals(path) == {KEY_A: 1055}

    restarted = Policies()  # a new process: its counters start at 0
    restarted.add_peer(KEY_A)
    sync = make_sync(path)
    keeper = make_keeper(restarted, sync)
    async with trio.open_nursery() as nursery:
        await nursery.start(sync.run)
        await nursery.start(keeper.run)
        assert restarted.usage(KEY_A) == stored(path)[KEY_A]
        restarted.count(KEY_A, 1, 1)
        nursery.cancel_scope.cancel()
    record = stored(path)[KEY_A]
    assert (record.lifetime_rx, record.lifetime_tx, record.total) == (756, 301, 1057)


# --- the real front, its PeerPolicies and the registry sync, wired as the server does ---


QUOTA = Quota(4 * MIB, QuotaPeriod.TOTAL)


def wire(front: WireGuardFront, path: Path) -> tuple[PeerSync, UsageKeeper[PendingUsage]]:
    sync = PeerSync(front, registry_opener(StateConfig(dir=path.parent)), (), PLAN, run_sync=inline)
    keeper = UsageKeeper(front.policies, sync.with_registry, wallclock=virtual_wallclock)
    sync.on_foreign_commit = keeper.registry_changed
    return sync, keeper


async def test_a_registry_peer_over_its_quota_is_blocked_from_the_start_until_a_reset(
    path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    cli = Registry.open(path)
    cli.add("alice", KEY_A, None, PLAN, policy=Policy(quota=QUOTA))
    cli.add_usage([UsageDelta(KEY_A, 3 * MIB, 2 * MIB)], virtual_wallclock())
    front = make_front(wallclock=virtual_wallclock)
    sync, keeper = wire(front, path)
    async with trio.open_nursery() as nursery:
        await nursery.start(keeper.run)  # the server: before its socket serves, and the sync
        await nursery.start(sync.run)
        peer = front.device.peers[KEY_A]
        assert peer.blocked  # from its first packet
        assert front.peer_state(KEY_A)[0] is PeerState.OVER_QUOTA
        cli.reset_usage("alice")
        await within(1.0, lambda: not peer.blocked)
        assert front.peer_state(KEY_A)[0] is PeerState.ACTIVE
        assert front.policies.usage(KEY_A).lifetime_rx == 3 * MIB
        nursery.cancel_scope.cancel()
    cli.close()


async def test_a_static_peer_is_blocked_by_its_stored_usage_and_a_reset_unblocks_it(
    path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    cli = Registry.open(path)
    cli.add_usage([UsageDelta(KEY_B, 4 * MIB, 0)], virtual_wallclock())
    static = WireGuardPeerConfig(name="site", public_key=KEY_B, allowed_ips=(), quota=QUOTA)
    front = make_front(static, wallclock=virtual_wallclock)
    peer = front.device.peers[KEY_B]
    assert not peer.blocked  # the front alone knows no usage
    sync, keeper = wire(front, path)
    async with trio.open_nursery() as nursery:
        await nursery.start(keeper.run)
        assert peer.blocked
        await nursery.start(sync.run)
        cli.reset_key_usage(KEY_B)  # moves no peer: the data_version alone tells
        await within(1.0, lambda: not peer.blocked)
        nursery.cancel_scope.cancel()
    cli.close()


async def test_a_removed_peers_last_bytes_and_the_others_are_stored_at_shutdown(
    path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    statics = [
        WireGuardPeerConfig(name="a", public_key=KEY_A, allowed_ips=()),
        WireGuardPeerConfig(name="b", public_key=KEY_B, allowed_ips=()),
    ]
    front = make_front(*statics, wallclock=virtual_wallclock)
    sync, keeper = wire(front, path)
    async with trio.open_nursery() as nursery:
        await nursery.start(keeper.run)
        await nursery.start(sync.run)
        front.device.peers[KEY_A].rx_bytes += 1500  # what the data path counts
        front.device.peers[KEY_B].tx_bytes += 148
        await trio.sleep(FLUSH_INTERVAL + 0.1)
        assert totals(path) == {KEY_A: 1500, KEY_B: 148}
        front.device.peers[KEY_B].tx_bytes += 52
        front.discard_peer(KEY_B)  # a reload that found it gone from the file
        front.device.peers[KEY_A].rx_bytes += 1
        await trio.sleep(1.0)
        nursery.cancel_scope.cancel()  # SIGTERM: the last flush
    assert totals(path) == {KEY_A: 1501, KEY_B: 200}
