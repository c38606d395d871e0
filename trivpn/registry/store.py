"""The peer registry: WireGuard peers added at runtime (`trivpn peer add`), kept in SQLite.

One database file, ``peers.db`` in the state directory (``[state] dir``), in WAL mode so that
readers (the server, `peer list`) never block a writer. Every change is one ``BEGIN IMMEDIATE``
transaction: the write lock is taken before anything is read, so two `peer add` runs at the
same moment are serialised and the second sees the first's address as taken; the UNIQUE
constraint on addresses would refuse a duplicate even if that reasoning were wrong. A process
killed mid-change leaves its transaction uncommitted, and SQLite rolls it back on the next open.

Only public keys and preshared keys are stored. A client's private key never reaches this
file: a lost client config cannot be shown again (see the README, "Peers").

The checks of a new peer, the address choice and the usage upsert are module functions that
the PostgreSQL store (trivpn.registry.pg_store) shares; trivpn.registry.opener picks the store.

For the server: `Registry.snapshot` reads every peer and the change counter in one read
transaction; `Registry.generation` (one row) or the cheaper `Registry.data_version` (no I/O
when nothing changed) tell a poller whether a new snapshot is worth reading.

Schema versions, each reached from the one before by a function in ``_MIGRATIONS``; a new
file runs them all, so the upgrade path is the path every database takes:

1. ``peers(name, public_key, preshared_key, address, created_at)``: one IPv4 address each.
2. addresses in their own table (IPv4 and IPv6, one row each, UNIQUE) and a change counter.
3. what a `wg set` can give a peer besides host addresses: routed networks (``routes``, one
   owner each, e.g. a site's LAN behind the peer), an endpoint and a persistent keepalive.
4. the peer's policy (trivpn.proto.policy): ``enabled`` (0 or 1) and ``expires``, ISO 8601
   text in UTC with a Z (``2027-02-01T00:00:00Z``) or NULL for never: readable in `sqlite3`,
   ordered as text, and what a PostgreSQL ``timestamptz`` column reads as it is.
5. the rest of the policy: ``quota_bytes`` and ``quota_period`` (both NULL: no quota),
   ``rate_down`` and ``rate_up`` (bits per second, NULL: unlimited); and ``usage``, one row
   per public key (registry and static peers alike, so no foreign key) as
   trivpn.proto.usage.UsageRecord holds it: lifetime bytes each way, and each period's
   first day (ISO date; '' for none yet) beside its bytes. Writers add deltas in SQL
   (`Registry.add_usage`), never totals, so concurrent writers add up.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import sqlite3
import stat
import time
from collections.abc import Callable, Container, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import attrs

from trivpn.config import (
    PEER_NAME,
    PEER_NAME_ALLOWED,
    Config,
    Endpoint,
    WireGuardPeerConfig,
    by_version,
)
from trivpn.proto.ip import IPAddress, IPNetwork
from trivpn.proto.periods import CALENDAR_PERIODS, QuotaPeriod, period_key
from trivpn.proto.policy import ACTIVE_POLICY, Policy, Quota, format_expires
from trivpn.proto.usage import NO_USAGE, PeriodCount, UsageDelta, UsageRecord
from trivpn.proto.wireguard import curve25519, keys
from trivpn.registry.sessions import Session

DB_NAME: Final = "peers.db"
SCHEMA_VERSION: Final = 5
DEFAULT_TIMEOUT: Final = 10.0  # seconds to wait for another writer before giving up
_OPEN_RETRY_SECONDS: Final = 0.02


class RegistryError(Exception):
    """The registry refused a change or cannot be used; the message says why in one line."""


class PeerExists(RegistryError):
    pass


class PeerNotFound(RegistryError):
    pass


class AddressUnavailable(RegistryError):
    """An address was asked for that is taken, reserved or outside the interface subnets."""


class AddressesExhausted(RegistryError):
    pass


class RegistryBusy(RegistryError):
    """Another process held the write lock for longer than the timeout."""


class RegistryUnreachable(RegistryError):
    """The registry's database server cannot be reached (down, or the network to it): an
    outage that the next call may find over, not a refusal."""


@attrs.frozen(kw_only=True)
class RegistryPeer:
    name: str
    public_key: bytes
    preshared_key: bytes | None = attrs.field(repr=False)
    addresses: tuple[IPAddress, ...]  # host addresses, IPv4 before IPv6
    created_at: datetime.datetime  # UTC
    routes: tuple[IPNetwork, ...] = ()  # networks behind the peer, IPv4 before IPv6
    endpoint: Endpoint | None = None
    persistent_keepalive: int | None = None
    policy: Policy = ACTIVE_POLICY

    @property
    def allowed_ips(self) -> tuple[IPNetwork, ...]:
        return tuple(ipaddress.ip_network(a) for a in self.addresses) + self.routes

    def to_peer_config(self) -> WireGuardPeerConfig:
        """The peer as the server takes its static peers."""
        return WireGuardPeerConfig(
            name=self.name,
            public_key=self.public_key,
            allowed_ips=self.allowed_ips,
            preshared_key=self.preshared_key,
            endpoint=self.endpoint,
            persistent_keepalive=self.persistent_keepalive,
            enabled=self.policy.enabled,
            expires=self.policy.expires,
            quota=self.policy.quota,
            rate_down=self.policy.rate_down,
            rate_up=self.policy.rate_up,
        )


@attrs.frozen
class LivePeer:
    """A peer as a `wg set` made it live, to keep as it is: exactly these host addresses (none
    allocated; any number, even none), routes, preshared key, endpoint and keepalive."""

    public_key: bytes
    preshared_key: bytes | None = attrs.field(repr=False)
    addresses: tuple[IPAddress, ...]
    routes: tuple[IPNetwork, ...] = ()
    endpoint: Endpoint | None = None
    persistent_keepalive: int | None = None

    def same_as(self, peer: RegistryPeer) -> bool:
        """Whether the registry has ``peer`` exactly so already."""
        return (
            self.addresses,
            self.routes,
            self.preshared_key,
            self.endpoint,
            self.persistent_keepalive,
        ) == (
            peer.addresses,
            peer.routes,
            peer.preshared_key,
            peer.endpoint,
            peer.persistent_keepalive,
        )


@attrs.frozen
class Snapshot:
    generation: int  # bumped by every committed change
    peers: tuple[RegistryPeer, ...]  # by name


@attrs.frozen(kw_only=True)
class AddressPlan:
    """Where new peers' addresses come from, and what else the registry must not hand out."""

    subnets: tuple[IPNetwork, ...]  # the interface subnets, in config order
    reserved: tuple[IPNetwork, ...] = ()  # never allocated, never accepted
    static_networks: frozenset[IPNetwork] = frozenset()  # the static peers' (never a route)
    pools: tuple[IPNetwork, ...] = ()  # handed out dynamically: a route must not overlap one
    reserved_names: frozenset[str] = frozenset()  # the static peers'
    reserved_keys: frozenset[bytes] = frozenset()  # the static peers' and the server's own

    @classmethod
    def from_config(cls, cfg: Config, server_public_key: bytes | None = None) -> AddressPlan:
        """The interface subnets, less the server's own addresses, the static peers'
        allowed_ips and the ToyVPN pool (even while ToyVPN is off: turning it on later must
        not find registry peers inside it)."""
        reserved: list[IPNetwork] = [ipaddress.ip_network(a.ip) for a in cfg.interface.address]
        reserved += [net for peer in cfg.wireguard.peers for net in peer.allowed_ips]
        reserved.append(cfg.toyvpn.pool)
        static_keys = {peer.public_key for peer in cfg.wireguard.peers}
        if server_public_key is not None:
            static_keys.add(server_public_key)
        return cls(
            subnets=cfg.interface.subnets,
            reserved=tuple(reserved),
            static_networks=frozenset(
                net for peer in cfg.wireguard.peers for net in peer.allowed_ips
            ),
            pools=(cfg.toyvpn.pool,),
            reserved_names=frozenset(peer.name for peer in cfg.wireguard.peers),
            reserved_keys=frozenset(static_keys),
        )

    def check(self, address: IPAddress) -> None:
        """Refuse an address a peer cannot be given (AddressUnavailable)."""
        subnets = [s for s in self.subnets if address in s]
        if not subnets:
            inside = ", ".join(map(str, self.subnets))
            raise AddressUnavailable(f"{address} is outside the interface subnets ({inside})")
        if not any(_is_host(address, s) for s in subnets):
            raise AddressUnavailable(f"{address} is the network or broadcast address of its subnet")
        for net in self.reserved:
            if address in net:
                raise AddressUnavailable(
                    f"{address} is reserved ({net}: the server, a static peer or the ToyVPN pool)"
                )

    def check_route(self, network: IPNetwork) -> None:
        """Refuse a network a peer cannot route (AddressUnavailable). Routes may nest in
        others (the longest prefix wins, as in WireGuard) but not repeat a static peer's."""
        if network.num_addresses == 1:
            raise AddressUnavailable(f"{network} is a host address, not a route")
        if network in self.static_networks:
            raise AddressUnavailable(f"{network} is a static peer's (the config file)")
        for pool in self.pools:
            if network.overlaps(pool):
                raise AddressUnavailable(f"{network} overlaps the ToyVPN pool {pool}")

    def free(
        self,
        version: int,
        taken: Container[IPAddress],
        floors: dict[IPNetwork, int] | None = None,
    ) -> IPAddress | None:
        """The lowest host address of the first subnet of that IP version with one free.

        ``floors``, kept by a caller across calls with this plan while ``taken`` only grows
        (or its floors are lowered for what it lost): per subnet, an address below which every
        host is taken or reserved. The walk starts there and moves it up, so handing out n
        addresses one by one walks each address once, not n times."""
        for subnet in self.subnets:
            if subnet.version != version:
                continue
            first, last = _host_range(subnet)
            candidate = first if floors is None else max(first, floors.get(subnet, first))
            while candidate <= last:
                address: IPAddress = (
                    ipaddress.IPv4Address(candidate)
                    if version == 4
                    else ipaddress.IPv6Address(candidate)
                )
                blocking = next((n for n in self.reserved if address in n), None)
                if blocking is not None:  # jump past it: a reserved /80 must not take 2**48 steps
                    candidate = int(blocking.broadcast_address) + 1
                elif address in taken:
                    candidate += 1
                else:
                    if floors is not None:
                        floors[subnet] = candidate
                    return address
            if floors is not None:
                floors[subnet] = candidate
        return None


