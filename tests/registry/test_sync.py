"""trivpn.registry.sync: the registry diff, the watcher under MockClock, and `wg set` kept."""

from __future__ import annotations

import datetime
import ipaddress
import itertools
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import attrs
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from support.fakes import make_front

from trivpn.config import (
    PEER_NAME,
    Config,
    Endpoint,
    InterfaceConfig,
    StateConfig,
    WireGuardPeerConfig,
)
from trivpn.dataplane.wireguard.front import WireGuardFront
from trivpn.dataplane.wireguard.peers import Outcome
from trivpn.dataplane.wireguard.uapi_target import PeerChange
from trivpn.proto import uapi
from trivpn.proto.wireguard import PeerConfig, crypto
from trivpn.registry.api import RegistryStore
from trivpn.registry.store import (
    AddressPlan,
    AddressUnavailable,
    LivePeer,
    PeerNotFound,
    Registry,
    RegistryError,
    RegistryPeer,
    RegistryUnreachable,
    Snapshot,
    registry_path,
)
from trivpn.registry.sync import (
    APPLY_SLICE,
    AddPeer,
    PeerSync,
    RemovePeer,
    UpdatePeer,
    diff,
    live_peer,
    registry_opener,
    usable,
    wg_names,
)

T = TypeVar("T")
addr = ipaddress.ip_address
net = ipaddress.ip_network
CREATED = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def public_key(seed: int) -> bytes:
    return crypto.public_key(crypto.clamp(bytes([seed]) * 32))


SERVER_PRIVATE = crypto.clamp(bytes([1]) * 32)
KEY_A, KEY_B, KEY_C, KEY_S = public_key(2), public_key(3), public_key(4), public_key(5)
PSK = bytes(range(32))


def rpeer(name: str, key: bytes, *addresses: str, psk: bytes | None = PSK) -> RegistryPeer:
    return RegistryPeer(
        name=name,
        public_key=key,
        preshared_key=psk,
        addresses=tuple(addr(a) for a in addresses),
        created_at=CREATED,
    )


def static(name: str, key: bytes, *allowed: str) -> WireGuardPeerConfig:
    return WireGuardPeerConfig(
        name=name, public_key=key, allowed_ips=tuple(net(a) for a in allowed)
    )


# --- the pure parts ---------------------------------------------------------------------


def test_diff_removes_then_updates_then_adds_and_leaves_the_rest() -> None:
    a, b, c = rpeer("a", KEY_A, "10.8.0.2"), rpeer("b", KEY_B, "10.8.0.3"), rpeer("c", KEY_C)
    b2 = rpeer("b", KEY_B, "10.8.0.4")
    assert diff([a, b], [b2, c]) == [RemovePeer(a), UpdatePeer(b, b2), AddPeer(c)]
    assert diff([a, b], [b, a]) == []
    assert diff([], [a]) == [AddPeer(a)]
    assert diff([a], []) == [RemovePeer(a)]


def test_static_peers_win_over_registry_peers() -> None:
    same_key = rpeer("x", KEY_S, "10.8.0.9")
    inside = rpeer("y", KEY_B, "10.8.0.20")
    same_route = attrs.evolve(rpeer("w", KEY_A), routes=(net("10.8.0.16/28"),))
    nested = attrs.evolve(rpeer("v", KEY_A), routes=(net("10.8.0.16/29"), net("10.0.0.0/8")))
    fine = rpeer("z", KEY_C, "10.8.0.40")
    kept, skipped = usable(
        [same_key, inside, same_route, nested, fine], [static("site", KEY_S, "10.8.0.16/28")]
    )
    assert kept == [nested, fine]  # routes may nest in a static peer's or around it
    assert [(s.peer.name, s.reason) for s in skipped] == [
        ("x", "static peer 'site' has its public key"),
        ("y", "10.8.0.20/32 is inside static peer 'site''s 10.8.0.16/28"),
        ("w", "10.8.0.16/28 is static peer 'site''s too"),
    ]


