"""The fleet keeper's loop under trio's MockClock, on a store in memory: a step every
INTERVAL, only changed sessions stored, a failing database logged once a minute and its
sessions stored when it is back, the connection closed at the end."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

import pytest
import trio
import trio.testing
from support.wg_harness import A_ADDR, A_TUN, B_TUN, Net, ip4

from trivpn.registry.fleet import INTERVAL, FleetKeeper
from trivpn.registry.sessions import Session
from trivpn.registry.store import RegistryError

T = TypeVar("T")


class MemoryStore:
    def __init__(self) -> None:
        self.rows: dict[tuple[str, bytes], Session] = {}
        self.stored: list[list[Session]] = []
        self.fail = False
        self.opened = 0
        self.closed = 0

    def record_sessions(self, sessions: Sequence[Session]) -> None:
        if self.fail:
            raise RegistryError("the database is away")
        self.stored.append(list(sessions))
        self.rows.update({(s.node, s.public_key): s for s in sessions})

    def sessions(self) -> list[Session]:
        return list(self.rows.values())

    def close(self) -> None:
        self.closed += 1


async def inline(fn: Callable[[], T]) -> T:
    return fn()


def test_the_keepers_loop(caplog: pytest.LogCaptureFixture) -> None:
    net = Net(seed=9)
    net.handshake()
    store = MemoryStore()
    other = Session("gw2", b"\x05" * 32, "192.0.2.9:7000", None)
    store.rows[("gw2", other.public_key)] = other

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
            store.fail = True
            net.a_addr = ("198.51.100.4", 40004)
            net.send("A", ip4(A_TUN, B_TUN, b"roamed"))
            with caplog.at_level(logging.WARNING, "trivpn"):
                await trio.sleep(INTERVAL * 5)
            assert caplog.text.count("fleet: the database is away") == 1  # once a minute
            assert store.closed == store.opened == 5  # a new connection for each try
            store.fail = False
            await trio.sleep(INTERVAL)
            (roamed,) = store.stored[-1]
            assert roamed.endpoint == "198.51.100.4:40004"
            assert net.b.fleet_endpoints[("198.51.100.4", 40004)] == net.a.public_key
            nursery.cancel_scope.cancel()
        assert store.closed == store.opened == 6  # closed at the end

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
