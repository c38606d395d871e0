"""trivpn.proto.peer_fields: one set of rules for a peer's fields, whoever gives them (the CLI's
options, the web API's JSON)."""

from __future__ import annotations

import datetime
import ipaddress

import pytest

from trivpn.proto.peer_fields import (
    FieldError,
    new_peer_fields,
    parse_addresses,
    parse_routes,
    policy_changes,
)

NOW = datetime.datetime(2026, 12, 1, 20, 0, 0, tzinfo=datetime.UTC)


def test_a_new_peer_with_every_field() -> None:
    fields = new_peer_fields(
        {
            "name": "alice@home",
            "address": "10.8.0.9, fd00::9/128",
            "route": "192.168.50.0/24",
            "expires": "30d",
            "quota": "50GiB/month",
            "rate": "20Mbit",
            "rate_up": "5Mbit",
        },
        NOW,
        enabled=False,
    )
    assert fields.name == "alice@home"
    assert fields.addresses == [ipaddress.ip_address("10.8.0.9"), ipaddress.ip_address("fd00::9")]
    assert fields.routes == [ipaddress.ip_network("192.168.50.0/24")]
    policy = fields.policy
    assert policy.enabled is False and policy.expires == NOW + datetime.timedelta(days=30)
    assert (policy.rate_down, policy.rate_up) == (20_000_000, 5_000_000)
    assert policy.quota is not None and policy.quota.bytes == 50 << 30


def test_a_field_not_given_is_left_alone_and_none_clears_it() -> None:
    assert policy_changes({}, NOW) == {}
    assert policy_changes({"quota": None, "rate": None, "expires": None}, NOW) == {
        "expires": None,
        "quota": None,
        "rate_down": None,
        "rate_up": None,
    }
    assert policy_changes({"quota": "none", "expires": "never"}, NOW) == {
        "expires": None,
        "quota": None,
    }
    assert policy_changes({"rate": "1Mbit", "rate_down": None}, NOW) == {
        "rate_down": None,
        "rate_up": 1_000_000,
    }


@pytest.mark.parametrize(
    ("texts", "field", "message"),
    [
        ({}, "name", "(not set) — required; expected 1 to 64 characters"),
        ({"name": "a b"}, "name", "'a b' — expected 1 to 64 characters from A-Z"),
        ({"name": "x" * 65}, "name", "expected 1 to 64 characters"),
        ({"name": "a", "address": "10.8.0"}, "address", "'10.8.0' — expected an IP address"),
        ({"name": "a", "address": "10.8.0.0/24"}, "address", "expected one host address"),
        ({"name": "a", "route": "lan"}, "route", "'lan' — expected a network with its prefix"),
        ({"name": "a", "expires": "2001-01-31"}, "expires", "is in the past"),
        ({"name": "a", "quota": "5GiB"}, "quota", "'5GiB' — expected a size and a period"),
        ({"name": "a", "rate": "0Mbit"}, "rate", "'0Mbit' — expected a rate above 0"),
        ({"name": "a", "rate": "1Mbit", "rate_up": "x"}, "rate_up", "'x' — expected a rate"),
    ],
)
def test_one_error_names_the_field(texts: dict[str, str], field: str, message: str) -> None:
    with pytest.raises(FieldError) as caught:
        new_peer_fields(texts, NOW)
    assert caught.value.field == field
    assert message in caught.value.message
    assert str(caught.value) == f"{field}: {caught.value.message}"


def test_lists_are_comma_separated_and_spaced_freely() -> None:
    assert parse_addresses(" 10.8.0.2 ,10.8.0.3") == [
        ipaddress.ip_address("10.8.0.2"),
        ipaddress.ip_address("10.8.0.3"),
    ]
    assert parse_routes("10.1.0.0/16,fd10::/64") == [
        ipaddress.ip_network("10.1.0.0/16"),
        ipaddress.ip_network("fd10::/64"),
    ]