def test_live_peer_splits_addresses_from_routes() -> None:
    change = PeerChange(
        KEY_A,
        removed=False,
        preshared_key=PSK,
        allowed_ips=(net("fd00::5/128"), net("10.9.0.0/24"), net("10.8.0.5/32"), net("fd09::/64")),
        endpoint=("2001:db8::7", 51820),
        persistent_keepalive=25,
    )
    live = live_peer(change)
    assert live.addresses == (addr("10.8.0.5"), addr("fd00::5"))
    assert live.routes == (net("10.9.0.0/24"), net("fd09::/64"))
    assert str(live.endpoint) == "[2001:db8::7]:51820"
    assert (live.persistent_keepalive, live.preshared_key) == (25, PSK)


def test_wg_names() -> None:
    names = wg_names(bytes([0xFF]) * 32)  # base64 "////": "/" is not allowed in a name
    assert names[0] == "wg-________"
    assert all(PEER_NAME.fullmatch(n) for n in names)
    assert len(set(names)) == len(names)


# --- the watcher, with a fake registry and a real front (no TUN, no socket used) --------


class FakeRegistry:
    """In memory. ``commit_*`` are other processes' commits (they move data_version); the
    RegistryStore methods are our own connection's (they do not, as in SQLite)."""

    def __init__(self, *peers: RegistryPeer) -> None:
        self.peers = {p.public_key: p for p in peers}
        self.generation = 1
        self.version = 1
        self.snapshots = 0

    def commit(self, *, add: RegistryPeer | None = None, remove: bytes | None = None) -> None:
        if add is not None:
            self.peers[add.public_key] = add
        if remove is not None:
            del self.peers[remove]
        self.generation += 1
        self.version += 1

    def data_version(self) -> int:
        return self.version

    def snapshot(self) -> Snapshot:
        self.snapshots += 1
        return Snapshot(self.generation, tuple(sorted(self.peers.values(), key=lambda p: p.name)))

    def find(self, name: str) -> RegistryPeer | None:
        return next((p for p in self.peers.values() if p.name == name), None)

    def find_by_key(self, public_key: bytes) -> RegistryPeer | None:
        return self.peers.get(public_key)

    def add_live(self, name: str, peer: LivePeer, plan: AddressPlan) -> int:
        self.peers[peer.public_key] = RegistryPeer(
            name=name,
            public_key=peer.public_key,
            preshared_key=peer.preshared_key,
            addresses=peer.addresses,
            created_at=CREATED,
            routes=peer.routes,
            endpoint=peer.endpoint,
            persistent_keepalive=peer.persistent_keepalive,
        )
        self.generation += 1
        return self.generation

    def update_live(self, peer: LivePeer, plan: AddressPlan) -> int:
        return self.add_live(self.peers[peer.public_key].name, peer, plan)

    def remove_by_key(self, public_key: bytes) -> tuple[RegistryPeer, int] | None:
        peer = self.peers.pop(public_key, None)
        if peer is None:
            return None
        self.generation += 1
        return peer, self.generation

    def close(self) -> None:
        pass


async def inline(fn: Callable[[], T], /) -> T:
    """Runs the 'thread' work inline: deterministic under MockClock."""
    await trio.lowlevel.checkpoint()
    return fn()


CONFIG = Config(interface=InterfaceConfig(address=(ipaddress.ip_interface("10.8.0.1/24"),)))


def make_sync(
    front: WireGuardFront,
    registry: RegistryStore | None,
    statics: Sequence[WireGuardPeerConfig] = (),
) -> PeerSync:
    return PeerSync(
        front,
        lambda create: registry,
        statics,
        AddressPlan.from_config(CONFIG, front.device.public_key),
        run_sync=inline,
    )


@pytest.fixture
def mock_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def test_a_committed_change_is_applied_within_a_second(
    mock_clock: trio.testing.MockClock,
) -> None:
    registry = FakeRegistry(rpeer("alice", KEY_A, "10.8.0.2"))
    front = make_front()
    sync = make_sync(front, registry)
    async with trio.open_nursery() as nursery:
        await nursery.start(sync.run)
        assert front.device.peers[KEY_A].allowed_ips == (net("10.8.0.2/32"),)
        alice = front.device.peers[KEY_A]

        await trio.sleep(0.3)
        registry.commit(add=rpeer("bob", KEY_B, "10.8.0.3"))
        committed = trio.current_time()
        assert KEY_B not in front.device.peers  # not before the next poll
        while KEY_B not in front.device.peers:
            await trio.sleep(0.01)
        assert trio.current_time() - committed <= 1.0
        assert front.router.lookup_bytes(addr("10.8.0.3").packed) is not None
        assert front.device.peers[KEY_A] is alice  # alice was not touched
        nursery.cancel_scope.cancel()
    assert front.on_peer_change is None


