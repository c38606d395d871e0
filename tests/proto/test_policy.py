"""trivpn.proto.policy: the state a peer's policy gives it, and the expiry values."""

from __future__ import annotations

import dataclasses
import datetime

import pytest

from trivpn.proto.periods import QuotaPeriod
from trivpn.proto.policy import (
    PeerState,
    Policy,
    PolicyError,
    Quota,
    format_expires,
    format_rate,
    format_size,
    next_change,
    parse_expires,
    parse_quota,
    parse_rate,
    policy_json,
    remaining,
    state,
)

UTC = datetime.UTC
NOW = datetime.datetime(2026, 12, 1, 20, 0, 0, tzinfo=UTC)
DEADLINE = datetime.datetime(2027, 2, 1, tzinfo=UTC)
T = DEADLINE.timestamp()


def test_the_default_policy_is_active_for_ever() -> None:
    assert state(Policy(), T) is PeerState.ACTIVE
    assert next_change(Policy(), T) is None
    assert not PeerState.ACTIVE.blocked
    assert all(s.blocked for s in PeerState if s is not PeerState.ACTIVE)


def test_expired_from_the_deadline_on() -> None:
    policy = Policy(expires=DEADLINE)
    assert state(policy, T - 0.001) is PeerState.ACTIVE
    assert state(policy, T) is PeerState.EXPIRED
    assert state(policy, T + 3600) is PeerState.EXPIRED
    assert next_change(policy, T - 10) == T
    assert next_change(policy, T) is None  # expired for good, unless the policy changes


def test_disabled_wins_and_has_no_deadline() -> None:
    policy = Policy(enabled=False, expires=DEADLINE)
    assert state(policy, T - 10) is PeerState.DISABLED
    assert state(policy, T + 10) is PeerState.DISABLED
    assert next_change(policy, T - 10) is None


def test_expires_is_kept_in_utc_and_a_naive_time_is_refused() -> None:
    plus_one = datetime.timezone(datetime.timedelta(hours=1))
    policy = Policy(expires=datetime.datetime(2027, 2, 1, 1, 0, tzinfo=plus_one))
    assert policy.expires == DEADLINE and policy.expires.tzinfo is UTC
    assert policy.expires_at == T
    with pytest.raises(PolicyError, match="without an offset"):
        Policy(expires=datetime.datetime(2027, 2, 1))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2027-01-31", DEADLINE),  # the end of that day, UTC
        ("2027-01-31T18:00:00+01:00", datetime.datetime(2027, 1, 31, 17, tzinfo=UTC)),
        ("2027-01-31T18:00:00Z", datetime.datetime(2027, 1, 31, 18, tzinfo=UTC)),
        ("2027-01-31 18:00:00.5+00:00", datetime.datetime(2027, 1, 31, 18, 0, 0, 500000, UTC)),
        ("30d", NOW + datetime.timedelta(days=30)),
        ("12h", NOW + datetime.timedelta(hours=12)),
        ("2W", NOW + datetime.timedelta(weeks=2)),
        (" never ", None),
        ("NEVER", None),
    ],
)
def test_parse_expires(text: str, expected: datetime.datetime | None) -> None:
    assert parse_expires(text, NOW) == expected


def test_a_duration_drops_the_microseconds_of_now() -> None:
    now = NOW.replace(microsecond=123456)
    assert parse_expires("1h", now) == NOW + datetime.timedelta(hours=1)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("tomorrow", "expected a date"),
        ("2027-02-30", "day is out of range for month"),
        ("2027-01-31T18:00:00", "without an offset"),
        ("0d", "expected a date"),
        ("30m", "expected a date"),
        ("-1d", "expected a date"),
        ("", "expected a date"),
    ],
)
def test_bad_expires_names_the_value_and_what_is_allowed(text: str, reason: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_expires(text, NOW)
    message = str(info.value)
    assert message.startswith(repr(text)), message
    assert reason in message and "never" in message and "\n" not in message


def test_json_fields() -> None:
    assert format_expires(DEADLINE) == "2027-02-01T00:00:00Z"
    assert format_expires(None) is None
    assert policy_json(PeerState.EXPIRED, Policy(expires=DEADLINE)) == {
        "state": "expired",
        "enabled": True,
        "expires": "2027-02-01T00:00:00Z",
        "quota_bytes": None,
        "quota_period": None,
        "rate_down_bps": None,
        "rate_up_bps": None,
    }
    limited = Policy(
        enabled=False, quota=Quota(50 * 2**30, QuotaPeriod.MONTH), rate_down=20_000_000
    )
    assert policy_json(PeerState.DISABLED, limited) == {
        "state": "disabled",
        "enabled": False,
        "expires": None,
        "quota_bytes": 50 * 2**30,
        "quota_period": "month",
        "rate_down_bps": 20_000_000,
        "rate_up_bps": None,
    }


# --- quotas and rates -----------------------------------------------------------------------

KiB, MiB, GiB, TiB = 2**10, 2**20, 2**30, 2**40


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1B", 1),
        ("1KB", 1000),
        ("1MB", 1000**2),
        ("1GB", 1000**3),
        ("1TB", 1000**4),
        ("1KiB", KiB),
        ("1MiB", MiB),
        ("1GiB", GiB),
        ("1TiB", TiB),
        ("50gib", 50 * GiB),  # units in any case
        ("50 GiB", 50 * GiB),
        ("1.5GiB", 3 * GiB // 2),
        ("1.005KB", 1005),  # exact: as a float product this is 1004.999…
        ("0.5KiB", 512),
        ("2.5B", 2),  # a part of a byte is dropped
    ],
)
@pytest.mark.parametrize("period", ["day", "week", "month", "total"])
def test_parse_quota_every_unit_and_period(text: str, size: int, period: str) -> None:
    quota = parse_quota(f"{text}/{period}")
    assert quota == Quota(size, QuotaPeriod(period))
    assert parse_quota(f" {text} / {period.upper()} ") == quota


