"""trivpn.registry.store: the SQLite peer registry: allocation, transactions, migrations."""

from __future__ import annotations

import ipaddress
import multiprocessing
import multiprocessing.synchronize
import os
import select
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from trivpn.config import parse_config
from trivpn.proto.wireguard import crypto, keys
from trivpn.registry import store
from trivpn.registry.store import (
    AddressesExhausted,
    AddressPlan,
    AddressUnavailable,
    PeerExists,
    PeerNotFound,
    Registry,
    RegistryBusy,
    RegistryError,
)

V4 = ipaddress.IPv4Network("10.8.0.0/24")
V6 = ipaddress.IPv6Network("fd00:8::/64")
# the server's own address and a pool above .128, as a config would reserve them
PLAN = AddressPlan(
    subnets=(V4, V6),
    reserved=(
        ipaddress.ip_network("10.8.0.1/32"),
        ipaddress.ip_network("fd00:8::1/128"),
        ipaddress.ip_network("10.8.0.128/25"),
    ),
)
CHILD_TIMEOUT = 60.0  # bound on any wait for a child process; normally well under a second


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def pub(n: int) -> bytes:
    """A distinct, valid public key per n."""
    return crypto.public_key(keys.generate_private_key(lambda k: n.to_bytes(4, "big") * (k // 4)))


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "peers.db"


@pytest.fixture
def sqlite_reg(db_path: Path) -> Iterator[Registry]:
    with Registry.open(db_path) as r:
        yield r


# --- creation --------------------------------------------------------------------------------


def test_new_registry_is_private_wal_and_current(db_path: Path) -> None:
    with Registry.open(db_path) as r:
        assert r.schema_version == store.SCHEMA_VERSION == 5
        assert r.peers() == []
        assert r.generation() == 1
        mode = r._db.execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"
        r.add("alice", pub(1), None, PLAN)
        for path in db_path.parent.iterdir():  # the -wal and -shm files too
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(db_path.parent.stat().st_mode) == 0o700


def test_open_without_create_refuses_a_missing_file(db_path: Path) -> None:
    with pytest.raises(RegistryError, match="no peer registry"):
        Registry.open(db_path, create=False)
    assert not db_path.parent.exists()


def test_a_file_that_is_not_a_database_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "peers.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(RegistryError, match="not a usable peer registry"):
        Registry.open(bad)


def test_a_newer_schema_is_refused(db_path: Path) -> None:
    Registry.open(db_path).close()
    with sqlite3.connect(db_path) as db:
        db.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(RegistryError, match="schema version 99 is newer"):
        Registry.open(db_path)


# --- allocation ------------------------------------------------------------------------------


def test_addresses_are_allocated_in_order_in_each_family(reg: Registry) -> None:
    alice = reg.add("alice", pub(1), None, PLAN)
    bob = reg.add("bob", pub(2), None, PLAN)
    assert alice.addresses == (ip("10.8.0.2"), ip("fd00:8::2"))
    assert bob.addresses == (ip("10.8.0.3"), ip("fd00:8::3"))
    assert reg.find("bob") == bob
    assert [p.name for p in reg.peers()] == ["alice", "bob"]


def test_allocation_skips_everything_the_config_reserves() -> None:
    server_key = keys.genkey(lambda n: b"\x01" * n)
    static_pub = keys.encode_key(pub(9))
    cfg = parse_config(
        f"""
        [interface]
        address = ["10.8.0.1/24", "10.8.0.3/24"]
        [wireguard]
        private_key = "{server_key}"
        [[wireguard.peers]]
        name = "static"
        public_key = "{static_pub}"
        allowed_ips = ["10.8.0.2/32", "10.8.0.4/31", "192.168.9.0/24"]
        [toyvpn]
        pool = "10.8.0.8/29"
        """
    )
    plan = AddressPlan.from_config(cfg, crypto.public_key(keys.parse_key(server_key)))
    assert plan.subnets == (V4,)
    free = [plan.free(4, set())]
    taken = set()
    for _ in range(4):
        address = plan.free(4, taken)
        assert address is not None
        taken.add(address)
    # .1 and .3 the server's, .2 and .4-.5 the static peer's, .8-.15 the ToyVPN pool
    assert free == [ip("10.8.0.6")]
    assert sorted(taken) == [ip("10.8.0.6"), ip("10.8.0.7"), ip("10.8.0.16"), ip("10.8.0.17")]
    assert plan.free(6, set()) is None  # no IPv6 subnet configured
    assert plan.reserved_names == {"static"}
    assert plan.reserved_keys == {pub(9), crypto.public_key(keys.parse_key(server_key))}


def test_allocation_jumps_over_large_reserved_ranges() -> None:
    plan = AddressPlan(
        subnets=(V6,),
        reserved=(ipaddress.ip_network("fd00:8::/80"), ipaddress.ip_network("fd00:8:0:0:1::/80")),
    )
    # 2**49 addresses to skip: only done by jumping, not by counting
    assert plan.free(6, set()) == ip("fd00:8::2:0:0:0")
    assert plan.free(6, {ip("fd00:8::2:0:0:0")}) == ip("fd00:8::2:0:0:1")
    everything = AddressPlan(subnets=(V4,), reserved=(ipaddress.ip_network("0.0.0.0/0"),))
    assert everything.free(4, set()) is None


@pytest.mark.parametrize("subnet", ["10.9.0.0/30", "10.9.0.0/31", "10.9.0.7/32", "fd00::/126"])
def test_allocation_hands_out_the_hosts_of_small_subnets(subnet: str) -> None:
    net = ipaddress.ip_network(subnet)
    plan = AddressPlan(subnets=(net,))
    taken: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    while (address := plan.free(net.version, taken)) is not None:
        plan.check(address)
        taken.add(address)
    assert sorted(taken) == list(net.hosts())


def test_only_the_configured_families_are_allocated(tmp_path: Path) -> None:
    plan = AddressPlan(subnets=(V6,))
    with Registry.open(tmp_path / "peers.db") as r:
        assert r.add("alice", pub(1), None, plan).addresses == (ip("fd00:8::1"),)


def test_a_full_subnet_is_reported(tmp_path: Path) -> None:
    plan = AddressPlan(subnets=(ipaddress.ip_network("10.9.0.0/29"),))  # hosts .1 to .6
    with Registry.open(tmp_path / "peers.db") as r:
        given = [r.add(f"p{i}", pub(i), None, plan).addresses[0] for i in range(6)]
        assert given == [ip(f"10.9.0.{i}") for i in range(1, 7)]
        with pytest.raises(AddressesExhausted, match="no free IPv4 address"):
            r.add("p6", pub(6), None, plan)
        assert len(r.peers()) == 6  # the failed add left nothing behind
        assert r.generation() == 7


def test_an_explicit_address_is_used_and_the_other_family_allocated(reg: Registry) -> None:
    peer = reg.add("alice", pub(1), None, PLAN, addresses=[ip("10.8.0.77")])
    assert peer.addresses == (ip("10.8.0.77"), ip("fd00:8::2"))
    both = reg.add("bob", pub(2), None, PLAN, addresses=[ip("fd00:8::99"), ip("10.8.0.9")])
    assert both.addresses == (ip("10.8.0.9"), ip("fd00:8::99"))
    assert reg.add("carol", pub(3), None, PLAN).addresses == (ip("10.8.0.2"), ip("fd00:8::3"))


@pytest.mark.parametrize(
    ("addresses", "reason"),
    [
        (["10.9.0.5"], "outside the interface subnets"),
        (["10.8.0.0"], "network or broadcast"),
        (["10.8.0.255"], "network or broadcast"),
        (["10.8.0.1"], "reserved"),
        (["10.8.0.200"], "reserved"),  # the ToyVPN pool
        (["10.8.0.5", "10.8.0.6"], "at most one IPv4"),
        (["10.8.0.77"], "taken by another peer"),
    ],
)
def test_unavailable_explicit_addresses(reg: Registry, addresses: list[str], reason: str) -> None:
    reg.add("first", pub(1), None, PLAN, addresses=[ip("10.8.0.77")])
    with pytest.raises(AddressUnavailable, match=reason):
        reg.add("second", pub(2), None, PLAN, addresses=[ip(a) for a in addresses])
    assert [p.name for p in reg.peers()] == ["first"]


# --- names and keys --------------------------------------------------------------------------


def test_names_and_public_keys_are_unique(reg: Registry) -> None:
    reg.add("alice", pub(1), None, PLAN)
    with pytest.raises(PeerExists, match="a peer named 'alice' exists already"):
        reg.add("alice", pub(2), None, PLAN)
    with pytest.raises(PeerExists, match="peer 'alice' has this public key"):
        reg.add("bob", pub(1), None, PLAN)
    assert [p.name for p in reg.peers()] == ["alice"]


def test_unique_even_past_the_checks(sqlite_reg: Registry) -> None:
    """The schema itself refuses a second name or address, whatever the code above it does."""
    sqlite_reg.add("alice", pub(1), None, PLAN)
    db = sqlite_reg._db
    with pytest.raises(sqlite3.IntegrityError):
        db.execute("INSERT INTO peers (name, public_key, created_at) VALUES ('alice', 'x', 'now')")
    with pytest.raises(sqlite3.IntegrityError):
        db.execute("INSERT INTO addresses (address, peer_id) VALUES ('10.8.0.2', 1)")


def test_static_names_and_keys_and_bad_input_are_refused(reg: Registry) -> None:
    plan = AddressPlan(
        subnets=(V4,), reserved_names=frozenset({"site"}), reserved_keys=frozenset({pub(7)})
    )
    with pytest.raises(PeerExists, match="in the config file"):
        reg.add("site", pub(1), None, plan)
    with pytest.raises(PeerExists, match="the server's own or a peer's in the config file"):
        reg.add("alice", pub(7), None, plan)
    with pytest.raises(RegistryError, match="expected 1 to 64 characters"):
        reg.add("no spaces", pub(1), None, plan)
    with pytest.raises(RegistryError, match="keys are 32 bytes"):
        reg.add("alice", b"short", None, plan)
    assert reg.peers() == []


def test_the_preshared_key_is_stored_but_never_shown(reg: Registry) -> None:
    psk = os.urandom(32)
    peer = reg.add("alice", pub(1), psk, PLAN)
    assert reg.find("alice") == peer
    assert peer.preshared_key == psk
    assert repr(psk) not in repr(peer) and keys.encode_key(psk) not in repr(peer)
    config = peer.to_peer_config()
    assert config.allowed_ips == (
        ipaddress.ip_network("10.8.0.2/32"),
        ipaddress.ip_network("fd00:8::2/128"),
    )
    assert (config.name, config.public_key, config.preshared_key) == ("alice", pub(1), psk)


# --- removal ---------------------------------------------------------------------------------


def test_removal_frees_the_address_once_the_row_is_gone(reg: Registry) -> None:
    for i, name in enumerate(["a", "b", "c"]):
        reg.add(name, pub(i), None, PLAN)
    b_addresses = reg.find("b").addresses  # type: ignore[union-attr]
    assert reg.add("d", pub(3), None, PLAN).addresses[0] == ip("10.8.0.5")  # b still holds .3
    removed = reg.remove("b")
    assert removed.addresses == b_addresses
    assert reg.find("b") is None
    assert reg.add("e", pub(4), None, PLAN).addresses == b_addresses
    with pytest.raises(PeerNotFound):
        reg.remove("b")


def test_an_uncommitted_removal_frees_nothing(db_path: Path, sqlite_reg: Registry) -> None:
    reg = sqlite_reg
    reg.add("a", pub(1), None, PLAN)
    reg.add("b", pub(2), None, PLAN)
    other = sqlite3.connect(db_path, isolation_level=None)
    try:
        with Registry.open(db_path, timeout=0) as impatient:
            other.execute("BEGIN IMMEDIATE")
            other.execute("DELETE FROM addresses WHERE peer_id = 1")
            other.execute("DELETE FROM peers WHERE name = 'a'")
            # the remover holds the write lock: an add waits (here: gives up at once) rather
            # than see the half-removed peer's address as free
            with pytest.raises(RegistryBusy, match="holds the peer registry's lock"):
                impatient.add("c", pub(3), None, PLAN)
            assert [p.name for p in impatient.peers()] == ["a", "b"]  # readers see the old state
            other.execute("ROLLBACK")
    finally:
        other.close()
    assert reg.add("c", pub(3), None, PLAN).addresses[0] == ip("10.8.0.4")


# --- change detection, for the server -------------------------------------------------------


def test_changes_are_visible_through_generation_and_data_version(db_path: Path) -> None:
    with Registry.open(db_path) as server, Registry.open(db_path) as cli:
        before = server.snapshot()
        data_version = server.data_version()
        assert server.data_version() == data_version  # nothing changed: nothing to read
        cli.add("alice", pub(1), None, PLAN)
        assert server.data_version() != data_version
        after = server.snapshot()
        assert after.generation == before.generation + 1
        assert [p.name for p in after.peers] == ["alice"]
        cli.remove("alice")
        assert server.generation() == before.generation + 2
        assert server.snapshot().peers == ()


# --- concurrency -----------------------------------------------------------------------------

WORKERS = 6
ADDS_EACH = 8


def _add_many(path: str, worker: int, start: multiprocessing.synchronize.Event) -> None:
    start.wait(CHILD_TIMEOUT)
    with Registry.open(Path(path), timeout=CHILD_TIMEOUT) as r:
        for i in range(ADDS_EACH):
            r.add(f"w{worker}-{i}", pub(worker * 100 + i), None, PLAN)


def test_concurrent_adds_in_several_processes_never_share_an_address(db_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=_add_many, args=(str(db_path), w, start)) for w in range(WORKERS)]
    for p in procs:
        p.start()
    start.set()  # all at once, including the very first open that creates the file
    for p in procs:
        p.join(CHILD_TIMEOUT)
    assert [p.exitcode for p in procs] == [0] * WORKERS
    with Registry.open(db_path) as r:
        peers = r.peers()
        assert r.generation() == 1 + WORKERS * ADDS_EACH
    assert len(peers) == WORKERS * ADDS_EACH
    v4 = [p.addresses[0] for p in peers]
    v6 = [p.addresses[1] for p in peers]
    assert len(set(v4)) == len(set(v6)) == len(peers)
    # and no gaps: each add took the lowest free address at its turn
    assert sorted(v4) == [ip(f"10.8.0.{i}") for i in range(2, 2 + len(peers))]


# --- migration -------------------------------------------------------------------------------


def test_a_version_1_database_migrates_forward(db_path: Path) -> None:
    alice, bob = keys.encode_key(pub(1)), keys.encode_key(pub(2))
    psk = keys.encode_key(b"\x05" * 32)
    db_path.parent.mkdir()
    with sqlite3.connect(db_path) as db:  # version 1's layout, as it was written
        db.executescript(
            f"""
            CREATE TABLE schema_version (version INTEGER NOT NULL);
            INSERT INTO schema_version VALUES (1);
            CREATE TABLE peers (
                name TEXT PRIMARY KEY,
                public_key TEXT NOT NULL UNIQUE,
                preshared_key TEXT,
                address TEXT NOT NULL UNIQUE,
                created_at TEXT NOT NULL
            );
            INSERT INTO peers VALUES
                ('bob', '{bob}', NULL, '10.8.0.3', '2024-05-01T10:00:00+00:00'),
                ('alice', '{alice}', '{psk}', '10.8.0.2', '2024-04-01T10:00:00+00:00');
            """
        )
    db.close()
    with Registry.open(db_path) as r:
        assert r.schema_version == 5
        assert r.generation() == 1
        a, b = r.peers()
        assert (a.name, a.public_key, a.preshared_key) == ("alice", pub(1), b"\x05" * 32)
        assert a.addresses == (ip("10.8.0.2"),)
        assert a.created_at.isoformat() == "2024-04-01T10:00:00+00:00"
        assert (b.name, b.preshared_key, b.addresses) == ("bob", None, (ip("10.8.0.3"),))
        # a migrated peer keeps its address; the new peer gets IPv6 too, as any new one
        assert r.add("carol", pub(3), None, PLAN).addresses == (ip("10.8.0.4"), ip("fd00:8::2"))
        tables = {row[0] for row in r._db.execute("SELECT name FROM sqlite_master")}
        assert {"peers", "addresses", "changes", "schema_version"} <= tables
        assert "peers_v2" not in tables
        removed = r.remove("alice")  # the foreign key survived the table's renaming
        assert removed.addresses == (ip("10.8.0.2"),)
        assert r._db.execute("SELECT count(*) FROM addresses").fetchone()[0] == 3  # bob, carol
    with Registry.open(db_path) as again:  # opening a current file changes nothing
        assert again.schema_version == 5 and again.generation() == 3


def test_a_version_2_database_migrates_forward(tmp_path: Path) -> None:
    db_path = tmp_path / "state" / store.DB_NAME
    db_path.parent.mkdir()
    alice = keys.encode_key(pub(1))
    with sqlite3.connect(db_path) as db:  # version 2's layout, as it was written
        db.executescript(
            f"""
            CREATE TABLE schema_version (version INTEGER NOT NULL);
            INSERT INTO schema_version VALUES (2);
            CREATE TABLE peers (
                id INTEGER PRIMARY KEY,
                name TEXT NOT NULL UNIQUE,
                public_key TEXT NOT NULL UNIQUE,
                preshared_key TEXT,
                created_at TEXT NOT NULL
            );
            CREATE TABLE addresses (
                address TEXT PRIMARY KEY,
                peer_id INTEGER NOT NULL REFERENCES peers(id) ON DELETE CASCADE
            );
            CREATE INDEX addresses_by_peer ON addresses(peer_id);
            CREATE TABLE changes (generation INTEGER NOT NULL);
            INSERT INTO changes VALUES (7);
            INSERT INTO peers VALUES (1, 'alice', '{alice}', NULL, '2025-04-01T10:00:00+00:00');
            INSERT INTO addresses VALUES ('10.8.0.2', 1), ('fd00:8::2', 1);
            """
        )
    db.close()
    with Registry.open(db_path) as r:
        assert r.schema_version == 5 and r.generation() == 7
        (a,) = r.peers()
        assert a.addresses == (ip("10.8.0.2"), ip("fd00:8::2"))
        assert (a.routes, a.endpoint, a.persistent_keepalive) == ((), None, None)
        live = store.LivePeer(
            pub(1), None, a.addresses, (ipaddress.ip_network("192.168.9.0/24"),), None, 25
        )
        r.update_live(live, PLAN)
        assert live.same_as(r.peers()[0])
        r.remove("alice")  # its routes go with it
        assert r._db.execute("SELECT count(*) FROM routes").fetchone()[0] == 0


# --- crashes ---------------------------------------------------------------------------------

_CHILD_PRELUDE = """
import ipaddress, sys, time
from pathlib import Path
from trivpn.registry import store
from trivpn.proto.wireguard import crypto, keys

def pub(n):
    return crypto.public_key(keys.generate_private_key(lambda k: n.to_bytes(4, "big") * (k // 4)))

PLAN = store.AddressPlan(subnets=(ipaddress.ip_network("10.8.0.0/24"),))
reg = store.Registry.open(Path(sys.argv[1]))
"""


def _child(script: str, db_path: Path) -> subprocess.Popen[str]:
    code = _CHILD_PRELUDE + textwrap.dedent(script)
    return subprocess.Popen(
        [sys.executable, "-c", code, str(db_path)], stdout=subprocess.PIPE, text=True
    )


def _read_line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], CHILD_TIMEOUT)
    assert ready, "the child said nothing"
    return proc.stdout.readline().strip()