async def test_a_poke_applies_a_commit_at_once_not_at_the_next_poll(
    mock_clock: trio.testing.MockClock,
) -> None:
    registry = FakeRegistry(rpeer("alice", KEY_A, "10.8.0.2"))
    front = make_front()
    sync = make_sync(front, registry)
    sync.poll_interval = 60.0
    async with trio.open_nursery() as nursery:
        await nursery.start(sync.run)
        await trio.sleep(1.0)
        registry.commit(add=rpeer("bob", KEY_B, "10.8.0.3"))
        await trio.sleep(1.0)
        assert KEY_B not in front.device.peers  # unpoked: not before the next poll
        poked = trio.current_time()
        sync.poke()
        while KEY_B not in front.device.peers:
            await trio.sleep(0.001)
        assert trio.current_time() - poked < 0.01
        registry.commit(remove=KEY_B)  # the watcher is back to its interval
        await trio.sleep(30.0)
        assert KEY_B in front.device.peers
        await trio.sleep(31.0)
        assert KEY_B not in front.device.peers
        nursery.cancel_scope.cancel()


async def test_a_removal_ends_the_peer_and_spares_the_others(
    mock_clock: trio.testing.MockClock,
) -> None:
    registry = FakeRegistry(rpeer("alice", KEY_A, "10.8.0.2"), rpeer("bob", KEY_B, "10.8.0.3"))
    front = make_front()
    sync = make_sync(front, registry)
    async with trio.open_nursery() as nursery:
        await nursery.start(sync.run)
        alice, bob = front.device.peers[KEY_A], front.device.peers[KEY_B]
        registry.commit(remove=KEY_B)
        await trio.sleep(1.0)
        assert KEY_B not in front.device.peers
        assert bob.removed  # its keys erased: its sessions are over
        assert front.router.lookup_bytes(addr("10.8.0.3").packed) is None
        assert front.device.peers[KEY_A] is alice and not alice.removed
        assert set(sync.applied) == {KEY_A}
        nursery.cancel_scope.cancel()


async def test_an_update_changes_routes_in_place(mock_clock: trio.testing.MockClock) -> None:
    registry = FakeRegistry(rpeer("alice", KEY_A, "10.8.0.2"))
    front = make_front()
    sync = make_sync(front, registry)
    async with trio.open_nursery() as nursery:
        await nursery.start(sync.run)
        alice = front.device.peers[KEY_A]
        registry.commit(add=rpeer("alice", KEY_A, "10.8.0.7"))  # same key, new address
        await trio.sleep(1.0)
        assert front.device.peers[KEY_A] is alice  # same session state, new route
        assert alice.allowed_ips == (net("10.8.0.7/32"),)
        assert front.router.lookup_bytes(addr("10.8.0.2").packed) is None
        nursery.cancel_scope.cancel()


async def test_nothing_happens_when_nothing_changed(mock_clock: trio.testing.MockClock) -> None:
    registry = FakeRegistry(rpeer("alice", KEY_A, "10.8.0.2"))
    front = make_front()
    sync = make_sync(front, registry)
    applied: list[bytes] = []
    real_apply = front.apply_peer_config

    def spy(config: object, *, keepalive: bool = True) -> str | None:
        applied.append(config.public_key)  # type: ignore[attr-defined]
        return real_apply(config, keepalive=keepalive)  # type: ignore[arg-type]

    async with trio.open_nursery() as nursery:
        await nursery.start(sync.run)
        front.apply_peer_config = spy  # type: ignore[method-assign]
        await trio.sleep(30)
        assert registry.snapshots == 1  # only the first read: data_version never moved
        assert applied == []
        nursery.cancel_scope.cancel()