def test_parse_quota_none_clears_it() -> None:
    assert parse_quota("none") is None
    assert parse_quota(" None ") is None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("50GiB", "expected a size and a period"),  # no period
        ("50/month", "expected a size and a period"),  # no unit
        ("50XB/month", "expected a size and a period"),
        ("50GiB/year", "expected a size and a period"),
        ("-1GB/day", "expected a size and a period"),
        ("1e3GB/day", "expected a size and a period"),
        ("", "expected a size and a period"),
        ("0B/day", "at least 1 B"),
        ("0.5B/day", "at least 1 B"),
        ("4194305TiB/month", "below 4 EiB"),  # 2**62 bytes and one TiB more
        ("9" * 40 + "GB/day", "expected a size and a period"),
    ],
)
def test_a_bad_quota_names_the_value_and_what_is_allowed(text: str, reason: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_quota(text)
    message = str(info.value)
    assert message.startswith(f"{text!r} — "), message
    assert reason in message and "50GiB/month" in message and "\n" not in message


def test_the_largest_quota_is_4_eib() -> None:
    assert parse_quota("4194304TiB/total") == Quota(2**62, QuotaPeriod.TOTAL)


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (1, "1B"),
        (999, "999B"),
        (1000, "1KB"),
        (1024, "1KiB"),
        (1536, "1536B"),
        (1500, "1500B"),
        (2000, "2KB"),
        (1000**2, "1MB"),
        (MiB, "1MiB"),
        (1000**3, "1GB"),
        (10 * 1000**3, "10GB"),  # also a whole number of KiB: the larger unit wins
        (GiB, "1GiB"),
        (50 * GiB, "50GiB"),
        (1000**4, "1TB"),
        (TiB, "1TiB"),
        (3 * TiB, "3TiB"),
        (1000 * KiB, "1000KiB"),
        (2**62, "4194304TiB"),
    ],
)
def test_format_size_in_the_largest_unit_that_holds_it_whole(size: int, text: str) -> None:
    assert format_size(size) == text
    assert parse_quota(f"{text}/day") == Quota(size, QuotaPeriod.DAY)


def test_a_quota_reads_as_it_is_written() -> None:
    for text in ("50GiB/month", "10GB/week", "1TB/month", "1536B/day", "5MB/total"):
        quota = parse_quota(text)
        assert quota is not None and str(quota) == text


