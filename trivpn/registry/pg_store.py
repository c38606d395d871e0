"""The peer registry in PostgreSQL ([state] database): the store a fleet of gateways shares,
with the public interface of the SQLite one (trivpn.registry.api.RegistryStore).

The checks, the address choice and the usage upsert are the SQLite store's (trivpn.registry.
store); what differs is how the database keeps two writers apart. SQLite takes its one write
lock up front; here writers run at once, in READ COMMITTED transactions, and the UNIQUE
constraints decide. A `peer add` claims each address it chose with ``INSERT … ON CONFLICT DO
NOTHING``: one that another writer has taken (committed, or in a transaction that then
commits; PostgreSQL waits for it) is not inserted, and the add goes on with the next free one.
Any other UNIQUE violation or a deadlock rolls the whole transaction back and runs it again
(at most ``WRITE_ATTEMPTS`` times), when its checks see the winner's row: two adds of one
name end in one peer and one PeerExists. A policy change locks its peer's row
(``FOR UPDATE``), so two `peer set` changing different settings both count.

``data_version`` is the change counter (``changes.generation``, bumped by every peer change
and usage reset, whichever gateway made it): one small read per poll. Each bump also NOTIFYs
``PEERS_CHANNEL`` and each usage addition ``USAGE_CHANNEL``, in the same transaction, so
gateways that LISTEN (trivpn.registry.pg_listen) hear of a change when it commits. Unlike
SQLite's data_version, it moves with this connection's own commits too, which a poller takes
as "read again" and finds nothing new. Usage deltas do not move it (as in SQLite, they are
not a peer change).

Calls block; callers run them in worker threads (trio.to_thread), one at a time per store.
The password comes from [state] database_password_file and never appears in a message:
errors name the database by `describe`, without it.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Final, LiteralString, TypeVar

import attrs
import psycopg
import psycopg.errors
from psycopg import sql

from trivpn.config import Endpoint, by_version
from trivpn.proto.ip import IPAddress, IPNetwork
from trivpn.proto.policy import ACTIVE_POLICY, Policy, format_expires
from trivpn.proto.usage import NO_USAGE, UsageDelta, UsageRecord
from trivpn.proto.wireguard import keys
from trivpn.registry.pg_schema import MIGRATION_LOCK, MIGRATIONS, SCHEMA_VERSION
from trivpn.registry.sessions import Session
from trivpn.registry.store import (
    DEFAULT_TIMEOUT,
    KEYS_PER_QUERY,
    USAGE_COLUMNS,
    AddressPlan,
    LivePeer,
    PeerNotFound,
    RegistryBusy,
    RegistryError,
    RegistryPeer,
    RegistryUnreachable,
    Snapshot,
    add_usage_sql,
    check_identity,
    check_live,
    check_new_peer,
    choose_addresses,
    new_peer,
    now_utc,
    policy_of,
    refuse_duplicate,
    refuse_taken,
    usage_params,
    usage_record,
)

# NOTIFY channels, sent in the transaction of the change (delivered when it commits):
# a peer change (payload: the generation), usage added (payload: the adding gateway's node,
# which skips its own: its flush has the sums)
PEERS_CHANNEL: Final = "trivpn_peers"
USAGE_CHANNEL: Final = "trivpn_usage"
SESSIONS_LOCK: Final = 0x7472_6976_7073  # taken by a write of sessions (`record_sessions`)
WRITE_ATTEMPTS: Final = 8  # a change that lost a race (UNIQUE, deadlock) runs again
CONNECT_TIMEOUT: Final = 10  # seconds

_ADD_USAGE: Final = add_usage_sql(lambda name: f"%({name})s", "greatest")
# a write that lost a race: what it read is stale; run it again from the start
_RACES: Final = (
    psycopg.errors.UniqueViolation,
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
)

T = TypeVar("T")
Row = tuple[Any, ...]
Connection = psycopg.Connection[Row]


def describe(conninfo: str) -> str:
    """The database as messages name it: its name and host, never a password."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "the PostgreSQL registry"
    name = params.get("dbname") or params.get("user") or "?"
    host = params.get("host") or params.get("hostaddr") or "localhost"
    return f"PostgreSQL database {name} on {host}"


