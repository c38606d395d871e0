"""trivpn.proto.usage: a peer's usage per period, kept across restarts, and a server's meter."""

from __future__ import annotations

import dataclasses
import datetime

import pytest

from trivpn.proto.periods import QuotaPeriod
from trivpn.proto.policy import Policy, Quota
from trivpn.proto.usage import (
    NO_USAGE,
    PeriodCount,
    UsageDelta,
    UsageMeter,
    UsageRecord,
    counted_bytes,
    usage_json,
)

DAY, WEEK, MONTH, TOTAL = QuotaPeriod.DAY, QuotaPeriod.WEEK, QuotaPeriod.MONTH, QuotaPeriod.TOTAL


def at(moment: str) -> float:
    return datetime.datetime.fromisoformat(moment).replace(tzinfo=datetime.UTC).timestamp()


TUE = at("2026-12-01T10:00:00")  # a Tuesday, the first of the month
WED = at("2026-12-02T10:00:00")
NEXT_MON = at("2026-12-07T10:00:00")
NEXT_MONTH = at("2027-01-05T10:00:00")


def test_added_counts_both_ways_in_every_period() -> None:
    record = NO_USAGE.added(100, 20, TUE)
    assert (record.lifetime_rx, record.lifetime_tx, record.total) == (100, 20, 120)
    assert record.day == PeriodCount("2026-12-01", 120)
    assert record.week == PeriodCount("2026-11-30", 120)  # the week began on Monday
    assert record.month == PeriodCount("2026-12-01", 120)
    assert [record.used(p, TUE) for p in QuotaPeriod] == [120, 120, 120, 120]
    again = record.added(1, 2, TUE)
    assert [again.used(p, TUE) for p in QuotaPeriod] == [123, 123, 123, 123]
    assert record.total == 120  # records are values: adding made a new one


def test_added_rolls_the_periods_that_are_over() -> None:
    record = NO_USAGE.added(1000, 0, TUE).added(0, 1, WED)  # a new day, the same week
    assert record.day == PeriodCount("2026-12-02", 1)
    assert record.week == PeriodCount("2026-11-30", 1001)
    assert record.month == PeriodCount("2026-12-01", 1001)
    record = record.added(10, 0, NEXT_MON)  # a new week, the same month
    assert (record.day.bytes, record.week, record.month.bytes) == (
        10,
        PeriodCount("2026-12-07", 10),
        1011,
    )
    record = record.added(5, 0, NEXT_MONTH)  # a new month, and a new year
    assert record.month == PeriodCount("2027-01-01", 5)
    assert record.week == PeriodCount("2027-01-04", 5)
    # the lifetime counters and total never roll
    assert (record.lifetime_rx, record.lifetime_tx, record.total) == (1015, 1, 1016)


def test_used_of_a_period_that_is_over_is_zero() -> None:
    record = NO_USAGE.added(700, 0, TUE)
    assert record.used(DAY, WED) == 0
    assert record.used(WEEK, WED) == 700
    assert record.used(WEEK, NEXT_MON) == 0
    assert record.used(MONTH, NEXT_MON) == 700
    assert record.used(MONTH, NEXT_MONTH) == 0
    assert record.used(TOTAL, NEXT_MONTH) == 700  # total ends only with a reset
    assert record.used(DAY, TUE) == 700  # the stored record itself is unchanged


def test_a_reset_zeroes_every_period_and_keeps_the_lifetime_counters() -> None:
    record = NO_USAGE.added(300, 200, TUE).reset()
    assert (record.lifetime_rx, record.lifetime_tx) == (300, 200)
    assert [record.used(p, TUE) for p in QuotaPeriod] == [0, 0, 0, 0]
    assert record == UsageRecord(lifetime_rx=300, lifetime_tx=200, resets=1)
    assert record.reset().resets == 2  # each reset counted: a writer knows which it saw
    assert record.added(1, 0, TUE).used(DAY, TUE) == 1  # counting starts again


