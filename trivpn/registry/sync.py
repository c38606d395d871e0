"""The running server follows the peer registry, and keeps `wg set` changes in it.

Two directions, one registry connection (calls serialised, each in a worker thread so that the
data plane never waits on the database):

- registry -> front: every ``POLL_INTERVAL`` the watcher asks `Registry.data_version` (no I/O
  when nothing changed); when it moved, it reads a `Snapshot` and applies the difference
  between the registry peers it applied before and the new ones (`diff`). Peers not in the
  difference are not touched, so their sessions go on. A peer's policy (enabled, expires)
  travels with it: a `trivpn peer disable` blocks it within about ``POLL_INTERVAL``. A
  PostgreSQL registry pushes its commits (trivpn.registry.pg_listen calls `poke`), so there
  the poll is a slow fallback (``PUSHED_POLL_INTERVAL``, `poll_interval`).
- the database server unreachable (`RegistryUnreachable`): the front keeps the peers last
  applied, the outage is logged once and its end once (`Outage`), and the first read that
  gets through applies whatever was committed meanwhile.
- front -> registry: a `wg set` that added, changed or removed peers reports them
  (`WireGuardFront.on_peer_change`); the persister writes them to the registry.
- the usage keeper (trivpn.registry.usage_sync) works on the same connection, through
  `with_registry` (so its commits are not taken for another process's), and is told by
  ``on_foreign_commit`` when the watcher saw another process's commit.

Our own commits do not move our connection's data_version, and a write that is the only
change since the applied generation is taken as applied (the front has it already); when
another process committed in between, the watcher re-reads and applies the difference,
which is idempotent against the front's state.

Static (config file) peers win over registry peers with the same key, one of their networks
or an address inside one: those are skipped with a warning (`usable`). Networks may nest
otherwise, as in WireGuard (the longest prefix wins). A `wg set` on a static peer lasts until a
restart or until a reload finds that peer changed in the file; the file is its only record.
"""

from __future__ import annotations

import base64
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Final, Protocol, TypeVar

import attrs
import trio

from trivpn.config import Endpoint, StateConfig, WireGuardPeerConfig, by_version
from trivpn.dataplane.loglimit import LogLimiter
from trivpn.dataplane.wireguard.peers import peer_config
from trivpn.dataplane.wireguard.uapi_target import PeerChange, PeerChangeHandler
from trivpn.proto.ip import IPNetwork
from trivpn.proto.policy import Policy
from trivpn.proto.wireguard import PeerConfig, peer_label
from trivpn.registry.api import RegistryStore
from trivpn.registry.opener import open_registry
from trivpn.registry.outage import Outage
from trivpn.registry.store import (
    AddressPlan,
    LivePeer,
    RegistryError,
    RegistryPeer,
    RegistryUnreachable,
    Snapshot,
)

log = logging.getLogger("trivpn")

# A registry starts at generation 1 with no peers: having applied "no registry" is having
# applied generation 1.
FIRST_GENERATION: Final = 1
POLL_INTERVAL: Final = 0.5  # s: a committed change is applied within about this long
# s: with changes pushed (PostgreSQL's NOTIFY, trivpn.registry.pg_listen) the poll is only
# the fallback for a notification lost with the listening connection
PUSHED_POLL_INTERVAL: Final = 10.0
APPLY_SLICE: Final = 16  # registry changes applied to the front between two checkpoints
NAME_PREFIX: Final = "wg-"  # registry names of peers added through `wg set`

T = TypeVar("T")


# --- the difference between two sets of registry peers (pure) -----------------------------


@attrs.frozen
class AddPeer:
    peer: RegistryPeer


@attrs.frozen
class RemovePeer:
    peer: RegistryPeer


@attrs.frozen
class UpdatePeer:
    old: RegistryPeer
    new: RegistryPeer


Operation = AddPeer | RemovePeer | UpdatePeer


def diff(old: Iterable[RegistryPeer], new: Iterable[RegistryPeer]) -> list[Operation]:
    """What turns the peers ``old`` into ``new``, matched by public key: removals first (they
    free addresses an added peer may take), then updates, then additions."""
    before = {p.public_key: p for p in old}
    after = {p.public_key: p for p in new}
    removed: list[Operation] = [RemovePeer(p) for k, p in before.items() if k not in after]
    updated: list[Operation] = [
        UpdatePeer(before[k], p) for k, p in after.items() if k in before and before[k] != p
    ]
    added: list[Operation] = [AddPeer(p) for k, p in after.items() if k not in before]
    return removed + updated + added


