"""Changes pushed: each gateway LISTENs on the PostgreSQL registry's NOTIFY channels
(trivpn.registry.pg_store) and is told of every commit as it happens, so that a `trivpn peer
add|set|remove|disable` on any machine applies on every gateway within a second.

One connection of its own, in a worker thread that blocks on ``notifies()`` for at most
``WAIT_SECONDS`` at a time: the trio thread never waits on the database, and a cancelled
listener's thread sees its stop flag within that long (it is abandoned at once, and closes
its connection itself). A peer change pokes the sync (`PeerSync.poke`: it reads and applies
the change); another gateway's usage tells the keeper (`UsageKeeper.others_added`). A lost
connection is made again every ``RECONNECT_SECONDS``; each (re)connection pokes both, since
what was committed while nobody listened was not pushed. The outage itself is logged by the
sync (`PeerSync.outage`), which finds the server unreachable too: here only debug lines.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Final

import psycopg
import trio

from trivpn.config import StateConfig
from trivpn.registry.pg_store import (
    PEERS_CHANNEL,
    USAGE_CHANNEL,
    Connection,
    connector,
)
from trivpn.registry.store import RegistryError

log = logging.getLogger("trivpn")

WAIT_SECONDS: Final = 0.25  # the longest a stopped listener's thread goes on
RECONNECT_SECONDS: Final = 1.0


class ChangeListener:
    """Tells ``peers_changed`` and ``usage_added`` (trio callbacks that never block) of the
    registry's notifications, until cancelled."""

    def __init__(
        self,
        connect: Callable[[], Connection],
        node: str,
        *,
        peers_changed: Callable[[], None],
        usage_added: Callable[[], None],
    ) -> None:
        self._connect = connect
        self._node = node  # this gateway's, as its usage notifications carry it
        self._peers_changed = peers_changed
        self._usage_added = usage_added
        self.connections = 0  # made so far (the tests wait for the first)

    @classmethod
    def of(
        cls,
        state: StateConfig,
        *,
        peers_changed: Callable[[], None],
        usage_added: Callable[[], None],
    ) -> ChangeListener:
        """The listener of this config's registry; [state] database must be set."""
        assert state.database is not None
        connect = connector(state.database, password=state.database_password, node=state.node)
        return cls(connect, state.node, peers_changed=peers_changed, usage_added=usage_added)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen until cancelled; started at once (the server never waits for the database)."""
        stop = threading.Event()
        token = trio.lowlevel.current_trio_token()
        task_status.started()
        try:
            await trio.to_thread.run_sync(self._listen, stop, token, abandon_on_cancel=True)
        finally:
            stop.set()

    # -- the worker thread ---------------------------------------------------------------------

    def _listen(self, stop: threading.Event, token: trio.lowlevel.TrioToken) -> None:
        while not stop.is_set():
            try:
                db = self._connect()
            except RegistryError as e:
                log.debug("registry push: %s", e)
                stop.wait(RECONNECT_SECONDS)
                continue
            try:
                with db:
                    for channel in (PEERS_CHANNEL, USAGE_CHANNEL):
                        db.execute(f"LISTEN {channel}")
                    self.connections += 1
                    # committed while nobody listened: not pushed, so read now
                    self._tell(token, self._peers_changed, self._usage_added)
                    self._follow(db, stop, token)
            except psycopg.Error as e:
                log.debug("registry push: the connection broke: %s", e)
                stop.wait(RECONNECT_SECONDS)

    def _follow(
        self, db: Connection, stop: threading.Event, token: trio.lowlevel.TrioToken
    ) -> None:
        while not stop.is_set():
            for notify in db.notifies(timeout=WAIT_SECONDS):
                if notify.channel == PEERS_CHANNEL:
                    self._tell(token, self._peers_changed)
                elif notify.payload != self._node:  # not our own: the flush has its sums
                    self._tell(token, self._usage_added)

    def _tell(self, token: trio.lowlevel.TrioToken, *callbacks: Callable[[], None]) -> None:
        for callback in callbacks:
            try:
                trio.from_thread.run_sync(callback, trio_token=token)
            except trio.RunFinishedError:
                return
