"""trivpn.registry.store: each peer's policy (schema 4): enabled, expires."""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import sqlite3
from pathlib import Path

import pytest

from trivpn.proto.policy import Policy
from trivpn.proto.wireguard import crypto, keys
from trivpn.registry import store
from trivpn.registry.store import AddressPlan, PeerNotFound, Registry

PLAN = AddressPlan(subnets=(ipaddress.IPv4Network("10.8.0.0/24"),))
EXPIRES = datetime.datetime(2027, 2, 1, tzinfo=datetime.UTC)


def pub(n: int) -> bytes:
    return crypto.public_key(keys.generate_private_key(lambda k: n.to_bytes(4, "big") * (k // 4)))


def test_a_new_peer_is_active_unless_told(reg: Registry) -> None:
    alice = reg.add("alice", pub(1), None, PLAN)
    bob = reg.add("bob", pub(2), None, PLAN, policy=Policy(enabled=False, expires=EXPIRES))
    assert alice.policy == Policy()
    assert bob.policy == Policy(enabled=False, expires=EXPIRES)
    assert [p.policy for p in reg.peers()] == [alice.policy, bob.policy]
    # plain columns: in SQLite 0/1 and ISO 8601 text in UTC; in PostgreSQL its own types
    rows = reg._db.execute("SELECT name, enabled, expires FROM peers ORDER BY name").fetchall()
    if isinstance(reg, Registry):
        assert rows == [("alice", 1, None), ("bob", 0, "2027-02-01T00:00:00Z")]
    else:
        assert rows == [("alice", True, None), ("bob", False, EXPIRES)]
    config = reg.peers()[1].to_peer_config()
    assert (config.enabled, config.expires) == (False, EXPIRES)


def test_update_policy_changes_only_the_policy_and_bumps_the_generation(reg: Registry) -> None:
    reg.add("alice", pub(1), None, PLAN)
    generation = reg.generation()
    old, new = reg.update_policy("alice", lambda p: dataclasses.replace(p, expires=EXPIRES))
    assert (old.policy, new.policy) == (Policy(), Policy(expires=EXPIRES))
    assert reg.generation() == generation + 1
    assert reg.find("alice") == new
    assert new.addresses == old.addresses
    _, again = reg.update_policy("alice", lambda p: dataclasses.replace(p, enabled=False))
    assert again.policy == Policy(enabled=False, expires=EXPIRES)  # expires kept
    # the same policy again: nothing committed
    reg.update_policy("alice", lambda p: p)
    assert reg.generation() == generation + 2


def test_update_policy_of_a_missing_peer_or_a_refused_change_commits_nothing(
    reg: Registry,
) -> None:
    reg.add("alice", pub(1), None, PLAN)
    generation = reg.generation()
    with pytest.raises(PeerNotFound, match="no peer named 'bob'"):
        reg.update_policy("bob", lambda p: p)

    def refuse(_: Policy) -> Policy:
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        reg.update_policy("alice", refuse)
    assert reg.generation() == generation
    assert reg.find("alice") is not None and reg.find("alice").policy == Policy()  # type: ignore[union-attr]


def test_a_version_3_database_migrates_forward(tmp_path: Path) -> None:
    db_path = tmp_path / "state" / store.DB_NAME
    db_path.parent.mkdir()
    alice = keys.encode_key(pub(1))
    with sqlite3.connect(db_path) as db:  # version 3's layout, as it was written
        db.executescript(
            f"""
            CREATE TABLE schema_version (version INTEGER NOT NULL);
            INSERT INTO schema_version VALUES (3);
            CREATE TABLE peers (
                id INTEGER PRIMARY KEY,
                name TEXT NOT NULL UNIQUE,
                public_key TEXT NOT NULL UNIQUE,
                preshared_key TEXT,
                created_at TEXT NOT NULL,
                endpoint TEXT,
                persistent_keepalive INTEGER
            );
            CREATE TABLE addresses (
                address TEXT PRIMARY KEY,
                peer_id INTEGER NOT NULL REFERENCES peers(id) ON DELETE CASCADE
            );
            CREATE INDEX addresses_by_peer ON addresses(peer_id);
            CREATE TABLE changes (generation INTEGER NOT NULL);
            INSERT INTO changes VALUES (9);
            CREATE TABLE routes (
                network TEXT PRIMARY KEY,
                peer_id INTEGER NOT NULL REFERENCES peers(id) ON DELETE CASCADE
            );
            CREATE INDEX routes_by_peer ON routes(peer_id);
            INSERT INTO peers VALUES
                (1, 'alice', '{alice}', NULL, '2025-04-01T10:00:00+00:00', '203.0.113.7:51820', 25);
            INSERT INTO addresses VALUES ('10.8.0.2', 1);
            INSERT INTO routes VALUES ('192.168.9.0/24', 1);
            """
        )
    db.close()
    with Registry.open(db_path) as r:
        assert r.schema_version == store.SCHEMA_VERSION == 5
        assert r.generation() == 9  # a migration is no change of peers
        (a,) = r.peers()
        assert a.policy == Policy()  # every existing peer stays active
        assert (str(a.endpoint), a.persistent_keepalive) == ("203.0.113.7:51820", 25)
        assert a.routes == (ipaddress.ip_network("192.168.9.0/24"),)
        _, new = r.update_policy("alice", lambda p: Policy(enabled=False, expires=EXPIRES))
        assert r.peers() == [new]
