"""trivpn.proto.policy: the state a peer's policy gives it, and the expiry values."""

from __future__ import annotations

import datetime

import pytest

from trivpn.proto.periods import QuotaPeriod
from trivpn.proto.policy import (
    PeerState,
    Policy,
    PolicyError,
    Quota,
    format_expires,
    next_change,
    parse_expires,
    policy_json,
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