async def test_static_peers_win_and_a_reload_can_free_a_registry_peer(
    mock_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    site = static("site", KEY_S, "10.8.0.2/32")
    registry = FakeRegistry(rpeer("alice", KEY_A, "10.8.0.2"))
    front = make_front(site)
    sync = make_sync(front, registry, [site])
    caplog.set_level(logging.WARNING)
    async with trio.open_nursery() as nursery:
        await nursery.start(sync.run)
        assert KEY_A not in front.device.peers
        assert front.device.peers[KEY_S].allowed_ips == (net("10.8.0.2/32"),)
        assert "registry peer 'alice' skipped: 10.8.0.2/32 is static peer 'site''s too" in (
            caplog.text
        )
        front.discard_peer(KEY_S)
        sync.set_static([], sync.plan)  # the static peer left the config file
        assert front.device.peers[KEY_A].allowed_ips == (net("10.8.0.2/32"),)
        nursery.cancel_scope.cancel()


def configure(key: bytes, *allowed: str) -> uapi.ConfigurePeer:
    return uapi.ConfigurePeer(
        public_key=key,
        preshared_key=PSK,
        replace_allowed_ips=True,
        allowed_ips=tuple(net(a) for a in allowed),
    )


async def test_wg_set_changes_are_kept_without_being_applied_again(
    mock_clock: trio.testing.MockClock,
) -> None:
    registry = FakeRegistry(rpeer("alice", KEY_A, "10.8.0.2"))
    front = make_front()
    sync = make_sync(front, registry)
    async with trio.open_nursery() as nursery:
        await nursery.start(sync.run)
        front.uapi_apply([configure(KEY_B, "10.8.0.3/32")])
        await trio.sleep(0.1)
        kept = registry.peers[KEY_B]
        assert kept.name == wg_names(KEY_B)[0] and kept.addresses == (addr("10.8.0.3"),)
        assert sync.generation == registry.generation and KEY_B in sync.applied
        bob = front.device.peers[KEY_B]

        front.uapi_apply([configure(KEY_B, "10.8.0.4/32")])
        await trio.sleep(0.1)
        assert registry.peers[KEY_B].addresses == (addr("10.8.0.4"),)
        front.uapi_apply([uapi.RemovePeer(KEY_A)])
        await trio.sleep(0.1)
        assert KEY_A not in registry.peers and set(sync.applied) == {KEY_B}
        assert registry.snapshots == 4  # the first, one after each own write: no re-read
        assert front.device.peers[KEY_B] is bob
        nursery.cancel_scope.cancel()


async def test_routes_endpoint_and_keepalive_set_through_wg_are_kept(
    mock_clock: trio.testing.MockClock,
) -> None:
    registry = FakeRegistry(rpeer("alice", KEY_A, "10.8.0.2"), rpeer("bob", KEY_B, "10.8.0.3"))
    front = make_front()
    sync = make_sync(front, registry)
    lan = net("192.168.50.0/24")
    async with trio.open_nursery() as nursery:
        await nursery.start(sync.run)
        front.uapi_apply(
            [
                uapi.ConfigurePeer(
                    KEY_A,
                    endpoint=("198.51.100.7", 4000),
                    persistent_keepalive=25,
                    allowed_ips=(lan,),
                )
            ]
        )
        await trio.sleep(0.1)
        alice = registry.peers[KEY_A]
        assert alice.routes == (lan,) and alice.addresses == (addr("10.8.0.2"),)
        assert (str(alice.endpoint), alice.persistent_keepalive) == ("198.51.100.7:4000", 25)

        # the network moves to bob: alice lost it, and the registry says so for both
        front.uapi_apply([uapi.ConfigurePeer(KEY_B, allowed_ips=(lan,))])
        await trio.sleep(0.1)
        assert registry.peers[KEY_A].routes == () and registry.peers[KEY_B].routes == (lan,)

        # another process changes alice's preshared key: her roamed endpoint and the
        # keepalive stay as they are live (the registry did not change them)
        live = front.device.peers[KEY_A]
        live.endpoint = ("198.51.100.8", 4001)
        registry.commit(add=attrs.evolve(registry.peers[KEY_A], preshared_key=None))
        await trio.sleep(1.0)  # a poll
        live = front.device.peers[KEY_A]
        assert live.config.preshared_key is None
        assert (live.endpoint, live.persistent_keepalive) == (("198.51.100.8", 4001), 25)
        nursery.cancel_scope.cancel()


async def test_a_foreign_commit_between_own_writes_is_applied_once(
    mock_clock: trio.testing.MockClock,
) -> None:
    registry = FakeRegistry()
    front = make_front()
    sync = make_sync(front, registry)
    async with trio.open_nursery() as nursery:
        await nursery.start(sync.run)
        registry.commit(add=rpeer("carol", KEY_C, "10.8.0.5"))  # not yet polled
        front.uapi_apply([configure(KEY_B, "10.8.0.3/32")])
        await trio.sleep(1.0)
        assert set(front.device.peers) == {KEY_B, KEY_C}
        assert set(sync.applied) == {KEY_B, KEY_C}
        assert sync.generation == registry.generation
        nursery.cancel_scope.cancel()


async def test_a_static_peer_removed_through_wg_stays_out_of_the_registry(
    mock_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    site = static("site", KEY_S, "10.8.0.16/28")
    registry = FakeRegistry()
    front = make_front(site)
    sync = make_sync(front, registry, [site])
    async with trio.open_nursery() as nursery:
        await nursery.start(sync.run)
        front.uapi_apply([uapi.RemovePeer(KEY_S)])
        await trio.sleep(0.1)
        assert registry.peers == {} and registry.generation == 1
        assert "static peer 'site' removed through wg: until a restart, or a reload" in caplog.text
        nursery.cancel_scope.cancel()


# --- with the real SQLite registry --------------------------------------------------------


def test_registry_additions(tmp_path: Path) -> None:
    plan = AddressPlan.from_config(CONFIG)
    with Registry.open(registry_path(tmp_path)) as reg:
        g = reg.add_live("wg-x", LivePeer(KEY_A, None, (addr("10.8.0.9"),)), plan)
        assert g == reg.generation()
        found = reg.find_by_key(KEY_A)
        assert found is not None and found.addresses == (addr("10.8.0.9"),)
        with pytest.raises(AddressUnavailable):
            reg.add_live("wg-y", LivePeer(KEY_B, None, (addr("10.8.0.9"),)), plan)
        with pytest.raises(AddressUnavailable):
            reg.add_live("wg-y", LivePeer(KEY_B, None, (addr("10.9.0.1"),)), plan)
        site = LivePeer(
            KEY_A,
            PSK,
            (addr("10.8.0.10"), addr("10.8.0.11")),
            (net("192.168.50.0/24"), net("fd50::/64")),
            Endpoint("203.0.113.9", 51820),
            25,
        )
        g2 = reg.update_live(site, plan)
        assert g2 == g + 1
        found = reg.find_by_key(KEY_A)
        assert found is not None and site.same_as(found)
        assert found.allowed_ips[-2:] == (net("192.168.50.0/24"), net("fd50::/64"))
        # a route has one owner; an address is not a route; the ToyVPN pool is not for routes
        for routes in (
            (net("192.168.50.0/24"),),
            (net("10.9.9.9/32"),),
            (net("10.8.0.0/16"),),
        ):
            with pytest.raises(AddressUnavailable):
                reg.add_live("wg-y", LivePeer(KEY_B, None, (), routes), plan)
        nested = LivePeer(KEY_B, None, (), (net("192.168.50.128/25"), net("192.168.0.0/16")))
        reg.add_live("wg-y", nested, plan)  # nesting is fine: the longest prefix wins
        with pytest.raises(PeerNotFound):
            reg.update_live(LivePeer(KEY_C, None, ()), plan)
        removed = reg.remove_by_key(KEY_A)
        assert removed is not None and removed[0].name == "wg-x" and removed[1] == g2 + 2
        assert reg.remove_by_key(KEY_A) is None and reg.generation() == g2 + 2


async def test_another_process_adding_to_the_real_registry(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    front = make_front()
    sync = PeerSync(
        front,
        registry_opener(StateConfig(dir=tmp_path)),  # no file yet: made by the first `peer add`
        (),
        AddressPlan.from_config(CONFIG, front.device.public_key),
        run_sync=inline,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(sync.run)
        assert not registry_path(tmp_path).exists()
        plan = AddressPlan.from_config(CONFIG)
        with Registry.open(registry_path(tmp_path)) as other:  # `trivpn peer add`
            other.add("alice", KEY_A, PSK, plan)
            await trio.sleep(1.0)
            assert front.device.peers[KEY_A].allowed_ips == (net("10.8.0.2/32"),)
            front.uapi_apply([configure(KEY_B, "10.8.0.3/32")])
            await trio.sleep(0.1)
            kept = other.find_by_key(KEY_B)
            assert kept is not None and kept.addresses == (addr("10.8.0.3"),)
            # bob takes alice's address live: the registry frees it from her first
            front.uapi_apply([uapi.ConfigurePeer(KEY_B, allowed_ips=(net("10.8.0.2/32"),))])
            await trio.sleep(0.1)
            moved = other.find_by_key(KEY_B), other.find("alice")
            assert moved[0] is not None and moved[0].addresses == (
                addr("10.8.0.2"),
                addr("10.8.0.3"),
            )
            assert moved[1] is not None and moved[1].addresses == ()
            other.remove("alice")
            await trio.sleep(1.0)
            assert set(front.device.peers) == {KEY_B}
        nursery.cancel_scope.cancel()


async def test_the_first_wg_set_creates_the_registry_and_is_not_applied_again(
    mock_clock: trio.testing.MockClock,
) -> None:
    registry = FakeRegistry()  # generation 1, no peers: as a new file
    created: list[bool] = []

    def opener(create: bool) -> RegistryStore | None:
        if create:
            created.append(True)
        return registry if created else None

    front = make_front()
    sync = PeerSync(
        front,
        opener,
        (),
        AddressPlan.from_config(CONFIG, front.device.public_key),
        run_sync=inline,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(sync.run)
        assert sync.generation is None
        front.uapi_apply([configure(KEY_B, "10.8.0.3/32")])
        await trio.sleep(2.0)
        assert created == [True]
        assert sync.generation == 2 and set(sync.applied) == {KEY_B}
        assert registry.snapshots == 1  # the one read with the write: no re-read
        assert front.device.peers[KEY_B].name == wg_names(KEY_B)[0]
        nursery.cancel_scope.cancel()


async def test_a_failing_registry_is_logged_and_retried_never_fatal(
    mock_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    class Flaky(FakeRegistry):
        failures = 3

        def data_version(self) -> int:
            if self.failures:
                self.failures -= 1
                raise RegistryError("peers.db: database disk image is malformed")
            return super().data_version()

    registry = Flaky(rpeer("alice", KEY_A, "10.8.0.2"))
    front = make_front()
    sync = make_sync(front, registry)
    async with trio.open_nursery() as nursery:
        await nursery.start(sync.run)
        assert KEY_A not in front.device.peers
        await trio.sleep(2.0)
        assert front.device.peers[KEY_A].allowed_ips == (net("10.8.0.2/32"),)
        warnings = [r for r in caplog.records if "database disk image" in r.getMessage()]
        assert len(warnings) == 1  # rate-limited
        nursery.cancel_scope.cancel()


async def test_an_unreachable_database_is_logged_once_and_its_end_once(
    mock_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    class Down(FakeRegistry):
        down = False

        def data_version(self) -> int:
            if self.down:
                raise RegistryUnreachable("db on host: cannot connect: connection refused")
            return super().data_version()

    caplog.set_level(logging.INFO, logger="trivpn")
    registry = Down(rpeer("alice", KEY_A, "10.8.0.2"))
    front = make_front()
    sync = make_sync(front, registry)
    async with trio.open_nursery() as nursery:
        await nursery.start(sync.run)
        registry.down = True
        await trio.sleep(600.0)  # ten minutes of polls, every one failing
        assert front.device.peers[KEY_A].allowed_ips == (net("10.8.0.2/32"),)  # still served
        registry.down = False
        registry.commit(remove=KEY_A)  # committed while it was unreachable
        await trio.sleep(1.0)
        assert KEY_A not in front.device.peers
        lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("registry:")]
        assert lines == [
            "registry: unreachable (db on host: cannot connect: connection refused); serving "
            "the peers last known, keeping the usage counted until it is back",
            "registry: reachable again after 600 s; catching up",
        ]
        nursery.cancel_scope.cancel()


async def test_many_registry_changes_are_applied_in_slices(
    mock_clock: trio.testing.MockClock,
) -> None:
    """1,000 new peers: APPLY_SLICE at a time, another task running between slices; a reload
    in the middle (a reconcile of its own) leaves the rest to be diffed anew, none twice."""
    many = [
        rpeer(
            f"p{i}",
            crypto.public_key(crypto.clamp(i.to_bytes(4, "little") * 8)),
            str(ipaddress.IPv4Address(0x0A080000 + 10 + i)),
        )
        for i in range(1000)
    ]
    registry = FakeRegistry()
    front = make_front()
    sync = make_sync(front, registry)
    sync.plan = AddressPlan(subnets=(net("10.8.0.0/16"),))
    added: list[int] = []  # peers the front has, at each turn of the other task
    reloaded = False
    applied_calls = 0
    apply = front.apply_peer_config

    def counting_apply(config: PeerConfig, **options: Any) -> Outcome:
        nonlocal applied_calls
        applied_calls += 1
        return apply(config, **options)

    front.apply_peer_config = counting_apply  # type: ignore[method-assign]

    async def other() -> None:
        nonlocal reloaded
        while len(front.device.peers) < len(many) and not sync_done.is_set():
            added.append(len(front.device.peers))
            if not reloaded and len(front.device.peers) >= 500:
                sync.set_static((), sync.plan)  # a SIGHUP reload meanwhile
                reloaded = True
            await trio.sleep(0)

    for peer in many:
        registry.peers[peer.public_key] = peer
    registry.commit()
    sync_done = trio.Event()  # ends `other` also if the sync fails to add them all
    async with trio.open_nursery() as nursery:
        nursery.start_soon(other)
        await sync.poll()
        sync_done.set()
    assert sorted(front.device.peers) == sorted(p.public_key for p in many)
    assert sync.applied == {p.public_key: p for p in many}
    steps = [b - a for a, b in itertools.pairwise(added)]
    # the other task ran between any two slices (trio runs it before or after the sync in
    # each batch of runnable tasks, so two slices can meet across a batch boundary)
    assert max(steps) <= 2 * APPLY_SLICE
    assert len(added) >= len(many) // APPLY_SLICE // 2
    assert reloaded
    assert applied_calls == len(many)  # none applied twice


def overlap_model(
    networks: Sequence[ipaddress.IPv4Network], static: Sequence[WireGuardPeerConfig]
) -> str | None:
    """The plain walk over every static network that the index replaced."""
    for network in networks:
        for other in static:
            for theirs in other.allowed_ips:
                if network == theirs:
                    return f"{network} is static peer {other.name!r}'s too"
                if network.num_addresses == 1 and network.network_address in theirs:
                    return f"{network} is inside static peer {other.name!r}'s {theirs}"
    return None


small_networks = st.builds(
    lambda a, p: ipaddress.IPv4Network((a, p), strict=False),
    st.integers(0x0A080000, 0x0A08000F),
    st.integers(28, 32),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.lists(small_networks, min_size=1, max_size=3), max_size=4),
    st.lists(small_networks, min_size=1, max_size=3),
)
def test_static_clashes_are_found_as_a_walk_would(
    statics: list[list[ipaddress.IPv4Network]], networks: list[ipaddress.IPv4Network]
) -> None:
    static_peers = [
        WireGuardPeerConfig(name=f"s{i}", public_key=public_key(10 + i), allowed_ips=tuple(nets))
        for i, nets in enumerate(statics)
    ]
    peer = RegistryPeer(
        name="r",
        public_key=KEY_A,
        preshared_key=None,
        addresses=(),
        created_at=CREATED,
        routes=tuple(dict.fromkeys(networks)),
    )
    kept, skipped = usable([peer], static_peers)
    expected = overlap_model(peer.allowed_ips, static_peers)
    assert [s.reason for s in skipped] == ([] if expected is None else [expected])
    assert kept == ([peer] if expected is None else [])