class PgRegistry:
    """One connection to the registry database. Not shared between threads."""

    def __init__(
        self, connect: Callable[[], Connection], where: str, node: str | None = None
    ) -> None:
        self._connect = connect
        self._db = connect()
        self.where = where  # the database, for messages (`describe`)
        self.node = node  # the gateway using it ([state] node), if any

    @classmethod
    def open(
        cls,
        conninfo: str,
        *,
        password: str | None = None,
        node: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> PgRegistry:
        """Connect, and bring the schema to this trivpn's version (made in an empty
        database). ``node`` names this gateway in the server's view of its clients
        (pg_stat_activity). Raises RegistryError when the database cannot be reached or is
        from a newer trivpn, RegistryBusy when another writer held a lock past ``timeout``."""
        where = describe(conninfo)
        connect = connector(conninfo, password=password, node=node, timeout=timeout)
        registry = cls(connect, where, node)
        try:
            registry._migrate()
        except BaseException:
            registry.close()
            raise
        return registry

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> PgRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reading ----------------------------------------------------------------------------

    @property
    def schema_version(self) -> int:
        with self._errors():
            return _version(self._db)

    def data_version(self) -> int:
        return self.generation()

    def generation(self) -> int:
        with self._errors():
            return _generation(self._db)

    def snapshot(self) -> Snapshot:
        """Every peer and the generation they belong to, read in one transaction."""
        with self._errors(), self._transaction(read=True):
            return Snapshot(_generation(self._db), tuple(self._peers()))

    def peers(self) -> list[RegistryPeer]:
        return list(self.snapshot().peers)

    def find(self, name: str) -> RegistryPeer | None:
        with self._errors(), self._transaction(read=True):
            found = self._peers("WHERE p.name = %s", (name,))
        return found[0] if found else None

    def find_by_key(self, public_key: bytes) -> RegistryPeer | None:
        with self._errors(), self._transaction(read=True):
            found = self._peers("WHERE p.public_key = %s", (keys.encode_key(public_key),))
        return found[0] if found else None

    def _peers(
        self, where: LiteralString = "", args: tuple[object, ...] = ()
    ) -> list[RegistryPeer]:
        """The peers matching ``where`` (on ``peers p``), by name; call inside a transaction."""
        rows = self._db.execute(
            "SELECT id, name, public_key, preshared_key, created_at, endpoint, "
            "persistent_keepalive, enabled, expires, quota_bytes, quota_period, rate_down, "
            # byte order, as SQLite sorts: the same list whatever the database's locale
            "rate_up FROM peers p " + where + ' ORDER BY name COLLATE "C"',
            args,
        ).fetchall()
        addresses: dict[int, list[IPAddress]] = {row[0]: [] for row in rows}
        routes: dict[int, list[IPNetwork]] = {row[0]: [] for row in rows}
        for peer_id, address in self._db.execute(
            "SELECT a.peer_id, host(a.address) FROM addresses a "
            "JOIN peers p ON p.id = a.peer_id " + where,
            args,
        ):
            addresses[peer_id].append(ipaddress.ip_address(address))
        for peer_id, network in self._db.execute(
            "SELECT r.peer_id, text(r.network) FROM routes r "
            "JOIN peers p ON p.id = r.peer_id " + where,
            args,
        ):
            routes[peer_id].append(ipaddress.ip_network(network))
        return [
            RegistryPeer(
                name=name,
                public_key=keys.parse_key(public_key),
                preshared_key=None if psk is None else keys.parse_key(psk),
                addresses=tuple(sorted(addresses[peer_id], key=by_version)),
                created_at=created_at.astimezone(datetime.UTC),
                routes=tuple(sorted(routes[peer_id], key=by_version)),
                endpoint=None if endpoint is None else Endpoint.parse(endpoint),
                persistent_keepalive=keepalive,
                policy=policy_of(
                    int(enabled),
                    format_expires(expires),
                    *policy,
                ),
            )
            for (
                peer_id,
                name,
                public_key,
                psk,
                created_at,
                endpoint,
                keepalive,
                enabled,
                expires,
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
        """Register a peer in one transaction, as `store.Registry.add` does. Two adds at
        once that choose the same address: the database commits one, and the other chooses
        again. Raises PeerExists, AddressUnavailable, AddressesExhausted, RegistryBusy."""
        check_new_peer(name, public_key, preshared_key, plan, addresses)
        for network in routes:
            plan.check_route(network)

        def add() -> RegistryPeer:
            self._refuse_duplicate(name, public_key)
            self._refuse_taken(LivePeer(public_key, None, (), tuple(routes)))
            created = now_utc()
            peer_id = self._insert_peer(name, public_key, preshared_key, created)
            rows = self._db.execute("SELECT host(address) FROM addresses").fetchall()
            taken = {ipaddress.ip_address(address) for (address,) in rows}
            chosen = choose_addresses(
                plan, addresses, taken, claim=lambda address: self._claim(peer_id, address)
            )
            peer = new_peer(name, public_key, preshared_key, chosen, routes, policy, created)
            self._store_live(peer_id, LivePeer(public_key, None, (), peer.routes))
            self._store_policy(peer_id, policy)
            self._bump_generation()
            return peer

        return self._write(add)

    def remove(self, name: str) -> RegistryPeer:
        """Delete a peer and its addresses in one transaction; they are free once it commits."""

        def remove() -> RegistryPeer:
            found = self._peers("WHERE p.name = %s", (name,))
            if not found:
                raise PeerNotFound(f"no peer named {name!r} in the registry")
            self._delete_peer(found[0].public_key)
            self._bump_generation()
            return found[0]

        return self._write(remove)

    def update_policy(
        self, name: str, change: Callable[[Policy], Policy]
    ) -> tuple[RegistryPeer, RegistryPeer]:
        """As `store.Registry.update_policy`: the peer's row is locked while ``change`` runs,
        so a concurrent change of another setting waits and then applies to this result."""

        def update() -> tuple[RegistryPeer, RegistryPeer]:
            row = self._db.execute(
                "SELECT id FROM peers WHERE name = %s FOR UPDATE", (name,)
            ).fetchone()
            if row is None:
                raise PeerNotFound(f"no peer named {name!r} in the registry")
            (old,) = self._peers("WHERE p.name = %s", (name,))
            new = attrs.evolve(old, policy=change(old.policy))
            if new.policy != old.policy:
                self._store_policy(int(row[0]), new.policy)
                self._bump_generation()
            return old, new

        return self._write(update)

    def _store_policy(self, peer_id: int, policy: Policy) -> None:
        quota = policy.quota
        self._db.execute(
            "UPDATE peers SET enabled = %s, expires = %s, quota_bytes = %s, quota_period = %s, "
            "rate_down = %s, rate_up = %s WHERE id = %s",
            (
                policy.enabled,
                policy.expires,
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
        with self._errors(), self._transaction(read=True):
            if public_keys is None:
                rows = self._db.execute(_select_usage("")).fetchall()
            else:
                rows = self._usage_rows([keys.encode_key(k) for k in public_keys])
        return {keys.parse_key(row[0]): usage_record(row[1:]) for row in rows}

    def _usage_rows(self, encoded: Sequence[str]) -> list[Row]:
        rows: list[Row] = []
        for i in range(0, len(encoded), KEYS_PER_QUERY):
            chunk = list(encoded[i : i + KEYS_PER_QUERY])
            rows += self._db.execute(
                _select_usage("WHERE public_key = ANY(%s)"), (chunk,)
            ).fetchall()
        return rows

    def add_usage(self, deltas: Sequence[UsageDelta], wallclock: float) -> dict[bytes, UsageRecord]:
        """As `store.Registry.add_usage`: the deltas are added in SQL, so the gateways'
        counts add up. Not a peer change: the generation stays."""
        rows = usage_params(deltas, wallclock)
        if not deltas:
            return {}
        encoded = [keys.encode_key(d.public_key) for d in deltas]

        def add() -> list[Row]:
            with self._db.cursor() as cursor:
                cursor.executemany(_ADD_USAGE, rows)
            # the other gateways read the sums (a peer they count nothing for, too)
            self._db.execute("SELECT pg_notify(%s, %s)", (USAGE_CHANNEL, self.node or ""))
            return self._usage_rows(encoded)

        found = self._write(add)
        after = {keys.parse_key(row[0]): usage_record(row[1:]) for row in found}
        return {d.public_key: after.get(d.public_key, NO_USAGE) for d in deltas}

    # --- sessions (trivpn.registry.fleet) ------------------------------------------------------

    def record_sessions(self, sessions: Sequence[Session]) -> None:
        """Store these sessions, each under its node (a gateway writes only its own rows, so
        gateways never wait for each other but for this short write). Not a peer change: the
        generation stays."""
        rows = [
            (s.node, keys.encode_key(s.public_key), s.endpoint, _timestamp(s.latest_handshake))
            for s in sessions
        ]
        if not rows:
            return

        def record() -> None:
            # writers one at a time, each numbering its rows after the last one's: a reader
            # that saw seq N has seen every row numbered below N (`sessions_since`)
            self._db.execute("SELECT pg_advisory_xact_lock(%s)", (SESSIONS_LOCK,))
            with self._db.cursor() as cursor:
                cursor.executemany(_RECORD_SESSION, rows)

        self._write(record)

    def sessions(self) -> list[Session]:
        """Every gateway's sessions, the least recently updated first."""
        return self.sessions_since(0)[0]

    def sessions_since(self, seq: int) -> tuple[list[Session], int]:
        """The sessions written since the read that returned ``seq`` (0: all of them), the
        least recently updated first, and the ``seq`` to pass next time."""
        with self._errors():
            rows = self._db.execute(
                "SELECT node, public_key, endpoint, latest_handshake, seq FROM sessions "
                "WHERE seq > %s ORDER BY seq",
                (seq,),
            ).fetchall()
        found = [
            Session(node, keys.parse_key(key), endpoint, None if at is None else at.timestamp())
            for node, key, endpoint, at, _ in rows
        ]
        return found, int(rows[-1][4]) if rows else seq

    def prune_sessions(self, older_than: float) -> int:
        """Delete the sessions no gateway has written for ``older_than`` seconds (those of a
        gateway that left the fleet, of a peer long idle); how many."""
        with self._errors():
            deleted = self._db.execute(
                "DELETE FROM sessions WHERE updated_at < now() - make_interval(secs => %s)",
                (older_than,),
            )
        return deleted.rowcount

    def reset_usage(self, name: str) -> RegistryPeer:
        """Zero the periods of registry peer ``name``'s usage (the lifetime counters stay),
        and bump the generation so that running servers reload it. Raises PeerNotFound."""

        def reset() -> RegistryPeer:
            found = self._peers("WHERE p.name = %s", (name,))
            if not found:
                raise PeerNotFound(f"no peer named {name!r} in the registry")
            self._reset_usage(found[0].public_key)
            return found[0]

        return self._write(reset)

    def reset_key_usage(self, public_key: bytes) -> None:
        """`reset_usage` of a peer by its public key: a static peer's (the config file's)."""
        self._write(lambda: self._reset_usage(public_key))

    def _reset_usage(self, public_key: bytes) -> None:
        # A row even for a key with none yet: its resets count tells a server with bytes
        # pending that they were counted before the reset.
        self._db.execute(
            f"INSERT INTO usage ({USAGE_COLUMNS}, updated_at) "
            "VALUES (%s, 0, 0, '', 0, '', 0, '', 0, 0, 1, "
            "to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')) "
            "ON CONFLICT (public_key) DO UPDATE SET day_start = '', day_bytes = 0, "
            "week_start = '', week_bytes = 0, month_start = '', month_bytes = 0, "
            "total_bytes = 0, resets = usage.resets + 1, updated_at = excluded.updated_at",
            (keys.encode_key(public_key),),
        )
        self._bump_generation()

    # --- changes made through `wg set` on a running server ----------------------------------

    def add_live(self, name: str, peer: LivePeer, plan: AddressPlan) -> int:
        """Register `peer` as `name` exactly as it is. Returns the generation it committed."""
        check_identity(name, peer.public_key, peer.preshared_key, plan)
        check_live(plan, peer)

        def add() -> int:
            self._refuse_duplicate(name, peer.public_key)
            self._refuse_taken(peer)
            peer_id = self._insert_peer(name, peer.public_key, peer.preshared_key, now_utc())
            self._store_live(peer_id, peer)
            return self._bump_generation()

        return self._write(add)

    def update_live(self, peer: LivePeer, plan: AddressPlan) -> int:
        """Replace everything but the name of the peer with `peer.public_key`, in one
        transaction. Returns the generation it committed."""
        check_live(plan, peer)
        encoded = keys.encode_key(peer.public_key)

        def update() -> int:
            row = self._db.execute(
                "SELECT id FROM peers WHERE public_key = %s FOR UPDATE", (encoded,)
            ).fetchone()
            if row is None:
                raise PeerNotFound("no peer with that public key in the registry")
            peer_id = int(row[0])
            self._refuse_taken(peer)
            self._db.execute("DELETE FROM addresses WHERE peer_id = %s", (peer_id,))
            self._db.execute("DELETE FROM routes WHERE peer_id = %s", (peer_id,))
            psk = peer.preshared_key
            self._db.execute(
                "UPDATE peers SET preshared_key = %s WHERE id = %s",
                (None if psk is None else keys.encode_key(psk), peer_id),
            )
            self._store_live(peer_id, peer)
            return self._bump_generation()

        return self._write(update)

    def remove_by_key(self, public_key: bytes) -> tuple[RegistryPeer, int] | None:
        """Delete the peer with `public_key`; the deleted peer and the generation committed,
        or None (and nothing committed) when no peer has that key."""

        def remove() -> tuple[RegistryPeer, int] | None:
            found = self._peers("WHERE p.public_key = %s", (keys.encode_key(public_key),))
            if not found:
                return None
            self._delete_peer(public_key)
            return found[0], self._bump_generation()

        return self._write(remove)

    def _claim(self, peer_id: int, address: IPAddress) -> bool:
        """Give ``address`` to the peer unless another has it. An address that a concurrent
        transaction has just taken waits for it: taken if it commits, ours if it rolls back."""
        row = self._db.execute(
            "INSERT INTO addresses (address, peer_id) VALUES (%s, %s) "
            "ON CONFLICT (address) DO NOTHING RETURNING peer_id",
            (str(address), peer_id),
        ).fetchone()
        return row is not None

    def _store_live(self, peer_id: int, peer: LivePeer) -> None:
        """The addresses, routes, endpoint and keepalive of a peer whose old ones are gone."""
        # one statement each (few rows): a UNIQUE violation is then a plain error, which
        # `_write` takes as a lost race
        for address in peer.addresses:
            self._db.execute(
                "INSERT INTO addresses (address, peer_id) VALUES (%s, %s)", (str(address), peer_id)
            )
        for network in peer.routes:
            self._db.execute(
                "INSERT INTO routes (network, peer_id) VALUES (%s, %s)", (str(network), peer_id)
            )
        self._db.execute(
            "UPDATE peers SET endpoint = %s, persistent_keepalive = %s WHERE id = %s",
            (
                None if peer.endpoint is None else str(peer.endpoint),
                peer.persistent_keepalive,
                peer_id,
            ),
        )

    def _delete_peer(self, public_key: bytes) -> None:
        # the addresses and routes go by ON DELETE CASCADE, in the same transaction; sessions
        # have no foreign key (a gateway records its static peers' too)
        encoded = keys.encode_key(public_key)
        self._db.execute("DELETE FROM usage WHERE public_key = %s", (encoded,))
        self._db.execute("DELETE FROM sessions WHERE public_key = %s", (encoded,))
        self._db.execute("DELETE FROM peers WHERE public_key = %s", (encoded,))

    def _refuse_taken(self, peer: LivePeer) -> None:
        refuse_taken(peer, self._taken_by)

    def _taken_by(self, table: str, value: IPAddress | IPNetwork, key: str) -> str | None:
        """The name of another peer than ``key``'s holding ``value`` in ``table``."""
        column = "address" if table == "addresses" else "network"
        row = self._db.execute(
            sql.SQL(
                "SELECT p.name FROM {table} t JOIN peers p ON p.id = t.peer_id "
                "WHERE t.{column} = %s AND p.public_key != %s"
            ).format(table=sql.Identifier(table), column=sql.Identifier(column)),
            (str(value), key),
        ).fetchone()
        return None if row is None else str(row[0])

    def _refuse_duplicate(self, name: str, public_key: bytes) -> None:
        row = self._db.execute(
            "SELECT name FROM peers WHERE name = %s OR public_key = %s",
            (name, keys.encode_key(public_key)),
        ).fetchone()
        refuse_duplicate(name, None if row is None else str(row[0]))

    def _insert_peer(
        self, name: str, public_key: bytes, psk: bytes | None, created: datetime.datetime
    ) -> int:
        row = self._db.execute(
            "INSERT INTO peers (name, public_key, preshared_key, created_at) "
            "VALUES (%s, %s, %s, %s) RETURNING id",
            (
                name,
                keys.encode_key(public_key),
                None if psk is None else keys.encode_key(psk),
                created,
            ),
        ).fetchone()
        assert row is not None
        return int(row[0])

    def _bump_generation(self) -> int:
        """The next generation, and every gateway told of it when the change commits."""
        row = self._db.execute(
            "WITH bumped AS (UPDATE changes SET generation = generation + 1 "
            "RETURNING generation) "
            "SELECT generation, pg_notify(%s, generation::text) FROM bumped",
            (PEERS_CHANNEL,),
        ).fetchone()
        assert row is not None
        return int(row[0])

    # --- `trivpn registry migrate` -----------------------------------------------------------

    def import_registry(
        self, peers: Sequence[RegistryPeer], usage: Mapping[bytes, UsageRecord], wallclock: float
    ) -> None:
        """Store ``peers`` exactly as they are (addresses, routes, policy, creation time) and
        the ``usage`` records (updated at ``wallclock``) in one transaction. Raises
        RegistryNotEmpty, without changing anything, when the database holds a peer or usage
        already: a migration never merges two registries."""

        def load() -> None:
            row = self._db.execute(
                "SELECT (SELECT count(*) FROM peers), (SELECT count(*) FROM usage)"
            ).fetchone()
            assert row is not None
            if row[0] or row[1]:
                raise RegistryNotEmpty(
                    f"{self.where} holds {row[0]} peers and {row[1]} usage records already; "
                    "migrate only into an empty database"
                )
            for peer in peers:
                peer_id = self._insert_peer(
                    peer.name, peer.public_key, peer.preshared_key, peer.created_at
                )
                self._store_live(
                    peer_id,
                    LivePeer(
                        peer.public_key,
                        None,
                        peer.addresses,
                        peer.routes,
                        peer.endpoint,
                        peer.persistent_keepalive,
                    ),
                )
                self._store_policy(peer_id, peer.policy)
            updated = format_expires(datetime.datetime.fromtimestamp(int(wallclock), datetime.UTC))
            with self._db.cursor() as cursor:
                cursor.executemany(
                    f"INSERT INTO usage ({USAGE_COLUMNS}, updated_at) VALUES "
                    "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    [
                        (
                            keys.encode_key(key),
                            r.lifetime_rx,
                            r.lifetime_tx,
                            r.day.start,
                            r.day.bytes,
                            r.week.start,
                            r.week.bytes,
                            r.month.start,
                            r.month.bytes,
                            r.total,
                            r.resets,
                            updated,
                        )
                        for key, r in usage.items()
                    ],
                )
            self._bump_generation()

        self._write(load)

    # --- transactions -------------------------------------------------------------------------

    def _write(self, change: Callable[[], T]) -> T:
        """``change`` in a transaction, run again (up to WRITE_ATTEMPTS times) when another
        writer's commit made it break a UNIQUE constraint or deadlock."""
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                with self._errors(races=True), self._transaction():
                    return change()
            except _RaceLost as lost:
                if attempt == WRITE_ATTEMPTS:
                    raise RegistryBusy(
                        f"{self.where}: other writers won {WRITE_ATTEMPTS} times in a row; "
                        "try again"
                    ) from lost.__cause__
        raise AssertionError("unreachable")

    @contextmanager
    def _transaction(self, *, read: bool = False) -> Iterator[None]:
        with self._db.transaction():
            if read:  # one snapshot for every statement of the read
                self._db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            yield

    @contextmanager
    def _errors(self, *, races: bool = False) -> Iterator[None]:
        """psycopg's exceptions as one-line RegistryErrors (with ``races``, a lost race as
        _RaceLost). A connection that broke (the server restarted, the network dropped) is
        made again first: the call that saw it break failed, the next one tries anew."""
        if self._db.broken:
            self._db.close()
        if self._db.closed:  # broke, or a reconnection failed: made again
            self._db = self._connect()
        try:
            yield
        except _RACES as e:
            if races:
                raise _RaceLost() from e
            raise RegistryBusy(f"{self.where}: {_first_line(e)}; try again") from e
        except psycopg.errors.LockNotAvailable as e:
            raise RegistryBusy(
                f"{self.where}: another trivpn holds a lock on the peer registry; try again"
            ) from e
        except psycopg.errors.IntegrityError as e:
            raise RegistryError(f"{self.where}: refused: {_first_line(e)}") from e
        except psycopg.Error as e:
            if self._db.broken:  # the server went away (stopped, restarted, unreachable)
                raise RegistryUnreachable(f"{self.where}: {_first_line(e)}") from e
            raise RegistryError(f"{self.where}: {_first_line(e)}") from e

    def _migrate(self) -> None:
        with self._errors(), self._transaction():
            # one gateway at a time; the others then find the schema current
            self._db.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            version = _version(self._db)
            if version > SCHEMA_VERSION:
                raise RegistryError(
                    f"{self.where}: schema version {version} is newer than this trivpn "
                    f"understands ({SCHEMA_VERSION}); upgrade trivpn"
                )
            if version == SCHEMA_VERSION:
                return
            if version == 0:
                self._db.execute("CREATE TABLE schema_version (version integer NOT NULL)")
                self._db.execute("INSERT INTO schema_version (version) VALUES (0)")
            for migrate in MIGRATIONS[version:]:
                migrate(self._db)
            self._db.execute("UPDATE schema_version SET version = %s", (SCHEMA_VERSION,))


def connector(
    conninfo: str,
    *,
    password: str | None = None,
    node: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> Callable[[], Connection]:
    """What makes a connection to the registry database (autocommit, UTC, the lock timeout);
    it raises RegistryUnreachable when the server cannot be reached."""
    where = describe(conninfo)
    extra: dict[str, Any] = {} if password is None else {"password": password}

    def connect() -> Connection:
        try:
            db: Connection = psycopg.connect(
                conninfo,
                autocommit=True,  # transactions are explicit: `_transaction`
                connect_timeout=CONNECT_TIMEOUT,
                application_name="trivpn" if node is None else f"trivpn {node}",
                **extra,
            )
        except psycopg.OperationalError as e:
            raise RegistryUnreachable(f"{where}: cannot connect: {_first_line(e)}") from None
        except psycopg.Error as e:
            raise RegistryError(f"{where}: cannot connect: {_first_line(e)}") from None
        try:
            # set here, not as connection options: the conninfo's own `options` stay
            db.execute(
                "SELECT set_config('TimeZone', 'UTC', false), "
                "set_config('lock_timeout', %s, false)",
                (f"{int(timeout * 1000)}ms",),
            )
        except psycopg.Error as e:
            db.close()
            raise RegistryError(f"{where}: {_first_line(e)}") from None
        return db

    return connect


class RegistryNotEmpty(RegistryError):
    """A migration's target holds a registry already."""


class _RaceLost(Exception):
    """A write transaction lost a race with another writer and was rolled back."""


_RECORD_SESSION: Final = (
    "INSERT INTO sessions (node, public_key, endpoint, latest_handshake, updated_at) "
    "VALUES (%s, %s, %s, %s, clock_timestamp()) ON CONFLICT (node, public_key) DO UPDATE SET "
    "endpoint = EXCLUDED.endpoint, latest_handshake = EXCLUDED.latest_handshake, "
    "updated_at = EXCLUDED.updated_at, seq = nextval('sessions_seq')"
)


def _timestamp(epoch: float | None) -> datetime.datetime | None:
    return None if epoch is None else datetime.datetime.fromtimestamp(epoch, datetime.UTC)


def _select_usage(where: LiteralString) -> LiteralString:
    return "SELECT " + USAGE_COLUMNS + " FROM usage " + where


def _version(db: Connection) -> int:
    row = db.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
    if row is None or not row[0]:
        return 0
    found = db.execute("SELECT version FROM schema_version").fetchone()
    return 0 if found is None else int(found[0])


def _generation(db: Connection) -> int:
    row = db.execute("SELECT generation FROM changes").fetchone()
    assert row is not None
    return int(row[0])


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