@attrs.define
class _Allocated:
    """The addresses handed out, kept between adds by one connection so that an add neither
    reads nor parses every stored address: valid while the database's ``data_version`` (moved
    by other connections' commits only) stays what it was when they were read, and while
    this connection's own changes are applied to it (an add) or drop it (any other)."""

    data_version: int
    taken: set[IPAddress]
    floors: dict[AddressPlan, dict[IPNetwork, int]] = attrs.Factory(dict)


def _host_range(subnet: IPNetwork) -> tuple[int, int]:
    """The first and last host address of `subnet` as integers (as `subnet.hosts()`)."""
    first, last = int(subnet.network_address), int(subnet.broadcast_address)
    if subnet.num_addresses <= 2:  # /31, /32, /127, /128: every address is a host
        return first, last
    return first + 1, (last - 1 if subnet.version == 4 else last)


def _is_host(address: IPAddress, subnet: IPNetwork) -> bool:
    if subnet.num_addresses <= 2:  # /31, /32, /127, /128: every address is a host
        return True
    if address == subnet.network_address:
        return False
    return not (subnet.version == 4 and address == subnet.broadcast_address)


def registry_path(state_dir: Path) -> Path:
    return state_dir / DB_NAME


# --- schema ---------------------------------------------------------------------------------


