"""Usage that survives restarts: the running server's per-peer usage, kept in the registry.

The `UsageKeeper` joins the front's peer policies (`PeerPolicies`: what each peer counted
and has not stored yet) and the registry's ``usage`` table:

- start-up: every record is loaded before the WireGuard socket serves, so a peer over its
  quota is blocked from the first packet after a restart;
- every ``FLUSH_INTERVAL``, at shutdown and before a reload: the pending deltas are *added*
  to the registry's rows (never totals: usage never goes back, and writers add up), and the
  rows after are the peers' records from then on. After a SIGKILL at most one interval's
  traffic is lost (plus what the interrupted transaction held);
- after another process committed (`PeerSync.on_foreign_commit`: a `peer reset-usage`,
  say) every record is read again, so a reset unblocks within about ``POLL_INTERVAL``;
- in a fleet, after another gateway added its deltas (`others_added`, told by a NOTIFY,
  trivpn.registry.pg_listen) every record is read again, at most once per
  ``OTHERS_RELOAD_INTERVAL``: a peer this gateway counts nothing for sees the fleet's sum
  too, so a quota crossed by the sum blocks on every gateway within a few seconds (the
  adding gateway's flush interval plus this one). A NOTIFY rather than a timed reload: a
  lone gateway, or a fleet at rest, reads nothing.

Every database call goes through `PeerSync.with_registry`: one connection and one worker
thread for both, so calls never overlap and our own commits do not look like another
process's. A database error (locked, disk full, read-only) is logged at most once a minute
and the call retried at the next interval; the deltas stay pending, forwarding never waits.
The database server unreachable is an outage (logged once and its end once, by
`PeerSync.outage`): the deltas stay pending for as long as it lasts, one per peer (the meters
hold counters, not a log of packets: the memory is bounded by the number of peers, not by
the duration), and the first flush after it stores them all. Bytes counted before a period's
roll-over and stored after it count in the new period (lifetime and total are exact); only
a shutdown during the outage loses the deltas still pending (logged).
The registry file is made by the first flush that has something to store (a server with
static peers only has none before).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Final, Generic, Protocol, TypeVar

import trio

from trivpn.dataplane.loglimit import LogLimiter
from trivpn.proto.usage import UsageDelta, UsageRecord
from trivpn.registry.api import RegistryStore
from trivpn.registry.store import RegistryUnreachable

log = logging.getLogger("trivpn")

FLUSH_INTERVAL: Final = 5.0  # s: the most traffic a SIGKILL can lose
LOAD_SLICE: Final = 512  # records handed to the front between two checkpoints
SHUTDOWN_SECONDS: Final = 5.0  # the final flush's bound (a locked database must not hang exit)
ERROR_LOG_INTERVAL: Final = 60.0  # s: a broken database is not a line per flush
OTHERS_RELOAD_INTERVAL: Final = 2.0  # s: the most often other gateways' additions are read

T = TypeVar("T")


class Pending(Protocol):
    """One peer's bytes counted and not stored yet (`PendingUsage`)."""

    @property
    def public_key(self) -> bytes: ...
    @property
    def delta(self) -> UsageDelta: ...


P = TypeVar("P", bound=Pending)


class UsagePolicies(Protocol[P]):
    """What the keeper needs of the front's peer policies (`PeerPolicies`)."""

    def pending_usage(self) -> list[P]: ...
    def usage_stored(self, stored: Mapping[bytes, UsageRecord], taken: Sequence[P]) -> None: ...
    def load_usage(self, records: Mapping[bytes, UsageRecord]) -> None: ...


class RegistryAccess(Protocol):
    """`PeerSync.with_registry`: a call on the shared connection, in its worker thread."""

    def __call__(
        self, fn: Callable[[RegistryStore], T], /, *, create: bool = False, close: bool = False
    ) -> Awaitable[T | None]: ...