def _kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(CHILD_TIMEOUT) == -signal.SIGKILL


def test_killed_in_the_middle_of_a_change_loses_nothing_committed(db_path: Path) -> None:
    proc = _child(
        """
        for i in range(3):
            reg.add(f"kept{i}", pub(i), None, PLAN)

        def stop_before_commit(self):  # the peer and its address are written, not committed
            print("inside", flush=True)
            time.sleep(600)

        store.Registry._bump_generation = stop_before_commit
        reg.add("doomed", pub(99), None, PLAN)
        """,
        db_path,
    )
    try:
        assert _read_line(proc) == "inside"
    finally:
        _kill(proc)
    with Registry.open(db_path, timeout=CHILD_TIMEOUT) as r:
        assert r._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert [p.name for p in r.peers()] == ["kept0", "kept1", "kept2"]
        assert r.generation() == 4
        # the lock died with the process, and so did the address it had taken
        v4_only = AddressPlan(subnets=(V4,))  # the child's plan
        assert r.add("next", pub(5), None, v4_only).addresses == (ip("10.8.0.4"),)


def test_killed_while_adding_in_a_loop_keeps_every_peer_it_reported(db_path: Path) -> None:
    proc = _child(
        """
        PLAN = store.AddressPlan(subnets=(ipaddress.ip_network("10.9.0.0/16"),))
        for i in range(60_000):
            reg.add(f"p{i}", pub(i), None, PLAN)
            print(f"p{i}", flush=True)  # after the commit: a promise it is on disk
        """,
        db_path,
    )
    try:
        reported = [_read_line(proc) for _ in range(25)]
    finally:
        _kill(proc)  # somewhere in the 26th add or later
    with Registry.open(db_path, timeout=CHILD_TIMEOUT) as r:
        assert r._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        names = {p.name for p in r.peers()}
        orphans = r._db.execute(
            "SELECT count(*) FROM addresses WHERE peer_id NOT IN (SELECT id FROM peers)"
        ).fetchone()[0]
        bare = r._db.execute(
            "SELECT count(*) FROM peers WHERE id NOT IN (SELECT peer_id FROM addresses)"
        ).fetchone()[0]
    assert set(reported) <= names
    assert (orphans, bare) == (0, 0)  # every change was all or nothing