def _migrate_to_1(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE peers (
            name TEXT PRIMARY KEY,
            public_key TEXT NOT NULL UNIQUE,
            preshared_key TEXT,
            address TEXT NOT NULL UNIQUE,
            created_at TEXT NOT NULL
        )"""
    )


def _migrate_to_2(db: sqlite3.Connection) -> None:
    # Keys stay wg's base64 text, so `sqlite3 peers.db` shows what `wg show` shows.
    db.execute(
        """CREATE TABLE peers_v2 (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            public_key TEXT NOT NULL UNIQUE,
            preshared_key TEXT,
            created_at TEXT NOT NULL
        )"""
    )
    db.execute(
        """CREATE TABLE addresses (
            address TEXT PRIMARY KEY,
            peer_id INTEGER NOT NULL REFERENCES peers_v2(id) ON DELETE CASCADE
        )"""
    )
    db.execute("CREATE INDEX addresses_by_peer ON addresses(peer_id)")
    db.execute(
        "INSERT INTO peers_v2 (name, public_key, preshared_key, created_at) "
        "SELECT name, public_key, preshared_key, created_at FROM peers ORDER BY rowid"
    )
    db.execute(
        "INSERT INTO addresses (address, peer_id) "
        "SELECT p.address, n.id FROM peers p JOIN peers_v2 n ON n.name = p.name"
    )
    db.execute("DROP TABLE peers")
    db.execute("ALTER TABLE peers_v2 RENAME TO peers")  # rewrites the REFERENCES clause too
    db.execute("CREATE TABLE changes (generation INTEGER NOT NULL)")
    db.execute("INSERT INTO changes (generation) VALUES (1)")


def _migrate_to_3(db: sqlite3.Connection) -> None:
    db.execute("ALTER TABLE peers ADD COLUMN endpoint TEXT")  # host:port, [v6]:port
    db.execute("ALTER TABLE peers ADD COLUMN persistent_keepalive INTEGER")  # seconds
    db.execute(
        """CREATE TABLE routes (
            network TEXT PRIMARY KEY,
            peer_id INTEGER NOT NULL REFERENCES peers(id) ON DELETE CASCADE
        )"""
    )
    db.execute("CREATE INDEX routes_by_peer ON routes(peer_id)")


def _migrate_to_4(db: sqlite3.Connection) -> None:
    db.execute("ALTER TABLE peers ADD COLUMN enabled INTEGER NOT NULL DEFAULT 1")
    db.execute("ALTER TABLE peers ADD COLUMN expires TEXT")  # ISO 8601, UTC, Z; NULL: never


def _migrate_to_5(db: sqlite3.Connection) -> None:
    db.execute("ALTER TABLE peers ADD COLUMN quota_bytes INTEGER")
    db.execute("ALTER TABLE peers ADD COLUMN quota_period TEXT")  # day, week, month, total
    db.execute("ALTER TABLE peers ADD COLUMN rate_down INTEGER")  # bits per second
    db.execute("ALTER TABLE peers ADD COLUMN rate_up INTEGER")
    db.execute(
        """CREATE TABLE usage (
            public_key TEXT PRIMARY KEY,
            lifetime_rx INTEGER NOT NULL,
            lifetime_tx INTEGER NOT NULL,
            day_start TEXT NOT NULL,
            day_bytes INTEGER NOT NULL,
            week_start TEXT NOT NULL,
            week_bytes INTEGER NOT NULL,
            month_start TEXT NOT NULL,
            month_bytes INTEGER NOT NULL,
            total_bytes INTEGER NOT NULL,
            resets INTEGER NOT NULL,
            updated_at TEXT NOT NULL
        )"""
    )


# _MIGRATIONS[n] takes a database at version n to version n + 1
_MIGRATIONS: Final[Sequence[Callable[[sqlite3.Connection], None]]] = (
    _migrate_to_1,
    _migrate_to_2,
    _migrate_to_3,
    _migrate_to_4,
    _migrate_to_5,
)
assert len(_MIGRATIONS) == SCHEMA_VERSION


# --- the registry ---------------------------------------------------------------------------


class Registry:
    """One connection to the registry database. Not shared between threads."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self._db = db
        self.path = path
        self._allocated: _Allocated | None = None

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        create: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
        any_thread: bool = False,
    ) -> Registry:
        """Open (with `create`, make: directory 0700, file 0600) and migrate the database.

        `any_thread`: the caller serialises its calls but makes them from worker threads
        that change (trio.to_thread), so SQLite's same-thread check must be off.

        Raises RegistryError for a file that is missing (without `create`), unreadable, not
        a database, or from a newer trivpn."""
        if create:
            _create_private(path)
        elif not path.exists():
            raise RegistryError(f"{path}: no peer registry (no peer was ever added)")
        try:
            db = sqlite3.connect(
                path, timeout=timeout, isolation_level=None, check_same_thread=not any_thread
            )
        except sqlite3.Error as e:
            raise RegistryError(f"{path}: cannot open the peer registry: {e}") from e
        registry = cls(db, path)
        try:
            registry._prepare(timeout)
        except BaseException:
            db.close()
            raise
        return registry

    def _prepare(self, timeout: float) -> None:
        """WAL mode, the pragmas, the migrations. Several processes opening a new file at
        once can meet SQLite's deadlock guard while it switches to WAL: it answers "locked"
        at once instead of waiting, so a busy answer is retried here until ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with _errors(self.path):
                    self._db.execute("PRAGMA journal_mode = WAL")
                    # FULL: a commit survives a power cut too, not only a crashed process
                    self._db.execute("PRAGMA synchronous = FULL")
                    self._db.execute("PRAGMA foreign_keys = ON")
                    self._migrate()
                return
            except RegistryBusy:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(_OPEN_RETRY_SECONDS)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reading ----------------------------------------------------------------------------

    @property
    def schema_version(self) -> int:
        with _errors(self.path):
            return _version(self._db)

    def data_version(self) -> int:
        """Changes whenever another connection commits (SQLite's PRAGMA data_version): the
        cheapest way for a long-lived poller to see that it should look again."""
        with _errors(self.path):
            (value,) = self._db.execute("PRAGMA data_version").fetchone()
        return int(value)

    def generation(self) -> int:
        """A counter bumped by every committed change, whichever process made it."""
        with _errors(self.path):
            return _generation(self._db)

    def snapshot(self) -> Snapshot:
        """Every peer and the generation they belong to, read in one transaction."""
        with _errors(self.path), self._transaction("BEGIN"):
            return Snapshot(_generation(self._db), tuple(self._peers()))

    def peers(self) -> list[RegistryPeer]:
        return list(self.snapshot().peers)

    def sessions(self) -> list[Session]:
        """None: one gateway's file is no fleet (trivpn.registry.fleet needs PostgreSQL)."""
        return []

    def find(self, name: str) -> RegistryPeer | None:
        with _errors(self.path), self._transaction("BEGIN"):
            found = self._peers("WHERE p.name = ?", (name,))
        return found[0] if found else None

    def _peers(self, where: str = "", args: tuple[object, ...] = ()) -> list[RegistryPeer]:
        """The peers matching ``where`` (on ``peers p``), by name; call inside a transaction."""
        rows = self._db.execute(
            "SELECT id, name, public_key, preshared_key, created_at, endpoint, "
            "persistent_keepalive, enabled, expires, quota_bytes, quota_period, rate_down, "
            f"rate_up FROM peers p {where} ORDER BY name",
            args,
        ).fetchall()
        addresses: dict[int, list[IPAddress]] = {row[0]: [] for row in rows}
        routes: dict[int, list[IPNetwork]] = {row[0]: [] for row in rows}
        for peer_id, address in self._db.execute(
            "SELECT a.peer_id, a.address FROM addresses a "
            f"JOIN peers p ON p.id = a.peer_id {where}",
            args,
        ):
            addresses[peer_id].append(ipaddress.ip_address(address))
        for peer_id, network in self._db.execute(
            f"SELECT r.peer_id, r.network FROM routes r JOIN peers p ON p.id = r.peer_id {where}",
            args,
        ):
            routes[peer_id].append(ipaddress.ip_network(network))
        return [
            RegistryPeer(
                name=name,
                public_key=keys.parse_key(public_key),
                preshared_key=None if psk is None else keys.parse_key(psk),
                addresses=tuple(sorted(addresses[peer_id], key=by_version)),
                created_at=datetime.datetime.fromisoformat(created_at),
                routes=tuple(sorted(routes[peer_id], key=by_version)),
                endpoint=None if endpoint is None else Endpoint.parse(endpoint),
                persistent_keepalive=keepalive,
                policy=policy_of(*policy),
            )
            for (
                peer_id,
                name,
                public_key,
                psk,
                created_at,
                endpoint,
                keepalive,
                *policy,
            ) in rows
        ]

    # --- changing ---------------------------------------------------------------------------

    def add(
        self,
        name: str,
        public_key: bytes,
        preshared_key: bytes | None,
        plan: AddressPlan,
        *,
        addresses: Sequence[IPAddress] = (),
        routes: Sequence[IPNetwork] = (),
        policy: Policy = ACTIVE_POLICY,
    ) -> RegistryPeer:
        """Register a peer in one transaction. It gets `addresses`, and for each IP version
        of the interface subnets that `addresses` lacks, the next free address of that
        version; and `routes`, networks behind it. Raises PeerExists, AddressUnavailable,
        AddressesExhausted, RegistryBusy."""
        check_new_peer(name, public_key, preshared_key, plan, addresses)
        for network in routes:
            plan.check_route(network)
        with _errors(self.path), self._transaction("BEGIN IMMEDIATE"):
            self._refuse_duplicate(name, public_key)
            self._refuse_taken(LivePeer(public_key, None, (), tuple(routes)))
            allocated = self._allocated_now()
            taken = allocated.taken
            chosen = choose_addresses(plan, addresses, taken, allocated.floors.setdefault(plan, {}))
            peer = new_peer(name, public_key, preshared_key, chosen, routes, policy, now_utc())
            peer_id = self._insert_peer(name, public_key, preshared_key, peer.created_at)
            self._store_live(peer_id, LivePeer(public_key, None, peer.addresses, peer.routes))
            self._store_policy(peer_id, policy)
            self._bump_generation()
        # committed: what this connection knows of the addresses stays current
        taken.update(peer.addresses)
        self._allocated = allocated
        return peer

    def remove(self, name: str) -> RegistryPeer:
        """Delete a peer and its addresses in one transaction; they are free once it commits."""
        with _errors(self.path), self._transaction("BEGIN IMMEDIATE"):
            found = self._peers("WHERE p.name = ?", (name,))
            if not found:
                raise PeerNotFound(f"no peer named {name!r} in the registry")
            self._delete_peer("name = ?", name)
            self._bump_generation()
        return found[0]

    def update_policy(
        self, name: str, change: Callable[[Policy], Policy]
    ) -> tuple[RegistryPeer, RegistryPeer]:
        """Give the peer ``name`` the policy ``change`` makes of its current one, in one
        transaction (so two `peer set` runs changing different settings both count). Returns
        the peer before and after; nothing is committed when the policy stays the same.
        Raises PeerNotFound, RegistryBusy; what ``change`` raises passes through."""
        with _errors(self.path), self._transaction("BEGIN IMMEDIATE"):
            found = self._peers("WHERE p.name = ?", (name,))
            if not found:
                raise PeerNotFound(f"no peer named {name!r} in the registry")
            (old,) = found
            new = attrs.evolve(old, policy=change(old.policy))
            if new.policy != old.policy:
                (peer_id,) = self._db.execute(
                    "SELECT id FROM peers WHERE name = ?", (name,)
                ).fetchone()
                self._store_policy(int(peer_id), new.policy)
                self._bump_generation()
        return old, new

    def _store_policy(self, peer_id: int, policy: Policy) -> None:
        quota = policy.quota
        self._db.execute(
            "UPDATE peers SET enabled = ?, expires = ?, quota_bytes = ?, quota_period = ?, "
            "rate_down = ?, rate_up = ? WHERE id = ?",
            (
                int(policy.enabled),
                format_expires(policy.expires),
                None if quota is None else quota.bytes,
                None if quota is None else str(quota.period),
                policy.rate_down,
                policy.rate_up,
                peer_id,
            ),
        )

    # --- usage (trivpn.proto.usage) ---------------------------------------------------------

    def usage_records(self, public_keys: Iterable[bytes] | None = None) -> dict[bytes, UsageRecord]:
        """The stored usage of these peers (None: of every key with a row); a key without a
        row is left out (it counts from NO_USAGE)."""
        with _errors(self.path), self._transaction("BEGIN"):
            if public_keys is None:
                rows = self._db.execute(f"SELECT {USAGE_COLUMNS} FROM usage").fetchall()
            else:
                rows = self._usage_rows([keys.encode_key(k) for k in public_keys])
        return {keys.parse_key(row[0]): usage_record(row[1:]) for row in rows}

    def _usage_rows(self, encoded: Sequence[str]) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = []
        for i in range(0, len(encoded), KEYS_PER_QUERY):
            chunk = encoded[i : i + KEYS_PER_QUERY]
            rows += self._db.execute(
                f"SELECT {USAGE_COLUMNS} FROM usage "
                f"WHERE public_key IN ({', '.join('?' * len(chunk))})",
                chunk,
            ).fetchall()
        return rows

    def add_usage(self, deltas: Sequence[UsageDelta], wallclock: float) -> dict[bytes, UsageRecord]:
        """Add each delta (bytes counted at ``wallclock``) to its key's row in one
        transaction, as `UsageRecord.added` would, but in SQL: a concurrent writer's deltas
        add up instead of being overwritten, a stored period never goes back, and what a
        writer counted before a reset it had not seen stays out of the periods. Returns the
        rows after, for every key given. Not a peer change: the generation stays (other
        connections' data_version moves, as with any commit)."""
        rows = usage_params(deltas, wallclock)
        if not deltas:
            return {}
        encoded = [keys.encode_key(d.public_key) for d in deltas]
        with _errors(self.path), self._transaction("BEGIN IMMEDIATE"):
            self._db.executemany(_ADD_USAGE, rows)
            found = self._usage_rows(encoded)
        after = {keys.parse_key(row[0]): usage_record(row[1:]) for row in found}
        return {d.public_key: after.get(d.public_key, NO_USAGE) for d in deltas}

    def reset_usage(self, name: str) -> RegistryPeer:
        """Zero the periods of registry peer ``name``'s usage (the lifetime counters stay),
        and bump the generation so that a running server reloads it. Raises PeerNotFound."""
        with _errors(self.path), self._transaction("BEGIN IMMEDIATE"):
            found = self._peers("WHERE p.name = ?", (name,))
            if not found:
                raise PeerNotFound(f"no peer named {name!r} in the registry")
            self._reset_usage(found[0].public_key)
        return found[0]

    def reset_key_usage(self, public_key: bytes) -> None:
        """`reset_usage` of a peer by its public key: a static peer's (the config file's)."""
        with _errors(self.path), self._transaction("BEGIN IMMEDIATE"):
            self._reset_usage(public_key)

    def _reset_usage(self, public_key: bytes) -> None:
        # A row even for a key with none yet: its resets count tells a server with bytes
        # pending that they were counted before the reset.
        self._db.execute(
            f"INSERT INTO usage ({USAGE_COLUMNS}, updated_at) "
            "VALUES (?, 0, 0, '', 0, '', 0, '', 0, 0, 1, strftime('%Y-%m-%dT%H:%M:%SZ')) "
            "ON CONFLICT (public_key) DO UPDATE SET day_start = '', day_bytes = 0, "
            "week_start = '', week_bytes = 0, month_start = '', month_bytes = 0, "
            "total_bytes = 0, resets = resets + 1, updated_at = excluded.updated_at",
            (keys.encode_key(public_key),),
        )
        self._bump_generation()

    # --- changes made through `wg set` on the running server -------------------------------

    def find_by_key(self, public_key: bytes) -> RegistryPeer | None:
        with _errors(self.path), self._transaction("BEGIN"):
            found = self._peers("WHERE p.public_key = ?", (keys.encode_key(public_key),))
        return found[0] if found else None

    def add_live(self, name: str, peer: LivePeer, plan: AddressPlan) -> int:
        """Register `peer` as `name` exactly as it is: what `wg set peer K allowed-ips A …`
        made live. Returns the generation it committed."""
        check_identity(name, peer.public_key, peer.preshared_key, plan)
        check_live(plan, peer)
        with _errors(self.path), self._transaction("BEGIN IMMEDIATE"):
            self._refuse_duplicate(name, peer.public_key)
            self._refuse_taken(peer)
            created = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
            peer_id = self._insert_peer(name, peer.public_key, peer.preshared_key, created)
            self._store_live(peer_id, peer)
            self._bump_generation()
            return _generation(self._db)

    def update_live(self, peer: LivePeer, plan: AddressPlan) -> int:
        """Replace everything but the name of the peer with `peer.public_key`, in one
        transaction. Returns the generation it committed. Raises PeerNotFound,
        AddressUnavailable, RegistryBusy."""
        check_live(plan, peer)
        encoded = keys.encode_key(peer.public_key)
        with _errors(self.path), self._transaction("BEGIN IMMEDIATE"):
            row = self._db.execute("SELECT id FROM peers WHERE public_key = ?", (encoded,))
            found = row.fetchone()
            if found is None:
                raise PeerNotFound("no peer with that public key in the registry")
            peer_id = int(found[0])
            self._refuse_taken(peer)
            self._db.execute("DELETE FROM addresses WHERE peer_id = ?", (peer_id,))
            self._db.execute("DELETE FROM routes WHERE peer_id = ?", (peer_id,))
            psk = peer.preshared_key
            self._db.execute(
                "UPDATE peers SET preshared_key = ? WHERE id = ?",
                (None if psk is None else keys.encode_key(psk), peer_id),
            )
            self._store_live(peer_id, peer)
            self._bump_generation()
            return _generation(self._db)

    def _store_live(self, peer_id: int, peer: LivePeer) -> None:
        """The addresses, routes, endpoint and keepalive of a peer whose old ones are gone."""
        self._insert_addresses(peer_id, peer.addresses)
        self._db.executemany(
            "INSERT INTO routes (network, peer_id) VALUES (?, ?)",
            [(str(n), peer_id) for n in peer.routes],
        )
        self._db.execute(
            "UPDATE peers SET endpoint = ?, persistent_keepalive = ? WHERE id = ?",
            (
                None if peer.endpoint is None else str(peer.endpoint),
                peer.persistent_keepalive,
                peer_id,
            ),
        )

    def _delete_peer(self, where: str, value: str) -> None:
        # explicit, though ON DELETE CASCADE would do it: the row, its addresses and its
        # routes go in the same transaction either way
        peer_id = f"(SELECT id FROM peers WHERE {where})"
        self._db.execute(
            f"DELETE FROM usage WHERE public_key = (SELECT public_key FROM peers WHERE {where})",
            (value,),
        )
        self._db.execute(f"DELETE FROM addresses WHERE peer_id = {peer_id}", (value,))
        self._db.execute(f"DELETE FROM routes WHERE peer_id = {peer_id}", (value,))
        self._db.execute(f"DELETE FROM peers WHERE {where}", (value,))

    def remove_by_key(self, public_key: bytes) -> tuple[RegistryPeer, int] | None:
        """Delete the peer with `public_key`; the deleted peer and the generation committed,
        or None (and nothing committed) when no peer has that key."""
        encoded = keys.encode_key(public_key)
        with _errors(self.path), self._transaction("BEGIN IMMEDIATE"):
            found = self._peers("WHERE p.public_key = ?", (encoded,))
            if not found:
                return None
            self._delete_peer("public_key = ?", encoded)
            self._bump_generation()
            return found[0], _generation(self._db)

    def _refuse_taken(self, peer: LivePeer) -> None:
        refuse_taken(peer, self._taken_by)

    def _taken_by(self, table: str, value: IPAddress | IPNetwork, key: str) -> str | None:
        """The name of another peer than ``key``'s holding ``value`` in ``table``."""
        column = "address" if table == "addresses" else "network"
        row = self._db.execute(
            f"SELECT p.name FROM {table} t JOIN peers p ON p.id = t.peer_id "
            f"WHERE t.{column} = ? AND p.public_key != ?",
            (str(value), key),
        ).fetchone()
        return None if row is None else str(row[0])

    def _refuse_duplicate(self, name: str, public_key: bytes) -> None:
        row = self._db.execute(
            "SELECT name FROM peers WHERE name = ? OR public_key = ?",
            (name, keys.encode_key(public_key)),
        ).fetchone()
        refuse_duplicate(name, None if row is None else str(row[0]))

    def _allocated_now(self) -> _Allocated:
        """The addresses taken, as kept since this connection last read them unless another
        connection committed since; call inside a write transaction."""
        (version,) = self._db.execute("PRAGMA data_version").fetchone()
        allocated = self._allocated
        if allocated is None or allocated.data_version != version:
            rows = self._db.execute("SELECT address FROM addresses").fetchall()
            taken = {ipaddress.ip_address(address) for (address,) in rows}
            allocated = _Allocated(int(version), taken)
        return allocated

    def _insert_peer(
        self, name: str, public_key: bytes, psk: bytes | None, created: datetime.datetime
    ) -> int:
        cursor = self._db.execute(
            "INSERT INTO peers (name, public_key, preshared_key, created_at) VALUES (?, ?, ?, ?)",
            (
                name,
                keys.encode_key(public_key),
                None if psk is None else keys.encode_key(psk),
                created.isoformat(),
            ),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def _insert_addresses(self, peer_id: int, addresses: Iterable[IPAddress]) -> None:
        self._db.executemany(
            "INSERT INTO addresses (address, peer_id) VALUES (?, ?)",
            [(str(a), peer_id) for a in addresses],
        )

    def _bump_generation(self) -> None:
        self._allocated = None  # a change of this connection's: add alone keeps it current
        self._db.execute("UPDATE changes SET generation = generation + 1")

    def _migrate(self) -> None:
        # a plain read first: opening a current file must not wait for another writer
        if self._checked_version() == SCHEMA_VERSION:
            return
        with self._transaction("BEGIN IMMEDIATE"):
            version = self._checked_version()  # again: another process may have migrated it
            if version == SCHEMA_VERSION:
                return
            if version == 0:
                self._db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
                self._db.execute("INSERT INTO schema_version (version) VALUES (0)")
            for migrate in _MIGRATIONS[version:]:
                migrate(self._db)
            self._db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))
            problems = self._db.execute("PRAGMA foreign_key_check").fetchall()
            if problems:
                raise RegistryError(f"{self.path}: migration left dangling rows: {problems}")

    def _checked_version(self) -> int:
        version = _version(self._db)
        if version > SCHEMA_VERSION:
            raise RegistryError(
                f"{self.path}: schema version {version} is newer than this trivpn "
                f"understands ({SCHEMA_VERSION}); upgrade trivpn"
            )
        return version

    @contextmanager
    def _transaction(self, begin: str) -> Iterator[None]:
        self._db.execute(begin)
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")


