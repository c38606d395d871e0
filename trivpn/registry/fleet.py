"""The fleet's sessions: where each gateway sharing a PostgreSQL registry last saw its peers.

Every ``INTERVAL`` the `FleetKeeper` walks the device's peers (in slices, between packets),
stores the sessions that changed since it last stored them (endpoint, latest handshake)
under this gateway's node, reads every gateway's back, and hands the device the map
endpoint -> public key (`Device.fleet_endpoints`) that its failover looks up: transport data
for an unknown session from a peer's known endpoint makes it initiate toward that peer.
The database calls run in a worker thread on a connection of their own; forwarding never
waits for them. A database error is logged at most once a minute; the changed sessions are
stored at the next interval that succeeds, and the map stays the last one read.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import Final, Protocol

import trio

from trivpn.config import StateConfig
from trivpn.dataplane.loglimit import LogLimiter
from trivpn.proto.endpoints import EndpointSyntaxError, format_endpoint, parse_host_port
from trivpn.proto.wireguard import Device
from trivpn.proto.wireguard.cookie import Address
from trivpn.registry.sessions import Session
from trivpn.registry.store import RegistryError
from trivpn.registry.sync import ThreadRunner

log = logging.getLogger("trivpn")

INTERVAL: Final = 1.0  # s: a moved client is known to the fleet this long after
PEER_SLICE: Final = 512  # peers read between two checkpoints
ERROR_LOG_INTERVAL: Final = 60.0


class SessionStore(Protocol):
    """What the keeper needs of the registry (`PgRegistry`)."""

    def record_sessions(self, sessions: Sequence[Session]) -> None: ...
    def sessions(self) -> list[Session]: ...
    def close(self) -> None: ...


def session_store_opener(state: StateConfig) -> Callable[[], SessionStore]:
    """A new connection to [state] database (which must be set)."""
    database = state.database
    assert database is not None

    def open_store() -> SessionStore:
        from trivpn.registry.pg_store import PgRegistry

        return PgRegistry.open(database, password=state.database_password, node=state.node)

    return open_store


def endpoint_map(sessions: Sequence[Session]) -> dict[Address, bytes]:
    """endpoint -> public key; ``sessions`` least recently updated first, so where two peers
    were seen at one endpoint (a NAT reused a mapping) the later one has it."""
    found: dict[Address, bytes] = {}
    for session in sessions:
        if session.endpoint is None:
            continue
        try:
            found[parse_host_port(session.endpoint)] = session.public_key
        except EndpointSyntaxError:
            continue  # not ours to judge: another gateway's row we cannot use
    return found


class FleetKeeper:
    def __init__(
        self,
        device: Device,
        node: str,
        open_store: Callable[[], SessionStore],
        *,
        interval: float = INTERVAL,
        run_sync: ThreadRunner | None = None,
    ) -> None:
        self._device = device
        self._node = node
        self._open_store = open_store
        self._interval = interval
        self._run_sync: ThreadRunner = run_sync or trio.to_thread.run_sync
        self._store: SessionStore | None = None
        self._recorded: dict[bytes, Session] = {}  # as last stored
        self._limiter = LogLimiter(log, interval=ERROR_LOG_INTERVAL)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            while True:
                await self.step()
                await trio.sleep(self._interval)
        finally:
            if self._store is not None:
                self._store.close()
                self._store = None

    async def step(self) -> None:
        """Store the changed sessions and read the fleet's; errors logged, tried again."""
        current = await self._sessions()
        changed = [s for s in current.values() if self._recorded.get(s.public_key) != s]
        try:
            endpoints = await self._run_sync(functools.partial(self._exchange, changed))
        except RegistryError as e:
            self._limiter.warning("fleet", trio.current_time(), "fleet: %s", e)
            return
        self._recorded = current
        self._device.fleet_endpoints = endpoints  # one assignment: the data path sees old or new

    async def _sessions(self) -> dict[bytes, Session]:
        current: dict[bytes, Session] = {}
        for i, peer in enumerate(self._device):
            if i and i % PEER_SLICE == 0:
                await trio.lowlevel.checkpoint()
            if peer.removed or (peer.endpoint is None and peer.last_handshake_time is None):
                continue  # nothing seen of it yet
            endpoint = None if peer.endpoint is None else format_endpoint(peer.endpoint)
            current[peer.public_key] = Session(
                self._node, peer.public_key, endpoint, peer.last_handshake_time
            )
        return current

    def _exchange(self, changed: Sequence[Session]) -> dict[Address, bytes]:
        """In the worker thread: store ``changed``, read every gateway's sessions, and make
        their endpoint map (thousands of rows: not on the trio thread)."""
        if self._store is None:
            self._store = self._open_store()
        try:
            self._store.record_sessions(changed)
            return endpoint_map(self._store.sessions())
        except RegistryError:
            self._store.close()  # a new connection next time
            self._store = None
            raise
