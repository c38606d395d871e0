"""A peer's usage across restarts: what the registry keeps, and what a process adds to it.

`UsageRecord` is the stored form, one per public key (registry and static peers alike):
lifetime bytes each way, which never reset, and the bytes of the current day, week and
month (each with the period it counts) and of ``total`` (since the last reset), which
`trivpn peer reset-usage` zeroes together. Every period is counted whatever the quota, so a
quota set or changed mid-period counts what was already used in it.

`UsageMeter` is the running server's view of one peer: the record as last read or written,
plus what the peer's counters (this process's, as `wg show` reports them: received plus
sent, handshakes included) moved since. Stores add a meter's `pending` bytes (never write
totals), so two writers (a restart, or several gateways) add up, and usage never goes back.

A reset zeroes the periods and counts itself in ``resets``. A writer's delta names the resets
it has seen: bytes it counted before a reset it had not seen yet go to the lifetime counters
only, so what a running server had pending at `trivpn peer reset-usage` does not come back
after it (the reset may land between the server's flushes, and before it notices). Sans-IO:
the wall clock is an argument.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Final, NamedTuple

from trivpn.proto.periods import QuotaPeriod, period_key
from trivpn.proto.policy import Policy


@dataclasses.dataclass(frozen=True)
class PeriodCount:
    """The bytes of one period, named by its first day (`trivpn.proto.periods.period_key`)."""

    start: str = ""  # "": none counted yet
    bytes: int = 0


@dataclasses.dataclass(frozen=True, kw_only=True)
class UsageRecord:
    lifetime_rx: int = 0
    lifetime_tx: int = 0
    day: PeriodCount = PeriodCount()
    week: PeriodCount = PeriodCount()
    month: PeriodCount = PeriodCount()
    total: int = 0  # since the last reset
    resets: int = 0  # how many times the periods were zeroed

    def used(self, period: QuotaPeriod, wallclock: float) -> int:
        """The bytes of the ``period`` holding ``wallclock``: 0 if the stored count is of an
        earlier one (the period rolled over since it was written)."""
        if period is QuotaPeriod.TOTAL:
            return self.total
        count: PeriodCount = getattr(self, period.value)
        return count.bytes if count.start == period_key(period, wallclock) else 0

    def added(self, rx: int, tx: int, wallclock: float, counted: int | None = None) -> UsageRecord:
        """This record with ``rx`` and ``tx`` more bytes counted at ``wallclock``, of which
        ``counted`` (None: all) count in the periods."""
        both = rx + tx if counted is None else counted

        def rolled(period: QuotaPeriod) -> PeriodCount:
            return PeriodCount(period_key(period, wallclock), self.used(period, wallclock) + both)

        return UsageRecord(
            lifetime_rx=self.lifetime_rx + rx,
            lifetime_tx=self.lifetime_tx + tx,
            day=rolled(QuotaPeriod.DAY),
            week=rolled(QuotaPeriod.WEEK),
            month=rolled(QuotaPeriod.MONTH),
            total=self.total + both,
            resets=self.resets,
        )

    def reset(self) -> UsageRecord:
        """Every period zeroed; the lifetime counters kept."""
        return UsageRecord(
            lifetime_rx=self.lifetime_rx, lifetime_tx=self.lifetime_tx, resets=self.resets + 1
        )


class UsageDelta(NamedTuple):
    """What a writer adds to a key's stored usage: ``rx``/``tx`` to the lifetime counters,
    and ``counted`` (None: rx + tx) to the periods unless they were reset since the writer's
    record, whose ``resets`` it names (None: whatever they are, as a tool adding by hand)."""

    public_key: bytes
    rx: int
    tx: int
    counted: int | None = None
    resets: int | None = None


NO_USAGE: Final = UsageRecord()


def counted_bytes(record: UsageRecord, policy: Policy, wallclock: float) -> int:
    """What counts against the peer's quota now: its quota's period, else ``total``."""
    period = QuotaPeriod.TOTAL if policy.quota is None else policy.quota.period
    return record.used(period, wallclock)


def usage_json(record: UsageRecord, policy: Policy, wallclock: float) -> dict[str, Any]:
    """A peer's usage as the status document and `peer list --json` carry it."""
    return {
        "usage_bytes": counted_bytes(record, policy, wallclock),
        "lifetime_rx_bytes": record.lifetime_rx,
        "lifetime_tx_bytes": record.lifetime_tx,
    }


class UsageMeter:
    """One peer's usage in a running server: a stored record plus the peer's counters'
    movement since it was read or written (``rx``/``tx`` are the peer's counters)."""

    __slots__ = ("_counted_mark", "_rx_mark", "_tx_mark", "record")

    def __init__(self, record: UsageRecord, rx: int = 0, tx: int = 0) -> None:
        self.record = record
        self._rx_mark = rx
        self._tx_mark = tx
        self._counted_mark = rx + tx  # ahead of the others' sum only after a reset

    def pending(self, rx: int, tx: int) -> tuple[int, int]:
        """Bytes counted since the record, not yet stored."""
        return rx - self._rx_mark, tx - self._tx_mark

    def pending_counted(self, rx: int, tx: int) -> int:
        """Of the pending bytes, those that count in the periods: all but those counted
        before a reset this meter learnt of."""
        return rx + tx - self._counted_mark

    def delta(self, public_key: bytes, rx: int, tx: int) -> UsageDelta:
        """What is pending, for a store to add."""
        drx, dtx = self.pending(rx, tx)
        return UsageDelta(public_key, drx, dtx, self.pending_counted(rx, tx), self.record.resets)

    def current(self, rx: int, tx: int, wallclock: float) -> UsageRecord:
        """The record with what is pending added."""
        drx, dtx = self.pending(rx, tx)
        if not (drx or dtx):
            return self.record
        return self.record.added(drx, dtx, wallclock, self.pending_counted(rx, tx))

    def stored(self, record: UsageRecord, rx: int, tx: int) -> None:
        """The store now holds ``record``, which includes everything counted up to the
        counters ``rx``/``tx`` (read when the pending bytes were taken for it)."""
        self.record = record
        self._rx_mark = rx
        self._tx_mark = tx
        self._counted_mark = rx + tx

    def reloaded(self, record: UsageRecord, rx: int, tx: int) -> None:
        """The store's record, read afresh at the counters ``rx``/``tx`` (another writer
        changed it: a reset, another gateway). What is pending stays pending, but after a
        reset not in the periods: the reset zeroed what counted until it."""
        if record.resets != self.record.resets:
            self._counted_mark = rx + tx
        self.record = record