def choose_addresses(
    plan: AddressPlan,
    addresses: Sequence[IPAddress],
    taken: set[IPAddress],
    floors: dict[IPNetwork, int] | None = None,
    claim: Callable[[IPAddress], bool] | None = None,
) -> tuple[IPAddress, ...]:
    """`addresses`, and for each IP version of the plan's subnets they lack, the next free
    address of that version (see `AddressPlan.free`), IPv4 first. ``claim``, when given,
    takes each address in the database and says whether it got it; one it did not get (a
    concurrent writer's) is added to ``taken``, and the next free one is tried. Raises
    AddressUnavailable for a given address that is taken, AddressesExhausted."""
    for address in addresses:
        if address in taken or (claim is not None and not claim(address)):
            raise AddressUnavailable(f"{address} is taken by another peer")
    chosen = list(addresses)
    for version in sorted({s.version for s in plan.subnets} - {a.version for a in chosen}):
        while True:
            free = plan.free(version, taken, floors)
            if free is None:
                raise AddressesExhausted(
                    f"no free IPv{version} address left in the interface subnets"
                )
            if claim is None or claim(free):
                break
            taken.add(free)
        chosen.append(free)
    return tuple(sorted(chosen, key=by_version))


def now_utc() -> datetime.datetime:
    """A peer's creation time: UTC, whole seconds."""
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def new_peer(
    name: str,
    public_key: bytes,
    preshared_key: bytes | None,
    addresses: tuple[IPAddress, ...],
    routes: Sequence[IPNetwork],
    policy: Policy,
    created: datetime.datetime,
) -> RegistryPeer:
    """The peer `add` registers."""
    return RegistryPeer(
        name=name,
        public_key=public_key,
        preshared_key=preshared_key,
        addresses=addresses,
        created_at=created,
        routes=tuple(sorted(set(routes), key=by_version)),
        policy=policy,
    )