@pytest.mark.parametrize(
    ("text", "bps"),
    [
        ("1kbit", 1000),
        ("20Mbit", 20_000_000),
        ("1Gbit", 1_000_000_000),
        ("20mbit", 20_000_000),
        ("20 Mbit", 20_000_000),
        ("20Mbit/s", 20_000_000),
        ("1.5kbit", 1500),
        ("0.001kbit", 1),
        ("2.5Gbit", 2_500_000_000),
        ("1234.567kbit", 1_234_567),  # exact: as a float product this is 1234566.99…
        ("1000Gbit", 10**12),
    ],
)
def test_parse_rate_every_unit(text: str, bps: int) -> None:
    assert parse_rate(text) == bps


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("0kbit", "expected a rate above 0"),
        ("0.0001kbit", "expected a rate above 0"),
        ("20Mb", "expected a rate above 0"),  # bytes are not a rate's unit
        ("20", "expected a rate above 0"),
        ("fast", "expected a rate above 0"),
        ("-20Mbit", "expected a rate above 0"),
        ("1001Gbit", "at most 1000Gbit"),
    ],
)
def test_a_bad_rate_names_the_value_and_what_is_allowed(text: str, reason: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_rate(text)
    message = str(info.value)
    assert message.startswith(f"{text!r} — "), message
    assert reason in message and "20Mbit" in message and "\n" not in message


def test_parse_rate_none_clears_it() -> None:
    assert parse_rate("none") is None
    assert parse_rate("NONE") is None


@pytest.mark.parametrize(
    ("bps", "text"),
    [
        (1000, "1kbit"),
        (20_000_000, "20Mbit"),
        (1_000_000_000, "1Gbit"),
        (1_500_000, "1500kbit"),
        (1500, "1.5kbit"),
        (1, "0.001kbit"),
        (1_234_567, "1234.567kbit"),  # every digit kept
        (999_999_999, "999999.999kbit"),  # not "1e+06kbit", which would not parse
        (10**12, "1000Gbit"),
    ],
)
def test_format_rate_in_the_largest_unit_that_holds_it_whole(bps: int, text: str) -> None:
    assert format_rate(bps) == text
    assert parse_rate(text) == bps


def test_every_rate_formats_to_text_that_parses_back_to_it() -> None:
    rates = [*range(1, 5000, 7), *(7**k for k in range(1, 15)), 10**12 - 1, 999_999_999]
    assert [parse_rate(format_rate(bps)) for bps in rates] == rates


# --- state and next change with quotas ------------------------------------------------------

MONTHLY = Quota(1000, QuotaPeriod.MONTH)
MONTH_END = datetime.datetime(2027, 1, 1, tzinfo=UTC).timestamp()  # of December 2026
IN_DECEMBER = datetime.datetime(2026, 12, 10, tzinfo=UTC).timestamp()


def test_over_quota_from_the_quota_on() -> None:
    policy = Policy(quota=MONTHLY)
    assert state(policy, IN_DECEMBER, used=999) is PeerState.ACTIVE
    assert state(policy, IN_DECEMBER, used=1000) is PeerState.OVER_QUOTA
    assert state(policy, IN_DECEMBER) is PeerState.ACTIVE  # used defaults to nothing
    assert state(Policy(), IN_DECEMBER, used=10**15) is PeerState.ACTIVE  # no quota


def test_disabled_wins_over_expired_which_wins_over_over_quota() -> None:
    expired_at = IN_DECEMBER - 1
    everything = Policy(enabled=False, expires=_utc(expired_at), quota=MONTHLY)
    assert state(everything, IN_DECEMBER, used=5000) is PeerState.DISABLED
    enabled = dataclasses.replace(everything, enabled=True)
    assert state(enabled, IN_DECEMBER, used=5000) is PeerState.EXPIRED
    assert state(dataclasses.replace(enabled, expires=None), IN_DECEMBER, 5000) is (
        PeerState.OVER_QUOTA
    )


def test_next_change_is_the_period_end_or_the_expiry_whichever_comes_first() -> None:
    quota_only = Policy(quota=MONTHLY)
    assert next_change(quota_only, IN_DECEMBER) == MONTH_END  # used may start again there
    soon = Policy(quota=MONTHLY, expires=_utc(IN_DECEMBER + 3600))
    assert next_change(soon, IN_DECEMBER) == IN_DECEMBER + 3600
    late = Policy(quota=MONTHLY, expires=_utc(MONTH_END + 86400))
    assert next_change(late, IN_DECEMBER) == MONTH_END
    # the period rolls over: from the boundary on, the next month's end is next
    january_end = datetime.datetime(2027, 2, 1, tzinfo=UTC).timestamp()
    assert next_change(late, MONTH_END) == MONTH_END + 86400
    assert next_change(quota_only, MONTH_END) == january_end
    assert next_change(Policy(quota=Quota(1000, QuotaPeriod.DAY)), IN_DECEMBER) == (
        IN_DECEMBER + 86400
    )


def test_next_change_of_a_policy_blocked_for_good_is_none() -> None:
    expired = Policy(quota=MONTHLY, expires=_utc(IN_DECEMBER))
    assert next_change(expired, IN_DECEMBER) is None
    assert next_change(Policy(enabled=False, quota=MONTHLY), IN_DECEMBER) is None
    # a total quota never rolls over: only an expiry is a deadline
    total = Quota(1000, QuotaPeriod.TOTAL)
    assert next_change(Policy(quota=total), IN_DECEMBER) is None
    assert next_change(Policy(quota=total, expires=_utc(MONTH_END)), IN_DECEMBER) == MONTH_END


def test_remaining_is_what_is_left_of_the_quota_never_below_zero() -> None:
    policy = Policy(quota=MONTHLY)
    assert remaining(policy, 0) == 1000
    assert remaining(policy, 400) == 600
    assert remaining(policy, 1000) == 0
    assert remaining(policy, 5000) == 0
    assert remaining(Policy(), 5000) is None


def _utc(epoch: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(epoch, UTC)
