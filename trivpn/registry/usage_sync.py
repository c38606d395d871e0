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
  say) every record is read again, so a reset unblocks within about ``POLL_INTERVAL``.

Every database call goes through `PeerSync.with_registry`: one connection and one worker
thread for both, so calls never overlap and our own commits do not look like another
process's. A database error (locked, disk full, read-only) is logged at most once a minute
and the call retried at the next interval; the deltas stay pending, forwarding never waits.
The registry file is made by the first flush that has something to store (a server with
static peers only has none before).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Final, Generic, Protocol, TypeVar

import trio

from trivpn.dataplane.loglimit import LogLimiter
from trivpn.proto.usage import UsageDelta, UsageRecord
from trivpn.registry.sync import RegistryLike

log = logging.getLogger("trivpn")

FLUSH_INTERVAL: Final = 5.0  # s: the most traffic a SIGKILL can lose
LOAD_SLICE: Final = 512  # records handed to the front between two checkpoints
SHUTDOWN_SECONDS: Final = 5.0  # the final flush's bound (a locked database must not hang exit)
ERROR_LOG_INTERVAL: Final = 60.0  # s: a broken database is not a line per flush

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
        self, fn: Callable[[RegistryLike], T], /, *, create: bool = False, close: bool = False
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

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load every record, then flush every interval and reload when told, until
        cancelled; then a last flush (bounded by ``SHUTDOWN_SECONDS``)."""
        try:
            await self.load()
            task_status.started()
            deadline = trio.current_time() + self.flush_interval
            while True:
                with trio.move_on_at(deadline):
                    await self._wake.wait()
                self._wake = trio.Event()
                if self._reload_wanted or not self._loaded:
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
            self._reload_wanted = False
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