# (table, value, the asking peer's encoded key) -> the name of another peer holding value
TakenBy = Callable[[str, IPAddress | IPNetwork, str], str | None]


def refuse_taken(peer: LivePeer, taken_by: TakenBy) -> None:
    """AddressUnavailable if another peer has one of `peer`'s addresses or routes."""
    key = keys.encode_key(peer.public_key)
    for table, values in (("addresses", peer.addresses), ("routes", peer.routes)):
        for value in values:
            holder = taken_by(table, value, key)
            if holder is not None:
                raise AddressUnavailable(f"{value} is taken by peer {holder!r}")


def refuse_duplicate(name: str, found: str | None) -> None:
    """PeerExists when ``found``, the peer with this name or the new peer's key, exists."""
    if found is None:
        return
    if found == name:
        raise PeerExists(f"a peer named {name!r} exists already")
    raise PeerExists(f"peer {found!r} has this public key already; one peer per key")


def check_new_peer(
    name: str,
    public_key: bytes,
    preshared_key: bytes | None,
    plan: AddressPlan,
    addresses: Sequence[IPAddress],
) -> None:
    check_identity(name, public_key, preshared_key, plan)
    versions = [a.version for a in addresses]
    if len(set(versions)) != len(versions):
        raise AddressUnavailable("at most one IPv4 and one IPv6 address per peer")
    for address in addresses:
        plan.check(address)


