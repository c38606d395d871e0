"""[[wireguard.peers]] enabled, expires, quota, rate_down and rate_up."""

import datetime

import pytest

from trivpn.config import ConfigError, parse_config
from trivpn.proto.periods import QuotaPeriod
from trivpn.proto.policy import QUOTA_ALLOWED, RATE_ALLOWED, Policy, Quota
from trivpn.proto.wireguard import keys

SERVER_KEY = keys.genkey(lambda n: b"\x01" * n)
ALICE_PUB = keys.pubkey(keys.genkey(lambda n: b"\x02" * n))
UTC = datetime.UTC


def peer_with(*lines: str) -> str:
    return (
        f'[wireguard]\nenabled = true\nprivate_key = "{SERVER_KEY}"\n'
        f'[[wireguard.peers]]\nname = "alice"\npublic_key = "{ALICE_PUB}"\n'
        'allowed_ips = ["10.8.0.2/32"]\n' + "".join(line + "\n" for line in lines)
    )


def only_problem(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert len(info.value.problems) == 1, info.value.problems
    return info.value.problems[0]


def test_defaults_block_nothing() -> None:
    (alice,) = parse_config(peer_with()).wireguard.peers
    assert (alice.enabled, alice.expires) == (True, None)
    assert alice.policy == Policy()


def test_disabled_and_offset_datetime() -> None:
    text = peer_with("enabled = false", "expires = 2027-01-31T18:00:00+01:00")
    (alice,) = parse_config(text).wireguard.peers
    assert alice.enabled is False
    assert alice.expires == datetime.datetime(2027, 1, 31, 17, 0, tzinfo=UTC)
    assert alice.expires.tzinfo is UTC
    assert alice.policy == Policy(enabled=False, expires=alice.expires)


def test_a_local_date_is_the_end_of_that_day_utc() -> None:
    (alice,) = parse_config(peer_with("expires = 2027-01-31")).wireguard.peers
    assert alice.expires == datetime.datetime(2027, 2, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("line", "shown", "allowed"),
    [
        ("expires = 2027-01-31T18:00:00", "2027-01-31T18:00:00", "without an offset"),
        ('expires = "2027-01-31"', "'2027-01-31'", "unquoted"),
        ("expires = 30", "30", "a TOML date-time with an offset"),
        ("expires = 18:00:00", "18:00:00", "a TOML date-time with an offset"),
    ],
)
def test_bad_expires_names_key_value_and_what_is_allowed(
    line: str, shown: str, allowed: str
) -> None:
    problem = only_problem(peer_with(line))
    assert problem.startswith(f"wireguard.peers[0].expires: {shown} — "), problem
    assert allowed in problem


def test_bad_enabled() -> None:
    problem = only_problem(peer_with('enabled = "no"'))
    assert problem.startswith("wireguard.peers[0].enabled: 'no' — expected true or false"), problem


def test_quota_and_rates() -> None:
    text = peer_with('quota = "50GiB/month"', 'rate_down = "20Mbit"', 'rate_up = "512kbit"')
    (alice,) = parse_config(text).wireguard.peers
    quota = Quota(50 * 1024**3, QuotaPeriod.MONTH)
    assert (alice.quota, alice.rate_down, alice.rate_up) == (quota, 20_000_000, 512_000)
    assert alice.policy == Policy(quota=quota, rate_down=20_000_000, rate_up=512_000)
    (bob,) = parse_config(peer_with('quota = "none"', 'rate_up = "none"')).wireguard.peers
    assert bob.policy == Policy()


@pytest.mark.parametrize(
    ("line", "shown", "allowed"),
    [
        ('quota = "5XB/month"', "'5XB/month'", QUOTA_ALLOWED),
        ('quota = "5GiB"', "'5GiB'", QUOTA_ALLOWED),
        ("quota = 5", "5", QUOTA_ALLOWED),
        ('rate_down = "0Mbit"', "'0Mbit'", RATE_ALLOWED),
        ('rate_up = "20MB"', "'20MB'", RATE_ALLOWED),
    ],
)
def test_bad_quota_or_rate_names_key_value_and_what_is_allowed(
    line: str, shown: str, allowed: str
) -> None:
    key = line.split(" ")[0]
    assert only_problem(peer_with(line)) == f"wireguard.peers[0].{key}: {shown} — {allowed}"
