"""The fleet keeper's loop under trio's MockClock, on a store in memory: a step every
INTERVAL, only changed sessions stored and only new rows read, a failing database logged
once a minute (an unreachable one once, and its end once) and its sessions stored when it is
back, old rows pruned on schedule, the connection closed at the end."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import TypeVar

import pytest
import trio
import trio.testing
from support.wg_harness import A_ADDR, A_TUN, B_TUN, Net, ip4

from trivpn.registry.fleet import INTERVAL, PRUNE_INTERVAL, SESSIONS_KEPT, FleetKeeper
from trivpn.registry.sessions import Session
from trivpn.registry.store import RegistryError, RegistryUnreachable

T = TypeVar("T")


class MemoryStore:
    """The sessions table: rows numbered as written (PgRegistry's ``seq``)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, bytes], tuple[int, Session]] = {}
        self.seq = 0
        self.stored: list[list[Session]] = []
        self.read: list[int] = []  # how many rows each read returned
        self.pruned = 0
        self.fail: type[RegistryError] | None = None
        self.opened = 0
        self.closed = 0

    def add(self, session: Session) -> None:
        self.seq += 1
        self.rows.pop((session.node, session.public_key), None)
        self.rows[session.node, session.public_key] = (self.seq, session)

    def record_sessions(self, sessions: Sequence[Session]) -> None:
        if self.fail is not None:
            raise self.fail("the database is away")
        self.stored.append(list(sessions))
        for session in sessions:
            self.add(session)

    def sessions_since(self, seq: int) -> tuple[list[Session], int]:
        found = [(n, s) for n, s in self.rows.values() if n > seq]
        self.read.append(len(found))
        return [s for _, s in found], found[-1][0] if found else seq

    def prune_sessions(self, older_than: float) -> int:
        assert older_than == SESSIONS_KEPT
        self.pruned += 1
        return 0

    def close(self) -> None:
        self.closed += 1


async def inline(fn: Callable[[], T]) -> T:
    return fn()


def test_the_keepers_loop(caplog: pytest.LogCaptureFixture) -> None:
    net = Net(seed=9)
    net.handshake()
    store = MemoryStore()
    other = Session("gw2", b"\x05" * 32, "192.0.2.9:7000", None)
    store.add(other)

    def open_store() -> MemoryStore:
        store.opened += 1
        return store

    keeper = FleetKeeper(net.b, "gw1", open_store, run_sync=inline)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(keeper.run)
            assert net.b.fleet_endpoints == {
                A_ADDR: net.a.public_key,
                ("192.0.2.9", 7000): other.public_key,
            }
            await trio.sleep(INTERVAL * 3.5)
            assert len(store.stored) == 4 and store.stored[1:] == [[], [], []]  # unchanged
            assert store.read == [2, 0, 0, 0]  # then only what was written since: nothing
            store.fail = RegistryError
            net.a_addr = ("198.51.100.4", 40004)
            net.send("A", ip4(A_TUN, B_TUN, b"roamed"))
            with caplog.at_level(logging.WARNING, "trivpn"):
                await trio.sleep(INTERVAL * 5)
            assert caplog.text.count("fleet: the database is away") == 1  # once a minute
            assert store.closed == store.opened == 5  # a new connection for each try
            store.fail = None
            await trio.sleep(INTERVAL)
            (roamed,) = store.stored[-1]
            assert roamed.endpoint == "198.51.100.4:40004"
            assert net.b.fleet_endpoints[("198.51.100.4", 40004)] == net.a.public_key
            nursery.cancel_scope.cancel()
        assert store.closed == store.opened == 6  # closed at the end

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_an_unreachable_database_is_one_outage_and_old_rows_go_on_schedule(
    caplog: pytest.LogCaptureFixture,
) -> None:
    net = Net(seed=9)
    net.handshake()
    store = MemoryStore()
    keeper = FleetKeeper(net.b, "gw1", lambda: store, run_sync=inline)
    gone = Session("gw3", b"\x05" * 32, "192.0.2.9:7000", None)
    caplog.set_level(logging.INFO, logger="trivpn")

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            store.add(gone)
            await nursery.start(keeper.run)
            assert store.pruned == 1  # at start
            assert ("192.0.2.9", 7000) in net.b.fleet_endpoints
            store.fail = RegistryUnreachable
            await trio.sleep(INTERVAL * 30.5)  # between two steps: no tie with one
            store.fail = None
            await trio.sleep(INTERVAL)
            lines = [r.getMessage() for r in caplog.records]
            assert len(lines) == 2, lines
            assert lines[0].startswith("registry: unreachable (the database is away);")
            assert re.fullmatch(r"registry: reachable again after 30 s; catching up", lines[1])
            del store.rows["gw3", gone.public_key]  # pruned, by another gateway
            await trio.sleep(INTERVAL * 3)
            assert ("192.0.2.9", 7000) in net.b.fleet_endpoints  # not read yet: no new row
            await trio.sleep(PRUNE_INTERVAL)
            assert store.pruned == 2
            assert net.b.fleet_endpoints == {A_ADDR: net.a.public_key}  # the table read whole
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