@attrs.frozen
class Skipped:
    peer: RegistryPeer
    reason: str


def usable(
    peers: Iterable[RegistryPeer], static: Sequence[WireGuardPeerConfig]
) -> tuple[list[RegistryPeer], list[Skipped]]:
    """The registry peers that do not clash with a static peer, and the ones that do."""
    kept: list[RegistryPeer] = []
    skipped: list[Skipped] = []
    by_key = {s.public_key: s for s in static}
    networks = _StaticNetworks(static)
    for peer in peers:
        same_key = by_key.get(peer.public_key)
        if same_key is not None:
            skipped.append(Skipped(peer, f"static peer {same_key.name!r} has its public key"))
            continue
        clash = networks.clash(peer.allowed_ips)
        if clash is not None:
            skipped.append(Skipped(peer, clash))
            continue
        kept.append(peer)
    return kept, skipped


class _StaticNetworks:
    """The static peers' networks, indexed: a registry network is looked up, not compared
    with each (10,000 registry peers against 5,000 static ones held the loop for seconds)."""

    def __init__(self, static: Sequence[WireGuardPeerConfig]) -> None:
        # network -> (its place in the config, its peer's name): the first place wins
        self._owner: dict[IPNetwork, tuple[int, str | None]] = {}
        pairs = ((peer.name, net) for peer in static for net in peer.allowed_ips)
        for place, (name, network) in enumerate(pairs):
            self._owner.setdefault(network, (place, name))
        self._prefixes = {
            version: sorted({n.prefixlen for n in self._owner if n.version == version})
            for version in (4, 6)
        }

    def clash(self, networks: Sequence[IPNetwork]) -> str | None:
        """A registry network a static peer has, or a registry address inside a static
        network (`trivpn peer add` never hands those out; the config file may have changed
        since); of several, the first static network in the config is named."""
        for network in networks:
            if network.num_addresses != 1:
                found = self._owner.get(network)
                if found is not None:
                    return f"{network} is static peer {found[1]!r}'s too"
                continue
            best: tuple[tuple[int, str | None], IPNetwork] | None = None
            for prefixlen in self._prefixes[network.version]:
                if prefixlen > network.prefixlen:
                    continue
                theirs = network.supernet(new_prefix=prefixlen)
                found = self._owner.get(theirs)
                if found is not None and (best is None or found[0] < best[0][0]):
                    best = (found, theirs)
            if best is not None:
                (_, name), theirs = best
                if theirs == network:
                    return f"{network} is static peer {name!r}'s too"
                return f"{network} is inside static peer {name!r}'s {theirs}"
        return None


def live_peer(change: PeerChange) -> LivePeer:
    """A peer as a `wg set` left it, as the registry keeps it: host routes (/32, /128) are
    its addresses, wider networks its routes."""
    hosts = [n.network_address for n in change.allowed_ips if n.num_addresses == 1]
    routes = [n for n in change.allowed_ips if n.num_addresses != 1]
    endpoint = None if change.endpoint is None else Endpoint(*change.endpoint)
    return LivePeer(
        change.public_key,
        change.preshared_key,
        tuple(sorted(hosts, key=by_version)),
        tuple(sorted(routes, key=by_version)),
        endpoint,
        change.persistent_keepalive,
    )


def wg_names(public_key: bytes) -> list[str]:
    """Registry names for a peer added through `wg set`, shortest first: url-safe base64,
    since a peer name has no "+" or "/"."""
    text = base64.urlsafe_b64encode(public_key).decode().rstrip("=")
    return [NAME_PREFIX + text[:n] for n in (8, 12, 16, 43)]


# --- the two ends, as protocols (the unit tests use fakes): the registry's is
# trivpn.registry.api.RegistryStore, the front's ------------------------------------------


class FrontLike(Protocol):
    on_peer_change: PeerChangeHandler | None

    def apply_peer_config(
        self, config: PeerConfig, *, keepalive: bool = True, policy: Policy | None = None
    ) -> str | None: ...
    def discard_peer(self, public_key: bytes) -> bool: ...
    def rename_peer(self, public_key: bytes, name: str) -> None: ...


