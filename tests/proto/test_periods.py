"""trivpn.proto.periods: which calendar period (UTC) holds a moment, its name and its end."""

from __future__ import annotations

import datetime

import pytest

from trivpn.proto.periods import (
    CALENDAR_PERIODS,
    TOTAL_KEY,
    QuotaPeriod,
    period_end,
    period_key,
    period_start,
)

DAY, WEEK, MONTH, TOTAL = QuotaPeriod.DAY, QuotaPeriod.WEEK, QuotaPeriod.MONTH, QuotaPeriod.TOTAL


def at(moment: str) -> float:
    """Epoch seconds of an ISO moment in UTC (``2026-12-31T23:59:59``)."""
    return datetime.datetime.fromisoformat(moment).replace(tzinfo=datetime.UTC).timestamp()


def test_moments_are_epoch_seconds_in_utc() -> None:
    # the helper's anchor, independent of it: `date -u -d @1798761600` is 2027-01-01 00:00
    assert at("2027-01-01T00:00:00") == 1798761600
    assert period_key(DAY, 1798761600) == "2027-01-01"
    assert period_key(DAY, 1798761600 - 1) == "2026-12-31"
    assert period_end(DAY, 1798761600 - 1) == 1798761600


@pytest.mark.parametrize(
    ("last_day", "next_first"),
    [
        ("2026-01-31", "2026-02-01"),  # 31 days
        ("2026-02-28", "2026-03-01"),  # 28 days
        ("2028-02-29", "2028-03-01"),  # 29 days: a leap year
        ("2026-04-30", "2026-05-01"),  # 30 days
        ("2026-12-31", "2027-01-01"),  # the year's end
    ],
)
def test_a_month_ends_on_the_first_of_the_next(last_day: str, next_first: str) -> None:
    first = last_day[:8] + "01"
    for moment in (f"{first}T00:00:00", f"{last_day[:8]}15T12:00:00", f"{last_day}T23:59:59"):
        assert period_key(MONTH, at(moment)) == first
        assert period_end(MONTH, at(moment)) == at(f"{next_first}T00:00:00")
    assert period_start(MONTH, at(f"{last_day}T23:59:59")) == datetime.date.fromisoformat(first)


def test_february_29th_of_a_leap_year_is_a_day_of_its_own() -> None:
    moment = at("2028-02-29T10:00:00")
    assert period_key(DAY, moment) == "2028-02-29"
    assert period_end(DAY, moment) == at("2028-03-01T00:00:00")
    assert period_key(MONTH, moment) == "2028-02-01"
    assert period_key(WEEK, moment) == "2028-02-28"  # a Tuesday: the week began on Monday
    assert period_end(WEEK, moment) == at("2028-03-06T00:00:00")
    # and in a common year there is none: the 28th is followed by March 1st
    assert period_end(DAY, at("2026-02-28T10:00:00")) == at("2026-03-01T00:00:00")


@pytest.mark.parametrize(
    ("moment", "monday", "next_monday"),
    [
        ("2026-11-30T00:00:00", "2026-11-30", "2026-12-07"),  # the Monday itself
        ("2026-12-06T23:59:59", "2026-11-30", "2026-12-07"),  # its Sunday, across a month
        ("2026-04-01T12:00:00", "2026-03-30", "2026-04-06"),  # a Wednesday across a month
        ("2026-12-31T12:00:00", "2026-12-28", "2027-01-04"),  # a Thursday across the year
        ("2027-01-01T00:00:00", "2026-12-28", "2027-01-04"),  # New Year's Day, same week
        ("2026-03-01T08:00:00", "2026-02-23", "2026-03-02"),  # a Sunday, across February
    ],
)
def test_a_week_runs_from_monday_to_monday(moment: str, monday: str, next_monday: str) -> None:
    assert period_key(WEEK, at(moment)) == monday
    assert period_start(WEEK, at(moment)) == datetime.date.fromisoformat(monday)
    assert period_end(WEEK, at(moment)) == at(f"{next_monday}T00:00:00")
    assert datetime.date.fromisoformat(monday).weekday() == 0


@pytest.mark.parametrize("period", CALENDAR_PERIODS)
def test_the_boundary_second_belongs_to_the_next_period(period: QuotaPeriod) -> None:
    start = at("2026-12-28T00:00:00")  # a Monday, so each of the three has a boundary here
    if period is MONTH:
        start = at("2027-01-01T00:00:00")
    before = period_key(period, start - 1)
    assert period_end(period, start - 1) == start
    assert period_end(period, start - 0.001) == start
    assert period_key(period, start) != before
    first_day = period_start(period, start)
    assert first_day is not None and period_key(period, start) == first_day.isoformat()
    assert period_end(period, start) > start  # the next one's end, not this boundary again


def test_days_roll_over_at_midnight_utc() -> None:
    assert period_key(DAY, at("2026-12-01T23:59:59")) == "2026-12-01"
    assert period_key(DAY, at("2026-12-02T00:00:00")) == "2026-12-02"
    assert period_end(DAY, at("2026-12-01T00:00:00")) == at("2026-12-02T00:00:00")
    assert period_end(DAY, at("2026-12-01T00:00:00")) - at("2026-12-01T00:00:00") == 86400


def test_total_is_one_period_that_never_ends() -> None:
    for moment in (0.0, at("2026-12-01T00:00:00"), at("2099-01-01T00:00:00")):
        assert period_key(TOTAL, moment) == TOTAL_KEY == "total"
        assert period_start(TOTAL, moment) is None
        assert period_end(TOTAL, moment) is None
    assert TOTAL not in CALENDAR_PERIODS
    assert {str(p) for p in QuotaPeriod} == {"day", "week", "month", "total"}
