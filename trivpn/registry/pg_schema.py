"""The registry's schema in PostgreSQL: what trivpn.registry.store keeps in SQLite, in the
types PostgreSQL has for it, reached by forward migrations like the SQLite file's.

The tables and columns are the SQLite schema's (version 5) with these differences: addresses
are ``inet`` and routes ``cidr`` (the database checks their syntax), times are
``timestamptz``, ``enabled`` is a boolean, counters are ``bigint``. Keys stay wg's base64
text and the usage table's period starts ISO dates as text ('' before any), so the usage
upsert (store.add_usage_sql) is the same statement for both.

Versions, each reached from the one before by a function in ``MIGRATIONS``:

1. peers, addresses (UNIQUE: two concurrent adds can never both commit one), routes, usage,
   the change counter ``changes`` (one row; its generation is also the data_version).
2. sessions: per gateway (``node``) and peer, its current endpoint and latest handshake
   (trivpn.registry.fleet), so any gateway knows where the fleet last saw a peer.
3. sessions.seq: from the sequence ``sessions_seq``, new at every write of a row (indexed),
   so a gateway reads only the rows written since its last read (`PgRegistry.sessions_since`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import psycopg

SCHEMA_VERSION: Final = 3
# taken by every migration so that gateways starting at once migrate one after the other
MIGRATION_LOCK: Final = 0x7472_6976_706E  # "trivpn"


def _migrate_to_1(db: psycopg.Connection[tuple[object, ...]]) -> None:
    db.execute(
        """CREATE TABLE peers (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            name text NOT NULL UNIQUE,
            public_key text NOT NULL UNIQUE,
            preshared_key text,
            created_at timestamptz NOT NULL,
            endpoint text,
            persistent_keepalive integer,
            enabled boolean NOT NULL DEFAULT true,
            expires timestamptz,
            quota_bytes bigint,
            quota_period text,
            rate_down bigint,
            rate_up bigint
        )"""
    )
    db.execute(
        """CREATE TABLE addresses (
            address inet PRIMARY KEY,
            peer_id bigint NOT NULL REFERENCES peers(id) ON DELETE CASCADE
        )"""
    )
    db.execute("CREATE INDEX addresses_by_peer ON addresses(peer_id)")
    db.execute(
        """CREATE TABLE routes (
            network cidr PRIMARY KEY,
            peer_id bigint NOT NULL REFERENCES peers(id) ON DELETE CASCADE
        )"""
    )
    db.execute("CREATE INDEX routes_by_peer ON routes(peer_id)")
    db.execute(
        """CREATE TABLE usage (
            public_key text PRIMARY KEY,
            lifetime_rx bigint NOT NULL,
            lifetime_tx bigint NOT NULL,
            day_start text NOT NULL,
            day_bytes bigint NOT NULL,
            week_start text NOT NULL,
            week_bytes bigint NOT NULL,
            month_start text NOT NULL,
            month_bytes bigint NOT NULL,
            total_bytes bigint NOT NULL,
            resets integer NOT NULL,
            updated_at text NOT NULL
        )"""
    )
    db.execute("CREATE TABLE changes (generation bigint NOT NULL)")
    db.execute("INSERT INTO changes (generation) VALUES (1)")


def _migrate_to_2(db: psycopg.Connection[tuple[object, ...]]) -> None:
    # no foreign key to peers: a gateway records what its device holds (static peers too)
    db.execute(
        """CREATE TABLE sessions (
            node text NOT NULL,
            public_key text NOT NULL,
            endpoint text,
            latest_handshake timestamptz,
            updated_at timestamptz NOT NULL,
            PRIMARY KEY (node, public_key)
        )"""
    )
    db.execute("CREATE INDEX sessions_by_key ON sessions(public_key)")


def _migrate_to_3(db: psycopg.Connection[tuple[object, ...]]) -> None:
    db.execute("CREATE SEQUENCE sessions_seq")
    # a volatile default: the rows there are numbered as the column is added
    db.execute(
        "ALTER TABLE sessions ADD COLUMN seq bigint NOT NULL DEFAULT nextval('sessions_seq')"
    )
    db.execute("ALTER SEQUENCE sessions_seq OWNED BY sessions.seq")
    db.execute("CREATE INDEX sessions_by_seq ON sessions(seq)")


# MIGRATIONS[n] takes a database at version n to version n + 1
MIGRATIONS: Final[Sequence[Callable[[psycopg.Connection[tuple[object, ...]]], None]]] = (
    _migrate_to_1,
    _migrate_to_2,
    _migrate_to_3,
)
assert len(MIGRATIONS) == SCHEMA_VERSION