# (create) -> the registry, or None when it does not exist and not `create`
Opener = Callable[[bool], RegistryStore | None]


class ThreadRunner(Protocol):
    """Runs a blocking call off the trio thread (trio.to_thread; the tests run it inline)."""

    def __call__(self, fn: Callable[[], T], /) -> Awaitable[T]: ...


def poll_interval(state: StateConfig) -> float:
    """How often the server polls the registry of this config: a PostgreSQL registry pushes
    its changes, a SQLite file does not."""
    return POLL_INTERVAL if state.database is None else PUSHED_POLL_INTERVAL


def registry_opener(state: StateConfig) -> Opener:
    """The registry of this config ([state]); a SQLite file is made by the first `trivpn peer
    add` or kept `wg set`."""

    def open_state_registry(create: bool) -> RegistryStore | None:
        return open_registry(state, create=create, any_thread=True)

    return open_state_registry


@attrs.frozen
class Written:
    """What the persister did with one change (computed in the worker thread)."""

    outcome: str  # "added", "updated", "removed", "unchanged", "absent"
    name: str = ""
    generation: int | None = None  # the one our write committed
    snapshot: Snapshot | None = None  # read right after it


class _Store:
    """The database end. Its methods run in worker threads, one at a time."""

    def __init__(self, opener: Opener) -> None:
        self._open = opener
        self._registry: RegistryStore | None = None
        self._data_version: int | None = None

    def read_if_changed(self, force: bool) -> Snapshot | None:
        """A snapshot if the registry changed since the last one (or `force`), else None."""
        registry = self._registry or self._opened(create=False)
        if registry is None:
            return None
        version = registry.data_version()
        if version == self._data_version and not force:
            return None
        self._data_version = version
        return registry.snapshot()

    def write(self, change: PeerChange, plan: AddressPlan) -> Written:
        registry = self._registry
        if registry is None:
            registry = self._opened(create=not change.removed)
            if registry is None:
                return Written("absent")
            # whatever others committed before is caught by the generation check instead
            self._data_version = registry.data_version()
        key = change.public_key
        if change.removed:
            removed = registry.remove_by_key(key)
            if removed is None:
                return Written("absent")
            peer, generation = removed
            return Written("removed", peer.name, generation, registry.snapshot())
        live = live_peer(change)
        existing = registry.find_by_key(key)
        if existing is not None:
            if live.same_as(existing):
                return Written("unchanged", existing.name)
            generation = registry.update_live(live, plan)
            return Written("updated", existing.name, generation, registry.snapshot())
        name = next((n for n in wg_names(key) if registry.find(n) is None), wg_names(key)[-1])
        generation = registry.add_live(name, live, plan)
        return Written("added", name, generation, registry.snapshot())

    def call(self, fn: Callable[[RegistryStore], T], *, create: bool, close: bool) -> T | None:
        """``fn`` on the registry (opened, or made with ``create``); None: there is none."""
        try:
            registry = self._registry or self._opened(create=create)
            return None if registry is None else fn(registry)
        finally:
            if close:
                self.close()

    def _opened(self, *, create: bool) -> RegistryStore | None:
        self._registry = self._open(create)
        return self._registry

    def close(self) -> None:
        if self._registry is not None:
            self._registry.close()
            self._registry = None


class _SerialThreads:
    """trio.to_thread, one call at a time: the calls share one registry connection."""

    def __init__(self) -> None:
        self._limiter = trio.CapacityLimiter(1)

    async def __call__(self, fn: Callable[[], T], /) -> T:
        return await trio.to_thread.run_sync(fn, limiter=self._limiter)


