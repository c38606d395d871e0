"""trivpn.registry.store, schema 5: quotas and rates in each peer's policy, and the usage
table (`usage_records`, `add_usage`, `reset_usage`)."""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from trivpn.proto.periods import QuotaPeriod
from trivpn.proto.policy import Policy, Quota
from trivpn.proto.usage import NO_USAGE, PeriodCount, UsageDelta, UsageRecord
from trivpn.proto.wireguard import crypto, keys
from trivpn.registry import store
from trivpn.registry.store import AddressPlan, PeerNotFound, Registry

PLAN = AddressPlan(subnets=(ipaddress.IPv4Network("10.8.0.0/24"),))
EXPIRES = datetime.datetime(2027, 2, 1, tzinfo=datetime.UTC)
LIMITED = Policy(
    expires=EXPIRES,
    quota=Quota(50 * 1024**3, QuotaPeriod.MONTH),
    rate_down=20_000_000,
    rate_up=5_000_000,
)


def at(text: str) -> float:
    return datetime.datetime.fromisoformat(text).timestamp()


# Wednesday 2026-12-30 and, two days later, a new month and year but the same week
DEC_30 = at("2026-12-30T12:00:00+00:00")
JAN_1 = at("2027-01-01T00:00:01+00:00")


def pub(n: int) -> bytes:
    return crypto.public_key(keys.generate_private_key(lambda k: n.to_bytes(4, "big") * (k // 4)))


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / store.DB_NAME


@pytest.fixture
def sqlite_reg(db_path: Path) -> Iterator[Registry]:
    with Registry.open(db_path) as r:
        yield r


def test_quota_and_rates_are_stored_read_and_changed(reg: Registry) -> None:
    alice = reg.add("alice", pub(1), None, PLAN, policy=LIMITED)
    assert alice.policy == LIMITED
    assert reg.find("alice") == alice
    row = reg._db.execute(
        "SELECT quota_bytes, quota_period, rate_down, rate_up FROM peers WHERE name = 'alice'"
    ).fetchone()
    assert row == (50 * 1024**3, "month", 20_000_000, 5_000_000)  # plain columns
    config = alice.to_peer_config()
    assert config.policy == LIMITED  # what the server takes

    generation = reg.generation()
    _, new = reg.update_policy("alice", lambda p: dataclasses.replace(p, quota=None, rate_up=None))
    assert new.policy == Policy(expires=EXPIRES, rate_down=20_000_000)
    assert reg.find("alice") == new
    assert reg.generation() == generation + 1
    row = reg._db.execute("SELECT quota_bytes, quota_period, rate_up FROM peers").fetchone()
    assert row == (None, None, None)


def test_add_usage_adds_and_returns_the_rows_after(reg: Registry) -> None:
    a, b = pub(1), pub(2)
    assert reg.usage_records() == {}
    generation = reg.generation()
    after = reg.add_usage([UsageDelta(a, 100, 20), UsageDelta(b, 0, 0)], DEC_30)
    expected = NO_USAGE.added(100, 20, DEC_30)
    assert after == {a: expected, b: NO_USAGE}  # a key with nothing counted: no row
    assert expected.month == PeriodCount("2026-12-01", 120)
    after = reg.add_usage([UsageDelta(a, 5, 7)], DEC_30 + 60)
    assert after[a] == expected.added(5, 7, DEC_30 + 60)
    assert after[a].lifetime_rx == 105 and after[a].total == 132
    assert reg.usage_records() == {a: after[a]}
    assert reg.usage_records([a, b]) == {a: after[a]}
    assert reg.usage_records([]) == {}
    assert reg.generation() == generation  # usage is not a peer change
    assert reg.add_usage([], DEC_30) == {}
    with pytest.raises(ValueError, match="never negative"):
        reg.add_usage([UsageDelta(a, -1, 0)], DEC_30)


def test_add_usage_rolls_a_stale_period_as_the_record_does(reg: Registry) -> None:
    a = pub(1)
    reg.add_usage([UsageDelta(a, 1000, 0)], DEC_30)
    (after,) = reg.add_usage([UsageDelta(a, 10, 1)], JAN_1).values()
    assert after == NO_USAGE.added(1000, 0, DEC_30).added(10, 1, JAN_1)
    assert after.day == PeriodCount("2027-01-01", 11)
    assert after.month == PeriodCount("2027-01-01", 11)
    assert after.week == PeriodCount("2026-12-28", 1011)  # a Monday: the week goes on
    assert after.total == 1011
    assert after.used(QuotaPeriod.MONTH, JAN_1) == 11


def test_a_writer_behind_at_a_boundary_never_takes_a_period_back(reg: Registry) -> None:
    a = pub(1)
    reg.add_usage([UsageDelta(a, 10, 0)], JAN_1)
    (after,) = reg.add_usage(
        [UsageDelta(a, 5, 0)], DEC_30
    ).values()  # another writer's, a late clock
    assert after.month == PeriodCount("2027-01-01", 10)  # December's bytes do not count now
    assert after.day == PeriodCount("2027-01-01", 10)
    assert after.week == PeriodCount("2026-12-28", 15)  # the same week: they do
    assert (after.lifetime_rx, after.total) == (15, 15)


def test_many_keys_are_read_in_chunks(reg: Registry) -> None:
    many = [UsageDelta(i.to_bytes(32, "big"), i, 1) for i in range(1, 1200)]
    reg.add_usage(many, DEC_30)
    assert len(reg.usage_records([d.public_key for d in many])) == len(many)
    assert reg.usage_records([many[700][0]])[many[700][0]].lifetime_rx == 701


def test_concurrent_adders_on_two_connections_add_up(sqlite_reg: Registry, db_path: Path) -> None:
    reg = sqlite_reg  # its data_version sees usage commits too (pg/ has the PostgreSQL test)
    key = pub(1)
    rounds = 200

    def add_from_another_connection() -> None:
        with Registry.open(db_path) as other:
            for _ in range(rounds):
                other.add_usage([UsageDelta(key, 1, 2)], DEC_30)

    version = reg.data_version()
    thread = threading.Thread(target=add_from_another_connection)
    thread.start()
    for _ in range(rounds):
        reg.add_usage([UsageDelta(key, 10, 20)], DEC_30)
    thread.join()
    record = reg.usage_records([key])[key]
    assert (record.lifetime_rx, record.lifetime_tx) == (11 * rounds, 22 * rounds)
    assert record.month == PeriodCount("2026-12-01", 33 * rounds)
    assert reg.data_version() != version  # the other connection's commits are seen


def test_reset_keeps_the_lifetime_and_bumps_the_generation(reg: Registry) -> None:
    alice = reg.add("alice", pub(1), None, PLAN)
    reg.add_usage([UsageDelta(alice.public_key, 300, 400)], DEC_30)
    generation = reg.generation()
    assert reg.reset_usage("alice") == alice
    record = reg.usage_records()[alice.public_key]
    assert record == UsageRecord(lifetime_rx=300, lifetime_tx=400, resets=1)
    assert reg.generation() == generation + 1
    (after,) = reg.add_usage([UsageDelta(alice.public_key, 1, 0, 1, resets=1)], DEC_30).values()
    assert after.used(QuotaPeriod.DAY, DEC_30) == 1 and after.total == 1

    static = pub(9)  # a config-file peer: no registry row, only its usage
    reg.add_usage([UsageDelta(static, 5, 5)], DEC_30)
    reg.reset_key_usage(static)
    assert reg.usage_records([static])[static] == UsageRecord(
        lifetime_rx=5, lifetime_tx=5, resets=1
    )
    assert reg.generation() == generation + 2
    with pytest.raises(PeerNotFound, match="no peer named 'bob'"):
        reg.reset_usage("bob")
    assert reg.generation() == generation + 2


def test_what_a_writer_counted_before_a_reset_it_missed_stays_out_of_the_periods(
    reg: Registry,
) -> None:
    alice = reg.add("alice", pub(1), None, PLAN)
    key = alice.public_key
    (seen,) = reg.add_usage([UsageDelta(key, 300, 400, resets=0)], DEC_30).values()
    assert seen.resets == 0
    reg.reset_usage("alice")  # between the server's flushes
    (after,) = reg.add_usage([UsageDelta(key, 50, 50, 100, resets=0)], DEC_30).values()
    assert (after.lifetime_rx, after.lifetime_tx) == (350, 450)  # never lost...
    assert after.total == 0 and after.used(QuotaPeriod.DAY, DEC_30) == 0  # ...nor counted again
    assert after.resets == 1
    (later,) = reg.add_usage([UsageDelta(key, 5, 0, 5, resets=1)], DEC_30).values()
    assert later.total == 5 and later.used(QuotaPeriod.MONTH, DEC_30) == 5


def test_a_reset_before_any_usage_is_stored_still_counts(reg: Registry) -> None:
    static = pub(9)  # a static peer, nothing flushed yet
    reg.reset_key_usage(static)
    assert reg.usage_records([static])[static] == UsageRecord(resets=1)
    (after,) = reg.add_usage([UsageDelta(static, 10, 10, 20, resets=0)], DEC_30).values()
    assert after.total == 0 and after.lifetime_rx == 10


def test_remove_deletes_the_usage_row(reg: Registry) -> None:
    alice = reg.add("alice", pub(1), None, PLAN)
    bob = reg.add("bob", pub(2), None, PLAN)
    reg.add_usage([UsageDelta(alice.public_key, 1, 1), UsageDelta(bob.public_key, 2, 2)], DEC_30)
    reg.remove("alice")
    assert set(reg.usage_records()) == {bob.public_key}
    assert reg.remove_by_key(bob.public_key) is not None
    assert reg.usage_records() == {}


def test_a_version_4_database_migrates_forward(db_path: Path) -> None:
    db_path.parent.mkdir()
    alice = keys.encode_key(pub(1))
    with sqlite3.connect(db_path) as db:  # version 4's layout, as it was written
        db.executescript(
            f"""
            CREATE TABLE schema_version (version INTEGER NOT NULL);
            INSERT INTO schema_version VALUES (4);
            CREATE TABLE peers (
                id INTEGER PRIMARY KEY,
                name TEXT NOT NULL UNIQUE,
                public_key TEXT NOT NULL UNIQUE,
                preshared_key TEXT,
                created_at TEXT NOT NULL,
                endpoint TEXT,
                persistent_keepalive INTEGER,
                enabled INTEGER NOT NULL DEFAULT 1,
                expires TEXT
            );
            CREATE TABLE addresses (
                address TEXT PRIMARY KEY,
                peer_id INTEGER NOT NULL REFERENCES peers(id) ON DELETE CASCADE
            );
            CREATE INDEX addresses_by_peer ON addresses(peer_id);
            CREATE TABLE changes (generation INTEGER NOT NULL);
            INSERT INTO changes VALUES (7);
            CREATE TABLE routes (
                network TEXT PRIMARY KEY,
                peer_id INTEGER NOT NULL REFERENCES peers(id) ON DELETE CASCADE
            );
            CREATE INDEX routes_by_peer ON routes(peer_id);
            INSERT INTO peers VALUES (1, 'alice', '{alice}', NULL, '2025-04-01T10:00:00+00:00',
                NULL, NULL, 0, '2027-02-01T00:00:00Z');
            INSERT INTO addresses VALUES ('10.8.0.2', 1);
            """
        )
    db.close()
    with Registry.open(db_path) as r:
        assert r.schema_version == store.SCHEMA_VERSION == 5
        assert r.generation() == 7  # a migration is no change of peers
        (a,) = r.peers()
        assert a.policy == Policy(enabled=False, expires=EXPIRES)  # no quota, no rates
        assert r.usage_records() == {}
        r.add_usage([UsageDelta(a.public_key, 1, 2)], DEC_30)
        _, new = r.update_policy("alice", lambda p: LIMITED)
        assert r.peers() == [new] and new.policy == LIMITED
        assert r.usage_records()[a.public_key].lifetime_tx == 2
