"""Quota periods: calendar periods in UTC, and where the one holding a moment starts and ends.

A day starts at 00:00 UTC, a week on Monday at 00:00 UTC, a month on the 1st at 00:00 UTC;
``total`` has one period that never ends. Moments are epoch seconds (the wall clock enters
as an argument); a period is named by the date it starts on, which is what the registry
stores beside its count.
"""

from __future__ import annotations

import datetime
import enum
from typing import Final

_UTC: Final = datetime.UTC
TOTAL_KEY: Final = "total"  # the name of the one ``total`` period


class QuotaPeriod(enum.StrEnum):
    """What a quota counts: the current UTC day, week or month, or everything since the
    last reset."""

    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    TOTAL = "total"


CALENDAR_PERIODS: Final = (QuotaPeriod.DAY, QuotaPeriod.WEEK, QuotaPeriod.MONTH)


def _day(wallclock: float) -> datetime.date:
    return datetime.datetime.fromtimestamp(wallclock, _UTC).date()


def period_start(period: QuotaPeriod, wallclock: float) -> datetime.date | None:
    """The first day of the period holding ``wallclock``; None for ``total``."""
    day = _day(wallclock)
    if period is QuotaPeriod.DAY:
        return day
    if period is QuotaPeriod.WEEK:
        return day - datetime.timedelta(days=day.weekday())
    if period is QuotaPeriod.MONTH:
        return day.replace(day=1)
    return None


def period_key(period: QuotaPeriod, wallclock: float) -> str:
    """The name of the period holding ``wallclock``: its first day (ISO), or ``total``."""
    start = period_start(period, wallclock)
    return TOTAL_KEY if start is None else start.isoformat()


def period_end(period: QuotaPeriod, wallclock: float) -> float | None:
    """The moment (epoch seconds) the period holding ``wallclock`` ends and the next
    begins; None for ``total``."""
    start = period_start(period, wallclock)
    if start is None:
        return None
    if period is QuotaPeriod.DAY:
        following = start + datetime.timedelta(days=1)
    elif period is QuotaPeriod.WEEK:
        following = start + datetime.timedelta(weeks=1)
    else:
        following = (start + datetime.timedelta(days=32)).replace(day=1)
    return datetime.datetime.combine(following, datetime.time(), _UTC).timestamp()