class PeerSync:
    """Keeps the front's registry peers equal to the registry's (less the clashing ones)."""

    def __init__(
        self,
        front: FrontLike,
        opener: Opener,
        static: Sequence[WireGuardPeerConfig],
        plan: AddressPlan,
        *,
        poll_interval: float = POLL_INTERVAL,
        run_sync: ThreadRunner | None = None,
    ) -> None:
        self.front = front
        self.static = tuple(static)
        self.plan = plan
        self.poll_interval = poll_interval
        self.applied: dict[bytes, RegistryPeer] = {}  # the registry peers the front has
        self.generation: int | None = None  # the registry generation `applied` reflects
        self._store = _Store(opener)
        self._snapshot: Snapshot | None = None
        self._skipped: set[tuple[bytes, str]] = set()  # warned about already
        self._force_read = False
        self._poked = trio.Event()
        self._reconciles = 0  # reconciles begun: one in slices sees another ran meanwhile
        self._limiter = LogLimiter(log, interval=60.0)  # a broken file: not a line per poll
        self._run_sync: ThreadRunner = run_sync or _SerialThreads()
        self.outage = Outage()  # the database server unreachable: logged once, and its end
        self._changes_in, self._changes_out = trio.open_memory_channel[Sequence[PeerChange]](
            math.inf
        )
        # told (must not block) after the watcher read what another process committed
        self.on_foreign_commit: Callable[[], None] | None = None

    # -- the task ------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Apply the registry's peers, then follow it and keep `wg set` changes, until
        cancelled."""
        self.front.on_peer_change = self._queue
        try:
            await self.poll()
            task_status.started()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch)
                nursery.start_soon(self._persist_loop)
        finally:
            self.front.on_peer_change = None
            with trio.CancelScope(shield=True):  # after a call the usage keeper has under way
                await self._run_sync(self._store.close)

    async def _watch(self) -> None:
        while True:
            with trio.move_on_after(self.poll_interval):
                await self._poked.wait()
            self._poked = trio.Event()
            await self.poll()

    def poke(self) -> None:
        """Poll now rather than at the next interval: this process (the web admin) committed
        a change, and the operator waits to see it applied. A poke during a poll makes one
        more right after it, which sees the commit."""
        self._poked.set()

    async def _db(self, fn: Callable[[], T]) -> T:
        """``fn`` in the database thread; an unreachable server starts an outage, any call
        that gets through ends it."""
        try:
            result = await self._run_sync(fn)
        except RegistryUnreachable as e:
            self.outage.failed(e)
            raise
        self.outage.succeeded()
        return result

    async def poll(self) -> None:
        """Read the registry if it changed and apply the difference; errors are logged."""
        force, self._force_read = self._force_read, False
        try:
            snapshot = await self._db(lambda: self._store.read_if_changed(force))
        except RegistryUnreachable:
            self._force_read = True  # logged by the outage; read in full when it is back
            return
        except RegistryError as e:
            self._force_read = True  # the connection may be fine again next time
            self._limiter.warning(
                "registry_read", trio.current_time(), "peersync: reading the registry: %s", e
            )
            return
        except Exception:  # a surprise from the database must not end the server
            self._force_read = True
            log.exception("peersync: reading the peer registry failed")
            return
        if snapshot is None:
            return
        if snapshot.generation != self.generation:
            self._snapshot = snapshot
            self.generation = snapshot.generation
            await self._reconcile_in_slices()
        if self.on_foreign_commit is not None:
            self.on_foreign_commit()  # a `peer reset-usage` moves no peer, say

    async def with_registry(
        self, fn: Callable[[RegistryStore], T], *, create: bool = False, close: bool = False
    ) -> T | None:
        """``fn(registry)`` in the database thread, on this sync's connection, after any call
        under way; None when there is no registry (and not ``create``). ``close``: the
        connection is closed afterwards (the last call at shutdown: the watcher's own clean-up
        may have run already)."""
        return await self._db(lambda: self._store.call(fn, create=create, close=close))

    def set_static(self, static: Sequence[WireGuardPeerConfig], plan: AddressPlan) -> None:
        """New static peers (a reload): registry peers they now clash with leave the front,
        ones no longer blocked join it."""
        self.static = tuple(static)
        self.plan = plan
        self._skipped.clear()
        self._reconcile()

    # -- registry -> front ---------------------------------------------------------------

    def _wanted(self) -> list[RegistryPeer]:
        if self._snapshot is None:
            return []
        kept, skipped = usable(self._snapshot.peers, self.static)
        for s in skipped:
            if (s.peer.public_key, s.reason) not in self._skipped:
                self._skipped.add((s.peer.public_key, s.reason))
                log.warning("peersync: registry peer %r skipped: %s", s.peer.name, s.reason)
        return kept

    def _reconcile(self) -> None:
        self._reconciles += 1  # a reconcile in slices that is under way must diff anew
        for op in diff(self.applied.values(), self._wanted()):
            self._apply_logged(op)

    async def _reconcile_in_slices(self) -> None:
        """:meth:`_reconcile`, APPLY_SLICE operations at a time with a checkpoint between:
        10,000 new peers are seconds of work that forwarding must not wait for. A reconcile
        that ran meanwhile (a reload) has changed what is applied, so the rest is diffed anew."""
        while True:
            self._reconciles += 1
            mine = self._reconciles
            for i, op in enumerate(diff(self.applied.values(), self._wanted()), 1):
                self._apply_logged(op)
                if i % APPLY_SLICE == 0:
                    await trio.sleep(0)
                    if self._reconciles != mine:
                        break
            else:
                return

    def _apply_logged(self, op: Operation) -> None:
        try:
            self._apply(op)
        except Exception:  # one bad peer must not stop the others
            log.exception("peersync: applying a registry change failed")

    def _apply(self, op: Operation) -> None:
        if isinstance(op, RemovePeer):
            del self.applied[op.peer.public_key]
            if self.front.discard_peer(op.peer.public_key):
                log.info("peersync: peer %r removed (registry); its sessions end", op.peer.name)
            return
        peer = op.peer if isinstance(op, AddPeer) else op.new
        self.applied.pop(peer.public_key, None)  # until the front has taken it
        config = peer_config(peer.to_peer_config())
        keepalive = True
        if isinstance(op, UpdatePeer):
            # what the registry did not change stays as it is live: the endpoint the peer
            # has roamed to since, say
            if op.old.endpoint == op.new.endpoint:
                config = attrs.evolve(config, endpoint=None)
            keepalive = op.old.persistent_keepalive != op.new.persistent_keepalive
        done = self.front.apply_peer_config(config, keepalive=keepalive, policy=peer.policy)
        self.applied[peer.public_key] = peer
        if done is not None:
            log.info(
                "peersync: peer %r %s (registry: %s)",
                peer.name,
                done,
                ", ".join(map(str, peer.addresses)) or "no addresses",
            )

    # -- front -> registry ---------------------------------------------------------------

    def _queue(self, changes: Sequence[PeerChange]) -> None:
        self._changes_in.send_nowait(tuple(changes))  # unbounded: never blocks the caller

    async def _persist_loop(self) -> None:
        async for changes in self._changes_out:
            for change in changes:
                await self.persist(change)

    async def persist(self, change: PeerChange) -> None:
        """Keep one `wg set` change in the registry; a refusal is logged, never raised."""
        label = peer_label(change.public_key)
        static = next((s for s in self.static if s.public_key == change.public_key), None)
        if static is not None:
            what = "removed" if change.removed else "changed"
            log.warning(
                "peersync: static peer %r %s through wg: until a restart, or a reload that "
                "finds it changed in the config file (edit the file to keep it)",
                static.name,
                what,
            )
            return
        plan = self.plan
        try:
            written = await self._db(lambda: self._store.write(change, plan))
        except RegistryError as e:
            log.warning("peersync: peer %s: the `wg set` change is not kept: %s", label, e)
            return
        except Exception:
            log.exception("peersync: peer %s: the `wg set` change is not kept", label)
            return
        if written.outcome in ("absent", "unchanged"):
            return
        where = "from" if written.outcome == "removed" else "in"
        log.info(
            "peersync: peer %s %s %s the registry: %r", label, written.outcome, where, written.name
        )
        if not change.removed:
            self.front.rename_peer(change.public_key, written.name)
        self._took_own_write(written)

    def _took_own_write(self, written: Written) -> None:
        snapshot = written.snapshot
        applied = FIRST_GENERATION if self.generation is None else self.generation
        own_only = (
            snapshot is not None
            and written.generation == applied + 1
            and snapshot.generation == written.generation
        )
        if not own_only:
            # another process committed too: the watcher applies it all (idempotently)
            self._force_read = True
            return
        assert snapshot is not None
        self._snapshot = snapshot
        self.generation = snapshot.generation
        # the front made this change itself: record it as applied, apply nothing
        self.applied = {p.public_key: p for p in self._wanted()}
        self._reconciles += 1  # what is applied changed under a reconcile in slices