def test_what_counts_against_a_quota_is_its_period_else_total() -> None:
    record = NO_USAGE.added(100, 0, TUE).added(50, 0, WED)
    monthly = Policy(quota=Quota(1000, MONTH))
    daily = Policy(quota=Quota(1000, DAY))
    assert counted_bytes(record, monthly, WED) == 150
    assert counted_bytes(record, daily, WED) == 50
    assert counted_bytes(record, Policy(), WED) == 150  # no quota: total
    assert counted_bytes(record, daily, NEXT_MON) == 0
    assert usage_json(record, daily, WED) == {
        "usage_bytes": 50,
        "lifetime_rx_bytes": 150,
        "lifetime_tx_bytes": 0,
    }


def test_a_meter_counts_what_the_peer_moved_since_the_record() -> None:
    stored = NO_USAGE.added(1000, 1000, TUE)
    meter = UsageMeter(stored, rx=5000, tx=7000)  # the peer's counters when it was read
    assert meter.pending(5000, 7000) == (0, 0)
    assert meter.current(5000, 7000, WED) is stored  # nothing moved: the record as it was
    assert meter.pending(5100, 7020) == (100, 20)
    current = meter.current(5100, 7020, WED)
    assert (current.lifetime_rx, current.lifetime_tx) == (1100, 1020)
    assert current.used(DAY, WED) == 120 and current.used(MONTH, WED) == 2120
    assert meter.record is stored  # current() only looks


def test_stored_moves_the_mark_so_nothing_is_counted_twice() -> None:
    meter = UsageMeter(NO_USAGE, rx=0, tx=0)
    written = meter.current(400, 100, TUE)
    meter.stored(written, 400, 100)
    assert meter.record == written and meter.pending(400, 100) == (0, 0)
    assert meter.pending(450, 100) == (50, 0)
    assert meter.current(450, 100, TUE).total == 550


def test_bytes_counted_while_a_store_was_written_stay_pending() -> None:
    meter = UsageMeter(NO_USAGE)
    taken = meter.pending(400, 0)  # the store is written with these 400 bytes...
    written = NO_USAGE.added(*taken, TUE)
    meter.stored(written, 400, 0)  # ...while the counters went on to 450
    assert meter.pending(450, 0) == (50, 0)
    assert meter.current(450, 0, TUE).total == 450


def test_reloaded_takes_another_writers_record_and_keeps_what_is_pending() -> None:
    meter = UsageMeter(NO_USAGE.added(100, 0, TUE), rx=1000, tx=0)
    elsewhere = meter.record.added(500, 0, TUE)  # another gateway's adds
    meter.reloaded(elsewhere, 1020, 0)
    assert meter.record == elsewhere
    assert meter.pending(1030, 0) == (30, 0) and meter.pending_counted(1030, 0) == 30
    current = meter.current(1030, 0, TUE)
    assert current.total == 630 and current.lifetime_rx == 630


def test_after_a_reset_what_was_pending_counts_in_the_lifetime_only() -> None:
    meter = UsageMeter(NO_USAGE.added(100, 0, TUE), rx=1000, tx=0)
    reset = meter.record.reset()  # `peer reset-usage` while 20 bytes were pending
    meter.reloaded(reset, 1020, 0)
    assert meter.pending(1030, 0) == (30, 0)  # the lifetime counters lose nothing...
    assert meter.pending_counted(1030, 0) == 10  # ...the periods only what came after
    current = meter.current(1030, 0, TUE)
    assert current.total == 10 and current.used(DAY, TUE) == 10 and current.lifetime_rx == 130
    assert meter.delta(b"k", 1030, 0) == UsageDelta(b"k", 30, 0, 10, 1)
    meter.stored(current, 1030, 0)
    assert meter.pending(1030, 0) == (0, 0) and meter.pending_counted(1030, 0) == 0


def test_a_delta_names_the_resets_its_record_has_seen() -> None:
    meter = UsageMeter(NO_USAGE.reset().reset(), rx=0, tx=0)
    assert meter.delta(b"k", 7, 3) == UsageDelta(b"k", 7, 3, 10, 2)
    assert NO_USAGE.added(7, 3, TUE, counted=4).total == 4


def test_records_are_frozen_values() -> None:
    record = NO_USAGE.added(1, 1, TUE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.total = 0  # type: ignore[misc]
    assert record == NO_USAGE.added(1, 1, TUE) != NO_USAGE
    assert NO_USAGE.day == PeriodCount() == PeriodCount("", 0)