def check_identity(
    name: str, public_key: bytes, preshared_key: bytes | None, plan: AddressPlan
) -> None:
    """The name and the keys of a new peer, whichever way its addresses come."""
    if not PEER_NAME.fullmatch(name):
        raise RegistryError(f"name {name!r}: {PEER_NAME_ALLOWED}")
    if name in plan.reserved_names:
        raise PeerExists(f"a peer named {name!r} is in the config file (wireguard.peers)")
    if len(public_key) != curve25519.KEY_LEN or (
        preshared_key is not None and len(preshared_key) != curve25519.KEY_LEN
    ):
        raise RegistryError(f"keys are {curve25519.KEY_LEN} bytes")
    if public_key in plan.reserved_keys:
        raise PeerExists(
            "this public key is the server's own or a peer's in the config file (wireguard.peers)"
        )


def check_live(plan: AddressPlan, peer: LivePeer) -> None:
    if len(set(peer.addresses)) != len(peer.addresses) or len(set(peer.routes)) != len(peer.routes):
        raise AddressUnavailable("an address or route is given twice")
    for address in peer.addresses:
        plan.check(address)
    for network in peer.routes:
        plan.check_route(network)
    keepalive = peer.persistent_keepalive
    if keepalive is not None and not 1 <= keepalive <= 65535:
        raise RegistryError(f"persistent keepalive {keepalive}: expected 1 to 65535 seconds")


