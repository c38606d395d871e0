"""trivpn.registry.pg_store against a real PostgreSQL: what differs from SQLite (the schema, the
database deciding races between writers, data_version) and what must hold across processes.
The behaviour both stores share is tested on both in tests/registry/test_store*.py."""

from __future__ import annotations

import ipaddress
import multiprocessing
import multiprocessing.synchronize
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from trivpn.proto.ip import IPAddress
from trivpn.proto.usage import PeriodCount, UsageDelta
from trivpn.proto.wireguard import crypto, keys
from trivpn.registry import pg_store
from trivpn.registry.pg_schema import SCHEMA_VERSION
from trivpn.registry.pg_store import PgRegistry, describe
from trivpn.registry.store import AddressPlan, PeerExists, RegistryBusy, RegistryError

pytestmark = pytest.mark.postgres

V4 = ipaddress.IPv4Network("10.8.0.0/24")
V6 = ipaddress.IPv6Network("fd00:8::/64")
PLAN = AddressPlan(subnets=(V4, V6), reserved=(ipaddress.ip_network("10.8.0.1/32"),))
CHILD_TIMEOUT = 60.0
DEC_30 = 1798632000.0  # 2026-12-30T12:00:00Z


def pub(n: int) -> bytes:
    return crypto.public_key(keys.generate_private_key(lambda k: n.to_bytes(4, "big") * (k // 4)))


@pytest.fixture
def pg(pg_url: str) -> Iterator[PgRegistry]:
    with PgRegistry.open(pg_url) as r:
        yield r


# --- schema -----------------------------------------------------------------------------------


def test_an_empty_database_gets_the_schema_and_reopening_changes_nothing(pg_url: str) -> None:
    with PgRegistry.open(pg_url) as r:
        assert r.schema_version == SCHEMA_VERSION
        assert r.generation() == 1
        tables = {
            row[0]
            for row in r._db.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            ).fetchall()
        }
        assert tables == {
            "schema_version",
            "changes",
            "peers",
            "addresses",
            "routes",
            "usage",
            "sessions",
        }
        r.add("alice", pub(1), None, PLAN)
    with PgRegistry.open(pg_url) as again:
        assert again.schema_version == SCHEMA_VERSION
        assert [p.name for p in again.peers()] == ["alice"]
        assert again.generation() == 2


def test_gateways_opening_a_new_database_at_once_migrate_it_once(pg_url: str) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def open_it() -> None:
        try:
            start.wait(CHILD_TIMEOUT)
            PgRegistry.open(pg_url).close()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=open_it) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(CHILD_TIMEOUT)
    assert errors == []
    with PgRegistry.open(pg_url) as r:
        assert r._db.execute("SELECT count(*) FROM schema_version").fetchone() == (1,)
        assert r._db.execute("SELECT count(*) FROM changes").fetchone() == (1,)


def test_a_newer_schema_is_refused(pg: PgRegistry, pg_url: str) -> None:
    pg._db.execute("UPDATE schema_version SET version = %s", (SCHEMA_VERSION + 1,))
    newer = rf"schema version {SCHEMA_VERSION + 1} is newer than this trivpn .*\({SCHEMA_VERSION}\)"
    with pytest.raises(RegistryError, match=newer):
        PgRegistry.open(pg_url)


def test_a_version_1_database_gets_the_sessions_table(pg: PgRegistry, pg_url: str) -> None:
    pg.add("alice", pub(1), None, PLAN)
    pg._db.execute("DROP TABLE sessions")
    pg._db.execute("UPDATE schema_version SET version = 1")
    with PgRegistry.open(pg_url) as again:
        assert again.schema_version == SCHEMA_VERSION
        assert again.sessions() == []
        assert [p.name for p in again.peers()] == ["alice"]


def test_unique_even_past_the_checks(pg: PgRegistry) -> None:
    """The schema itself refuses a second name, key or address, whatever the code above does."""
    pg.add("alice", pub(1), None, PLAN)
    with pytest.raises(psycopg.errors.UniqueViolation):
        pg._db.execute(
            "INSERT INTO peers (name, public_key, created_at) VALUES ('alice', 'x', now())"
        )
    (peer_id,) = pg._db.execute("SELECT id FROM peers").fetchone()  # type: ignore[misc]
    with pytest.raises(psycopg.errors.UniqueViolation):
        pg._db.execute(
            "INSERT INTO addresses (address, peer_id) VALUES ('10.8.0.2', %s)", (peer_id,)
        )
    with pytest.raises(psycopg.errors.InvalidTextRepresentation):  # inet checks the syntax
        pg._db.execute("INSERT INTO addresses (address, peer_id) VALUES ('10.8.0', %s)", (peer_id,))


# --- writers racing: the database decides -------------------------------------------------------


def test_an_add_that_loses_the_race_for_an_address_takes_the_next(
    pg: PgRegistry, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another gateway commits the address this add chose, between its reading what is taken
    and its claim: the UNIQUE constraint keeps the claim from taking it, and the add goes on
    with the next free address, in the same transaction."""
    claimed: list[tuple[str, bool]] = []
    claim = pg._claim
    with PgRegistry.open(pg_url) as other:

        def claim_while_another_gateway_adds(peer_id: int, address: IPAddress) -> bool:
            if not claimed:
                other.add("other", pub(2), None, PLAN)  # the same free addresses, committed
            got = claim(peer_id, address)
            claimed.append((str(address), got))
            return got

        monkeypatch.setattr(pg, "_claim", claim_while_another_gateway_adds)
        mine = pg.add("mine", pub(1), None, PLAN)
    assert claimed == [
        ("10.8.0.2", False),  # `other`'s by then
        ("10.8.0.3", True),
        ("fd00:8::1", False),
        ("fd00:8::2", True),
    ]
    assert mine.addresses == (ipaddress.ip_address("10.8.0.3"), ipaddress.ip_address("fd00:8::2"))
    assert pg.find("mine") == mine
    assert {p.name: p.addresses for p in pg.peers()}["other"] == (
        ipaddress.ip_address("10.8.0.2"),
        ipaddress.ip_address("fd00:8::1"),
    )
    assert pg.generation() == 3


def test_two_adds_of_one_name_at_once_the_database_keeps_one(
    pg: PgRegistry, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The name is free when this add checks it, taken when it inserts: the insert's UNIQUE
    violation rolls the add back, and its second run refuses the name as taken."""
    insert = pg._insert_peer
    attempts: list[str] = []
    with PgRegistry.open(pg_url) as other:

        def insert_after_another_gateway(*args: Any) -> int:
            attempts.append(args[0])
            if len(attempts) == 1:
                other.add("alice", pub(2), None, PLAN)
            return insert(*args)

        monkeypatch.setattr(pg, "_insert_peer", insert_after_another_gateway)
        with pytest.raises(PeerExists, match="a peer named 'alice' exists already"):
            pg.add("alice", pub(1), None, PLAN)
    assert attempts == ["alice"]  # the second run stopped at the check, before inserting
    assert [(p.name, p.public_key) for p in pg.peers()] == [("alice", pub(2))]
    assert pg.generation() == 2


def test_a_writer_that_keeps_losing_gives_up_after_a_bound(
    pg: PgRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts: list[str] = []

    def deadlocked(*args: Any) -> int:
        attempts.append(args[0])
        raise psycopg.errors.DeadlockDetected("deadlock detected")

    monkeypatch.setattr(pg, "_insert_peer", deadlocked)
    with pytest.raises(RegistryBusy, match="other writers won 8 times in a row; try again"):
        pg.add("mine", pub(1), None, PLAN)
    assert len(attempts) == pg_store.WRITE_ATTEMPTS == 8
    assert pg.peers() == [] and pg.generation() == 1


WORKERS = 5
ADDS_EACH = 10  # 50 adds at once, all to the same free address at first


def _add_many(url: str, worker: int, start: multiprocessing.synchronize.Event) -> None:
    start.wait(CHILD_TIMEOUT)
    with PgRegistry.open(url) as r:
        for i in range(ADDS_EACH):
            r.add(f"w{worker}-{i}", pub(worker * 100 + i), None, PLAN)


def test_concurrent_adds_in_several_processes_never_share_an_address(pg_url: str) -> None:
    PgRegistry.open(pg_url).close()  # the schema; the racing is the adds'
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=_add_many, args=(pg_url, w, start)) for w in range(WORKERS)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(CHILD_TIMEOUT)
    assert [p.exitcode for p in procs] == [0] * WORKERS
    with PgRegistry.open(pg_url) as r:
        peers = r.peers()
        assert r.generation() == 1 + WORKERS * ADDS_EACH
    assert len(peers) == WORKERS * ADDS_EACH
    v4 = [p.addresses[0] for p in peers]
    v6 = [p.addresses[1] for p in peers]
    assert len(set(v4)) == len(set(v6)) == len(peers)
    # no gaps: each add took the lowest address free when its claim was decided
    assert sorted(v4) == [ipaddress.ip_address(f"10.8.0.{i}") for i in range(2, 2 + len(peers))]


def test_concurrent_policy_changes_of_different_settings_both_count(pg_url: str) -> None:
    import dataclasses

    with PgRegistry.open(pg_url) as a, PgRegistry.open(pg_url) as b:
        a.add("alice", pub(1), None, PLAN)
        inside = threading.Event()
        release = threading.Event()

        def slow_disable(policy: object) -> object:
            inside.set()
            release.wait(CHILD_TIMEOUT)
            return dataclasses.replace(policy, enabled=False)  # type: ignore[type-var]

        t = threading.Thread(target=lambda: a.update_policy("alice", slow_disable))
        t.start()
        assert inside.wait(CHILD_TIMEOUT)
        done = threading.Event()

        def rate() -> None:
            b.update_policy("alice", lambda p: dataclasses.replace(p, rate_up=1000))
            done.set()

        t2 = threading.Thread(target=rate)
        t2.start()
        assert not done.wait(0.3)  # the row is locked by the change under way
        release.set()
        t.join(CHILD_TIMEOUT)
        t2.join(CHILD_TIMEOUT)
        policy = a.find("alice").policy  # type: ignore[union-attr]
        assert (policy.enabled, policy.rate_up) == (False, 1000)


# --- change detection and usage ---------------------------------------------------------------


def test_data_version_is_the_generation_and_moves_with_every_peer_change(pg_url: str) -> None:
    with PgRegistry.open(pg_url) as server, PgRegistry.open(pg_url) as cli:
        version = server.data_version()
        assert server.data_version() == version
        cli.add("alice", pub(1), None, PLAN)
        assert server.data_version() == version + 1 == server.generation()
        cli.add_usage([UsageDelta(pub(1), 10, 20)], DEC_30)
        assert server.data_version() == version + 1  # usage is not a peer change
        cli.reset_usage("alice")
        assert server.data_version() == version + 2  # a reset is: servers reload it


def test_concurrent_usage_adders_on_two_connections_add_up(pg: PgRegistry, pg_url: str) -> None:
    key = pub(1)
    rounds = 100

    def add_from_another_gateway() -> None:
        with PgRegistry.open(pg_url) as other:
            for _ in range(rounds):
                other.add_usage([UsageDelta(key, 1, 2)], DEC_30)

    thread = threading.Thread(target=add_from_another_gateway)
    thread.start()
    for _ in range(rounds):
        pg.add_usage([UsageDelta(key, 10, 20)], DEC_30)
    thread.join(CHILD_TIMEOUT)
    record = pg.usage_records([key])[key]
    assert (record.lifetime_rx, record.lifetime_tx) == (11 * rounds, 22 * rounds)
    assert record.month == PeriodCount("2026-12-01", 33 * rounds)


# --- connecting -------------------------------------------------------------------------------


def test_an_unreachable_database_is_one_line_without_the_password(tmp_path: object) -> None:
    conninfo = f"host={tmp_path} dbname=trivpn user=gw"  # no server listens there
    with pytest.raises(RegistryError) as raised:
        PgRegistry.open(conninfo, password="s3cret-pw")
    message = str(raised.value)
    assert message.startswith(f"PostgreSQL database trivpn on {tmp_path}: cannot connect: ")
    assert "\n" not in message and "s3cret" not in message


def test_describe_names_the_database_and_host_never_the_password() -> None:
    assert describe("postgresql://gw:pw@db.example.net/fleet") == (
        "PostgreSQL database fleet on db.example.net"
    )
    assert describe("host=/run/pg dbname=trivpn password=x") == (
        "PostgreSQL database trivpn on /run/pg"
    )
    assert describe("not a conninfo") == "the PostgreSQL registry"


def test_the_password_reaches_the_server(pg_server: object, pg_url: str) -> None:
    """A role that must log in with a password (scram over the socket) gets in with the right
    one, and is refused, without the password in the message, with a wrong one."""
    from support.postgres import PostgresServer

    assert isinstance(pg_server, PostgresServer)
    with PgRegistry.open(pg_url) as admin:
        admin._db.execute("CREATE ROLE gw LOGIN PASSWORD 'right-pw'")
        dbname = admin._db.info.dbname
        admin._db.execute(f'GRANT ALL ON DATABASE "{dbname}" TO gw')
        admin._db.execute("GRANT ALL ON ALL TABLES IN SCHEMA public TO gw")
    conninfo = f"host={pg_server.socket_dir} dbname={dbname} user=gw"
    with pg_server.password_auth_for("gw"):
        with PgRegistry.open(conninfo, password="right-pw") as gw:
            assert gw.peers() == []
        with pytest.raises(RegistryError, match="password authentication failed") as raised:
            PgRegistry.open(conninfo, password="wrong-pw")
        assert "wrong-pw" not in str(raised.value)


def test_a_broken_connection_fails_one_call_and_the_next_connects_again(
    pg: PgRegistry, pg_url: str
) -> None:
    pg.add("alice", pub(1), None, PLAN)
    with PgRegistry.open(pg_url) as admin:  # as a database restart would
        admin._db.execute("SELECT pg_terminate_backend(%s)", (pg._db.info.backend_pid,))
    with pytest.raises(RegistryError) as raised:
        pg.peers()
    assert str(raised.value).startswith(pg.where + ": ")
    assert "\n" not in str(raised.value)
    assert [p.name for p in pg.peers()] == ["alice"]
    assert pg.add("bob", pub(2), None, PLAN).name == "bob"


def test_the_session_is_utc_named_by_its_node_and_keeps_the_conninfo_options(
    pg_url: str,
) -> None:
    url = pg_url + "&options=-c%20statement_timeout%3D12345"
    with PgRegistry.open(url, node="gw1") as r:
        show = r._db.execute(
            "SELECT current_setting('TimeZone'), current_setting('application_name'), "
            "current_setting('statement_timeout'), current_setting('lock_timeout')"
        ).fetchone()
    assert show == ("UTC", "trivpn gw1", "12345ms", "10s")


def test_peers_are_listed_in_byte_order_whatever_the_locale(pg: PgRegistry) -> None:
    # a locale that sorts letters before punctuation and case-blind, as a server's may
    pg._db.execute('ALTER TABLE peers ALTER COLUMN name TYPE text COLLATE "en-x-icu"')
    for n, name in enumerate(["bob", "Alice", "alice", "_x", "Zed"]):
        pg.add(name, pub(n + 1), None, PLAN)
    assert [p.name for p in pg.peers()] == ["Alice", "Zed", "_x", "alice", "bob"]
