"""The fleet's sessions (trivpn.registry.fleet) in a real PostgreSQL: each gateway stores its
peers' changed sessions under its node, and every gateway's device gets the map endpoint ->
public key that its failover looks up."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence

import pytest
import trio
from support.wg_harness import A_ADDR, A_TUN, B_TUN, Net, ip4

from trivpn.registry.fleet import FleetKeeper, endpoint_map
from trivpn.registry.pg_schema import SCHEMA_VERSION
from trivpn.registry.pg_store import PgRegistry
from trivpn.registry.sessions import Session, latest_by_key
from trivpn.registry.store import AddressPlan, RegistryError

pytestmark = pytest.mark.postgres

KEY_1, KEY_2 = b"\x01" * 32, b"\x02" * 32
PLAN = AddressPlan(subnets=(ipaddress.IPv4Network("10.8.0.0/24"),))


class Spy:
    """A PgRegistry that remembers what it was asked to store, and fails on demand."""

    def __init__(self, url: str) -> None:
        self.store = PgRegistry.open(url)
        self.recorded: list[list[Session]] = []
        self.fail = False

    def record_sessions(self, sessions: Sequence[Session]) -> None:
        if self.fail:
            raise RegistryError("the database is away")
        self.recorded.append(list(sessions))
        self.store.record_sessions(sessions)

    def sessions_since(self, seq: int) -> tuple[list[Session], int]:
        return self.store.sessions_since(seq)

    def prune_sessions(self, older_than: float) -> int:
        return self.store.prune_sessions(older_than)

    def close(self) -> None:
        self.store.close()


def test_sessions_are_stored_per_node_and_updated_in_place(pg_url: str) -> None:
    with PgRegistry.open(pg_url) as db:
        db.record_sessions([Session("gw1", KEY_1, "192.0.2.7:4000", 1_800_000_000.5)])
        db.record_sessions([Session("gw2", KEY_1, "[2001:db8::7]:4001", None)])
        db.record_sessions([Session("gw1", KEY_2, None, None)])
        db.record_sessions([Session("gw1", KEY_1, "192.0.2.8:4000", 1_800_000_100.0)])
        assert db.generation() == 1  # not a peer change
        assert db.sessions() == [  # least recently updated first
            Session("gw2", KEY_1, "[2001:db8::7]:4001", None),
            Session("gw1", KEY_2, None, None),
            Session("gw1", KEY_1, "192.0.2.8:4000", 1_800_000_100.0),
        ]
        assert endpoint_map(db.sessions()) == {
            ("2001:db8::7", 4001): KEY_1,
            ("192.0.2.8", 4000): KEY_1,
        }
        assert latest_by_key(db.sessions()) == {
            KEY_1: Session("gw1", KEY_1, "192.0.2.8:4000", 1_800_000_100.0),
            KEY_2: Session("gw1", KEY_2, None, None),
        }


def test_the_later_of_two_peers_seen_at_one_endpoint_has_it() -> None:
    sessions = [Session("gw1", KEY_1, "192.0.2.7:4000", None)]
    sessions.append(Session("gw2", KEY_2, "192.0.2.7:4000", None))
    assert endpoint_map(sessions) == {("192.0.2.7", 4000): KEY_2}
    assert endpoint_map([Session("gw1", KEY_1, "not an endpoint", None)]) == {}


def test_keepers_store_changed_sessions_and_give_each_device_the_fleets_map(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    gw1 = Net(seed=5)  # B is gateway 1, with a session of client A
    gw1.handshake()
    gw2 = Net(seed=6)  # gateway 2: its peer has not been seen yet
    spy1, spy2 = Spy(pg_url), Spy(pg_url)
    keeper1 = FleetKeeper(gw1.b, "gw1", lambda: spy1)
    keeper2 = FleetKeeper(gw2.b, "gw2", lambda: spy2)
    a_key = gw1.a.public_key

    trio.run(keeper1.step)
    trio.run(keeper2.step)
    (stored,) = spy1.recorded
    assert stored == [Session("gw1", a_key, "198.51.100.2:40000", gw1.b_peer.last_handshake_time)]
    assert spy2.recorded == [[]]  # nothing seen of its peer yet
    assert gw1.b.fleet_endpoints == gw2.b.fleet_endpoints == {A_ADDR: a_key}

    trio.run(keeper1.step)
    assert spy1.recorded[-1] == []  # unchanged: not stored again

    gw1.a_addr = ("198.51.100.3", 40001)  # A roams; the next step stores it
    gw1.send("A", ip4(A_TUN, B_TUN, b"roamed"))
    assert gw1.b_peer.endpoint == gw1.a_addr
    spy1.fail = True
    with caplog.at_level(logging.WARNING, "trivpn"):
        trio.run(keeper1.step)
    assert "fleet: the database is away" in caplog.text
    assert gw1.b.fleet_endpoints == {A_ADDR: a_key}  # the last map read stays
    spy1.fail = False
    spy1.store = PgRegistry.open(pg_url)  # the keeper closed the failed one
    trio.run(keeper1.step)
    assert spy1.recorded[-1] == [
        Session("gw1", a_key, "198.51.100.3:40001", gw1.b_peer.last_handshake_time)
    ]
    trio.run(keeper2.step)
    assert gw2.b.fleet_endpoints == {("198.51.100.3", 40001): a_key}
    spy1.close()
    spy2.close()


def test_a_reader_gets_only_the_rows_written_since_its_last_read(pg_url: str) -> None:
    with PgRegistry.open(pg_url) as db, PgRegistry.open(pg_url) as other:
        assert db.sessions_since(0) == ([], 0)
        db.record_sessions([Session("gw1", KEY_1, "192.0.2.7:4000", None)])
        other.record_sessions([Session("gw2", KEY_2, "192.0.2.8:4000", None)])
        rows, seq = db.sessions_since(0)
        assert [s.node for s in rows] == ["gw1", "gw2"]
        assert db.sessions_since(seq) == ([], seq)  # nothing new: nothing read
        moved = Session("gw1", KEY_1, "192.0.2.9:4000", 1_800_000_000.0)
        db.record_sessions([moved])  # written again: numbered after the others
        assert db.sessions_since(seq)[0] == [moved]
        assert db.sessions()[-1] == moved


def test_old_sessions_are_pruned_and_a_removed_peers_go_with_it(pg_url: str) -> None:
    with PgRegistry.open(pg_url) as db:
        peer = db.add("alice", KEY_1, None, PLAN)
        db.record_sessions(
            [
                Session("gw1", peer.public_key, "192.0.2.7:4000", None),
                Session("gw2", peer.public_key, "192.0.2.8:4000", None),
                Session("gw3", KEY_2, "192.0.2.9:4000", None),  # a static peer's
            ]
        )
        db._db.execute(
            "UPDATE sessions SET updated_at = now() - interval '2 days' WHERE node = 'gw3'"
        )
        assert db.prune_sessions(86400.0) == 1  # gw3 left the fleet a day before
        assert [s.node for s in db.sessions()] == ["gw1", "gw2"]
        assert db.prune_sessions(86400.0) == 0
        db.remove("alice")
        assert db.sessions() == []


def test_a_version_2_database_numbers_its_sessions(pg_url: str) -> None:
    with PgRegistry.open(pg_url) as db:
        db.record_sessions([Session("gw1", KEY_1, None, None), Session("gw2", KEY_1, None, None)])
        db._db.execute("ALTER TABLE sessions DROP COLUMN seq")  # the sequence goes with it
        db._db.execute("UPDATE schema_version SET version = 2")
    with PgRegistry.open(pg_url) as again:
        assert again.schema_version == SCHEMA_VERSION == 3
        rows, seq = again.sessions_since(0)
        assert [s.node for s in rows] == ["gw1", "gw2"] and seq == 2
        again.record_sessions([Session("gw1", KEY_1, "192.0.2.7:4000", None)])
        assert again.sessions_since(seq)[0] == [Session("gw1", KEY_1, "192.0.2.7:4000", None)]