def policy_of(
    enabled: int,
    expires: str | None,
    quota_bytes: int | None,
    quota_period: str | None,
    rate_down: int | None,
    rate_up: int | None,
) -> Policy:
    quota = None
    if quota_bytes is not None and quota_period is not None:
        quota = Quota(quota_bytes, QuotaPeriod(quota_period))
    return Policy(
        enabled=bool(enabled),
        expires=None if expires is None else datetime.datetime.fromisoformat(expires),
        quota=quota,
        rate_down=rate_down,
        rate_up=rate_up,
    )


USAGE_COLUMNS: Final = (
    "public_key, lifetime_rx, lifetime_tx, day_start, day_bytes, week_start, week_bytes, "
    "month_start, month_bytes, total_bytes, resets"
)
KEYS_PER_QUERY: Final = 500  # well below SQLite's limit on bound parameters


# UsageRecord.added in SQL: a delta of the stored period adds to it; of a later one, the
# period rolled over and counts afresh. A delta of an earlier period (a writer whose clock is
# behind another's, at a boundary) counts in the lifetime and total only: the stored period
# never goes back. Starts are ISO dates ('' before any), so text order is time order. A
# delta of a writer that has not seen the row's last reset counts in the lifetime only (see
# trivpn.proto.usage). SET reads the old row throughout.
def add_usage_sql(param: Callable[[str], str], greatest: str) -> str:
    """The upsert of `Registry.add_usage` with named placeholders ``param(name)`` and the
    larger-of-two function ``greatest`` (SQLite's max, PostgreSQL's greatest)."""
    resets = param("resets")
    seen_resets = f"({resets} IS NULL OR usage.resets = {resets})"
    return (
        f"INSERT INTO usage ({USAGE_COLUMNS}, updated_at) VALUES ({param('key')}, "
        f"{param('rx')}, {param('tx')}, "
        + "".join(f"{param(p.value + '_start')}, {param('counted')}, " for p in CALENDAR_PERIODS)
        + f"{param('counted')}, coalesce({resets}, 0), {param('updated')}) "
        "ON CONFLICT (public_key) DO UPDATE SET "
        "lifetime_rx = usage.lifetime_rx + excluded.lifetime_rx, "
        "lifetime_tx = usage.lifetime_tx + excluded.lifetime_tx, "
        + "".join(
            f"{p}_bytes = CASE WHEN NOT {seen_resets} THEN usage.{p}_bytes "
            f"WHEN usage.{p}_start = excluded.{p}_start "
            f"THEN usage.{p}_bytes + excluded.{p}_bytes "
            f"WHEN usage.{p}_start > excluded.{p}_start THEN usage.{p}_bytes "
            f"ELSE excluded.{p}_bytes END, "
            f"{p}_start = CASE WHEN NOT {seen_resets} THEN usage.{p}_start "
            f"ELSE {greatest}(usage.{p}_start, excluded.{p}_start) END, "
            for p in (period.value for period in CALENDAR_PERIODS)
        )
        + f"total_bytes = CASE WHEN NOT {seen_resets} THEN usage.total_bytes "
        "ELSE usage.total_bytes + excluded.total_bytes END, "
        f"updated_at = {greatest}(usage.updated_at, excluded.updated_at)"
    )


