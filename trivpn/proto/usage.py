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
Sans-IO: the wall clock is an argument.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Final

from trivpn.proto.periods import CALENDAR_PERIODS, TOTAL_KEY, QuotaPeriod, period_key
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

    def used(self, period: QuotaPeriod, wallclock: float) -> int:
        """The bytes of the ``period`` holding ``wallclock``: 0 if the stored count is of an
        earlier one (the period rolled over since it was written)."""
        if period is QuotaPeriod.TOTAL:
            return self.total
        count: PeriodCount = getattr(self, period.value)
        return count.bytes if count.start == period_key(period, wallclock) else 0

    def added(self, rx: int, tx: int, wallclock: float) -> UsageRecord:
        """This record with ``rx`` and ``tx`` more bytes counted at ``wallclock``."""
        both = rx + tx
        rolled = {
            period.value: PeriodCount(
                period_key(period, wallclock), self.used(period, wallclock) + both
            )
            for period in CALENDAR_PERIODS
        }
        return dataclasses.replace(
            self,
            lifetime_rx=self.lifetime_rx + rx,
            lifetime_tx=self.lifetime_tx + tx,
            total=self.total + both,
            **rolled,
        )

    def reset(self) -> UsageRecord:
        """Every period zeroed; the lifetime counters kept."""
        return UsageRecord(lifetime_rx=self.lifetime_rx, lifetime_tx=self.lifetime_tx)


NO_USAGE: Final = UsageRecord()
assert TOTAL_KEY not in {p.value for p in CALENDAR_PERIODS}


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

    __slots__ = ("_rx_mark", "_tx_mark", "record")

    def __init__(self, record: UsageRecord, rx: int = 0, tx: int = 0) -> None:
        self.record = record
        self._rx_mark = rx
        self._tx_mark = tx

    def pending(self, rx: int, tx: int) -> tuple[int, int]:
        """Bytes counted since the record, not yet stored."""
        return rx - self._rx_mark, tx - self._tx_mark

    def current(self, rx: int, tx: int, wallclock: float) -> UsageRecord:
        """The record with what is pending added."""
        drx, dtx = self.pending(rx, tx)
        return self.record.added(drx, dtx, wallclock) if drx or dtx else self.record

    def stored(self, record: UsageRecord, rx: int, tx: int) -> None:
        """The store now holds ``record``, which includes everything counted up to the
        counters ``rx``/``tx`` (read when the pending bytes were taken for it)."""
        self.record = record
        self._rx_mark = rx
        self._tx_mark = tx

    def reloaded(self, record: UsageRecord) -> None:
        """The store's record, read afresh (another writer changed it: a reset, another
        gateway); what is pending stays pending."""
        self.record = record
