"""The fleet's sessions: where each gateway sharing a PostgreSQL registry last saw its peers.

Every ``INTERVAL`` the `FleetKeeper` walks the device's peers (in slices, between packets),
stores the sessions that changed since it last stored them (endpoint, latest handshake)
under this gateway's node, reads the rows any gateway wrote since its last read (by their
``seq``: a fleet at rest reads nothing), and hands the device the map endpoint -> public
key (`Device.fleet_endpoints`) that its failover looks up: transport data for an unknown
session from a peer's known endpoint makes it initiate toward that peer. Each peer's latest
session on any gateway (`latest`) tells `trivpn status` which gateway a peer is on.

Every ``PRUNE_INTERVAL`` (and at start) it deletes the rows no gateway wrote for
``SESSIONS_KEPT`` (a gateway that left the fleet, a peer idle for a week) and reads the whole
table again, which also drops the rows of peers removed since (their rows go with them).
The database calls run in a worker thread on a connection of their own; forwarding never
waits for them. The database server unreachable is the gateway's outage (`Outage`, shared
with the sync: logged once, and its end once); another database error is logged at most
once a minute. Either way the changed sessions are stored at the next interval that
succeeds, and the map stays the last one read.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Final, Protocol

import trio

from trivpn.config import StateConfig
from trivpn.dataplane.loglimit import LogLimiter
from trivpn.proto.endpoints import EndpointSyntaxError, format_endpoint, parse_host_port
from trivpn.proto.wireguard import Device
from trivpn.proto.wireguard.cookie import Address
from trivpn.registry.outage import Outage
from trivpn.registry.sessions import Session, latest_by_key
from trivpn.registry.store import RegistryError, RegistryUnreachable
from trivpn.registry.sync import ThreadRunner

log = logging.getLogger("trivpn")

INTERVAL: Final = 1.0  # s: a moved client is known to the fleet this long after
PEER_SLICE: Final = 512  # peers read between two checkpoints
ERROR_LOG_INTERVAL: Final = 60.0
PRUNE_INTERVAL: Final = 600.0  # s: how often old rows are deleted and the table read whole
SESSIONS_KEPT: Final = 7 * 86400.0  # s: a row no gateway wrote for this long is deleted


class SessionStore(Protocol):
    """What the keeper needs of the registry (`PgRegistry`)."""

    def record_sessions(self, sessions: Sequence[Session]) -> None: ...
    def sessions_since(self, seq: int) -> tuple[list[Session], int]: ...
    def prune_sessions(self, older_than: float) -> int: ...
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
        outage: Outage | None = None,
    ) -> None:
        self._device = device
        self._node = node
        self._open_store = open_store
        self._interval = interval
        self._run_sync: ThreadRunner = run_sync or trio.to_thread.run_sync
        self._store: SessionStore | None = None
        self._recorded: dict[bytes, Session] = {}  # as last stored
        # the fleet's rows as read, the least recently written first (worker thread only)
        self._fleet: dict[tuple[str, bytes], Session] = {}
        self._seq = 0  # of the last row read
        self._next_prune = -math.inf  # trio time
        self._limiter = LogLimiter(log, interval=ERROR_LOG_INTERVAL)
        self.outage = outage or Outage()  # the server's is the sync's: one log for both
        # each peer's latest session on any gateway, as last read (the status document's)
        self.latest: Mapping[bytes, Session] = {}

    @property
    def node(self) -> str:
        return self._node

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
        prune = trio.current_time() >= self._next_prune
        try:
            read = await self._run_sync(functools.partial(self._exchange, changed, prune))
        except RegistryUnreachable as e:
            self.outage.failed(e)
            return
        except RegistryError as e:
            self._limiter.warning("fleet", trio.current_time(), "fleet: %s", e)
            return
        self.outage.succeeded()
        self._recorded = current
        if prune:
            self._next_prune = trio.current_time() + PRUNE_INTERVAL
        if read is not None:  # one assignment each: the data path sees old or new
            self._device.fleet_endpoints, self.latest = read

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

    def _exchange(
        self, changed: Sequence[Session], prune: bool
    ) -> tuple[dict[Address, bytes], dict[bytes, Session]] | None:
        """In the worker thread: store ``changed``, read the rows written since the last read
        (``prune``: delete the old ones and read them all), and make the fleet's endpoint map
        and each peer's latest session (thousands of rows: not on the trio thread); None when
        no row was new."""
        if self._store is None:
            self._store = self._open_store()
        try:
            self._store.record_sessions(changed)
            if prune:
                self._store.prune_sessions(SESSIONS_KEPT)
                self._fleet, self._seq = {}, 0
            rows, self._seq = self._store.sessions_since(self._seq)
        except RegistryError:
            self._store.close()  # a new connection next time
            self._store = None
            raise
        if not rows and not prune:
            return None
        for session in rows:  # a row written again moves to the end: the latest wins
            self._fleet.pop((session.node, session.public_key), None)
            self._fleet[session.node, session.public_key] = session
        fleet = list(self._fleet.values())
        return endpoint_map(fleet), latest_by_key(fleet)