_ADD_USAGE: Final = add_usage_sql(lambda name: f":{name}", "max")


def usage_params(deltas: Sequence[UsageDelta], wallclock: float) -> list[dict[str, object]]:
    """The parameters of `add_usage_sql`, one dict per delta with bytes (the rest change
    nothing); raises ValueError for a negative delta."""
    if any(d.rx < 0 or d.tx < 0 or (d.counted or 0) < 0 for d in deltas):
        raise ValueError("usage deltas are never negative: usage never goes back")
    starts = {f"{p.value}_start": period_key(p, wallclock) for p in CALENDAR_PERIODS}
    updated = format_expires(datetime.datetime.fromtimestamp(int(wallclock), datetime.UTC))
    return [
        {
            "key": keys.encode_key(d.public_key),
            "rx": d.rx,
            "tx": d.tx,
            "counted": d.rx + d.tx if d.counted is None else d.counted,
            "resets": d.resets,
            "updated": updated,
            **starts,
        }
        for d in deltas
        if d.rx or d.tx
    ]


def usage_record(row: Sequence[Any]) -> UsageRecord:
    """A row of USAGE_COLUMNS but the key: the calendar periods in CALENDAR_PERIODS' order."""
    rx, tx, day, day_bytes, week, week_bytes, month, month_bytes, total, resets = row
    return UsageRecord(
        lifetime_rx=rx,
        lifetime_tx=tx,
        day=PeriodCount(day, day_bytes),
        week=PeriodCount(week, week_bytes),
        month=PeriodCount(month, month_bytes),
        total=total,
        resets=resets,
    )


def _version(db: sqlite3.Connection) -> int:
    exists = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if exists is None:
        return 0
    row = db.execute("SELECT version FROM schema_version").fetchone()
    return 0 if row is None else int(row[0])


def _generation(db: sqlite3.Connection) -> int:
    (value,) = db.execute("SELECT generation FROM changes").fetchone()
    return int(value)


class StateDirUnusable(RegistryError):
    """The registry's directory (the config's state.dir) cannot be made."""

    def __init__(self, directory: Path, reason: str) -> None:
        super().__init__(f"{directory}: cannot create the state directory: {reason}")
        self.directory = directory
        self.reason = reason


def _create_private(path: Path) -> None:
    """Make the directory (0700) and the database file (0600) unless they exist, so the
    file never exists with wider permissions; SQLite gives its -wal and -shm files the
    database file's mode."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise StateDirUnusable(path.parent, e.strerror or str(e)) from e
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return
    except OSError as e:
        raise RegistryError(f"{path}: cannot create the peer registry: {e.strerror}") from e
    try:
        os.fchmod(fd, stat.S_IRUSR | stat.S_IWUSR)  # whatever the umask
    finally:
        os.close(fd)


@contextmanager
def _errors(path: Path) -> Iterator[None]:
    """SQLite's exceptions as one-line RegistryErrors."""
    try:
        yield
    except sqlite3.OperationalError as e:
        if "locked" in str(e) or "busy" in str(e):
            raise RegistryBusy(
                f"{path}: another trivpn holds the peer registry's lock; try again"
            ) from e
        raise RegistryError(f"{path}: {e}") from e
    except sqlite3.IntegrityError as e:  # the UNIQUE constraints: a race the checks missed
        raise RegistryError(f"{path}: refused: {e}") from e
    except sqlite3.DatabaseError as e:
        raise RegistryError(f"{path}: not a usable peer registry: {e}") from e