class UsageKeeper(Generic[P]):
    def __init__(
        self,
        policies: UsagePolicies[P],
        registry: RegistryAccess,
        *,
        flush_interval: float = FLUSH_INTERVAL,
        wallclock: Callable[[], float] = time.time,
    ) -> None:
        self.policies = policies
        self.flush_interval = flush_interval
        self._registry = registry
        self._wallclock = wallclock
        self._lock = trio.Lock()  # a flush and a load never interleave (nor two flushes)
        self._loaded = False  # every record read once (retried until it is)
        self._reload_wanted = False
        self._others_added = False  # another gateway stored usage: read it (throttled)
        self._next_others_reload = -math.inf  # trio time
        # taken for a flush that failed: the policies forget a removed peer's last delta
        # once they handed it out, so it is kept here until stored
        self._unsent: dict[bytes, P] = {}
        self._wake = trio.Event()
        self._limiter = LogLimiter(log, interval=ERROR_LOG_INTERVAL)

    def registry_changed(self) -> None:
        """Another process committed (`PeerSync.on_foreign_commit`): read every record again
        soon. Never blocks."""
        self._reload_wanted = True
        self._wake.set()

    def others_added(self) -> None:
        """Another gateway added usage: read every record again within
        ``OTHERS_RELOAD_INTERVAL``. Never blocks."""
        self._others_added = True
        self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load every record, then flush every interval and reload when told, until
        cancelled; then a last flush (bounded by ``SHUTDOWN_SECONDS``)."""
        try:
            await self.load()
            task_status.started()
            deadline = trio.current_time() + self.flush_interval
            while True:
                wake_at = deadline
                if self._others_added:
                    wake_at = min(deadline, self._next_others_reload)
                with trio.move_on_at(wake_at):
                    await self._wake.wait()
                self._wake = trio.Event()
                others = self._others_added and trio.current_time() >= self._next_others_reload
                if self._reload_wanted or not self._loaded or others:
                    await self.load()
                if trio.current_time() >= deadline:
                    await self.flush()
                    deadline = trio.current_time() + self.flush_interval
        finally:
            with trio.move_on_after(SHUTDOWN_SECONDS, shield=True) as scope:
                await self.flush(close=True)
            if scope.cancelled_caught:
                log.error("usage: the last flush timed out; this interval's usage is lost")

    async def load(self) -> bool:
        """Read every record into the front (what is pending stays pending); whether done."""
        async with self._lock:
            self._reload_wanted = self._others_added = False
            self._next_others_reload = trio.current_time() + OTHERS_RELOAD_INTERVAL
            try:
                records = await self._registry(lambda r: r.usage_records(None))
            except Exception as e:  # a surprise from the database must not end the server
                self._reload_wanted = True
                self._failed("load", "reading the peers' usage", e)
                return False
            for chunk in _slices(records or {}, LOAD_SLICE):
                self.policies.load_usage(chunk)
                await trio.sleep(0)  # 10,000 peers: forwarding goes on between slices
            self._loaded = True
            return True

    async def flush(self, *, close: bool = False) -> bool:
        """Add what every peer counted since the last flush to the registry; whether stored
        (True when there was nothing to store). On an error the deltas stay pending.
        ``close``: the connection closes afterwards (the last flush)."""
        async with self._lock:
            taken = self._taken()
            if not taken:
                return True  # and no file made, nor a closed connection opened again
            deltas = [u.delta for u in taken]
            wallclock = self._wallclock()
            try:
                stored = await self._registry(
                    lambda r: r.add_usage(deltas, wallclock), create=True, close=close
                )
            except Exception as e:  # a surprise from the database must not end the server
                self._unsent = {u.public_key: u for u in taken}
                if close:  # no next interval: said every time
                    log.error(
                        "usage: storing %d peer(s)' usage at shutdown failed (%s: %s); it is lost",
                        len(taken),
                        type(e).__name__,
                        e,
                    )
                else:
                    self._failed("flush", f"storing {len(taken)} peer(s)' usage", e)
                return False
            self._unsent = {}
            self.policies.usage_stored(stored or {}, taken)
            return True

    def _taken(self) -> list[P]:
        """The policies' pending deltas, and the ones a failed flush took of peers removed
        since (a live peer's delta still counts from where the failed flush's did)."""
        taken = self.policies.pending_usage()
        if self._unsent:
            keys = {u.public_key for u in taken}
            taken += [u for key, u in self._unsent.items() if key not in keys]
        return taken

    def _failed(self, key: str, what: str, error: Exception) -> None:
        if isinstance(error, RegistryUnreachable):
            return  # an outage: logged once by the sync that made the call (`Outage`)
        self._limiter.warning(
            key,
            trio.current_time(),
            "usage: %s failed (%s: %s); retried in %g s, nothing is lost",
            what,
            type(error).__name__,
            error,
            self.flush_interval,
        )


def _slices(records: Mapping[bytes, UsageRecord], size: int) -> list[dict[bytes, UsageRecord]]:
    items = list(records.items())
    return [dict(items[i : i + size]) for i in range(0, len(items), size)]
