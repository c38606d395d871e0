"""build_ruleset is pure: the exact libnftables JSON for each kind of configuration."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network
from typing import Any

import pytest

from trivpn.net.nft import TABLE, build_ruleset, update_routed_sets

V4 = IPv4Network("10.9.0.0/24")
V6 = IPv6Network("fd00:9::/64")

TABLE_REF = {"family": "inet", "name": "trivpn"}
NAT_CHAIN = {
    "family": "inet",
    "table": "trivpn",
    "name": "nat",
    "type": "nat",
    "hook": "postrouting",
    "prio": 100,
    "policy": "accept",
}
FILTER_CHAIN = {
    "family": "inet",
    "table": "trivpn",
    "name": "filter",
    "type": "filter",
    "hook": "forward",
    "prio": 0,
    "policy": "accept",
}
ESTABLISHED = {
    "match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}
}


def saddr(protocol: str, addr: str, length: int) -> dict[str, Any]:
    return {
        "match": {
            "op": "==",
            "left": {"payload": {"protocol": protocol, "field": "saddr"}},
            "right": {"prefix": {"addr": addr, "len": length}},
        }
    }


def oifname(name: str) -> dict[str, Any]:
    return {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": name}}


def rule(chain: str, *expr: dict[str, Any]) -> dict[str, Any]:
    return {"add": {"rule": {"family": "inet", "table": "trivpn", "chain": chain, "expr": [*expr]}}}


def routed_set(name: str, kind: str) -> dict[str, Any]:
    ref = {"family": "inet", "table": "trivpn", "name": name}
    return {"add": {"set": {**ref, "type": kind, "flags": ["interval"]}}}


def in_set(protocol: str, name: str) -> dict[str, Any]:
    return {
        "match": {
            "op": "==",
            "left": {"payload": {"protocol": protocol, "field": "saddr"}},
            "right": "@" + name,
        }
    }


PREAMBLE = [
    {"add": {"table": TABLE_REF}},
    {"delete": {"table": TABLE_REF}},
    {"add": {"table": TABLE_REF}},
    {"add": {"chain": NAT_CHAIN}},
    {"add": {"chain": FILTER_CHAIN}},
    routed_set("routed4", "ipv4_addr"),
    routed_set("routed6", "ipv6_addr"),
]
ROUTED = [in_set("ip", "routed4"), in_set("ip6", "routed6")]
MASQ = {"masquerade": None}
ACCEPT = {"accept": None}


def test_table_name_is_the_contract() -> None:
    assert TABLE == "trivpn"


def test_ipv4_only() -> None:
    assert build_ruleset([V4], "eth0") == {
        "nftables": [
            *PREAMBLE,
            rule("nat", saddr("ip", "10.9.0.0", 24), oifname("eth0"), MASQ),
            *(rule("nat", source, oifname("eth0"), MASQ) for source in ROUTED),
            rule("filter", ESTABLISHED, ACCEPT),
            rule("filter", saddr("ip", "10.9.0.0", 24), oifname("eth0"), ACCEPT),
            *(rule("filter", source, oifname("eth0"), ACCEPT) for source in ROUTED),
        ]
    }


def test_ipv6_only() -> None:
    assert build_ruleset([V6], "wan1") == {
        "nftables": [
            *PREAMBLE,
            rule("nat", saddr("ip6", "fd00:9::", 64), oifname("wan1"), MASQ),
            *(rule("nat", source, oifname("wan1"), MASQ) for source in ROUTED),
            rule("filter", ESTABLISHED, ACCEPT),
            rule("filter", saddr("ip6", "fd00:9::", 64), oifname("wan1"), ACCEPT),
            *(rule("filter", source, oifname("wan1"), ACCEPT) for source in ROUTED),
        ]
    }


def test_dual_stack_keeps_subnet_order() -> None:
    assert build_ruleset([V4, V6], "inet0") == {
        "nftables": [
            *PREAMBLE,
            rule("nat", saddr("ip", "10.9.0.0", 24), oifname("inet0"), MASQ),
            rule("nat", saddr("ip6", "fd00:9::", 64), oifname("inet0"), MASQ),
            *(rule("nat", source, oifname("inet0"), MASQ) for source in ROUTED),
            rule("filter", ESTABLISHED, ACCEPT),
            rule("filter", saddr("ip", "10.9.0.0", 24), oifname("inet0"), ACCEPT),
            rule("filter", saddr("ip6", "fd00:9::", 64), oifname("inet0"), ACCEPT),
            *(rule("filter", source, oifname("inet0"), ACCEPT) for source in ROUTED),
        ]
    }


def test_without_masquerade_there_is_no_masquerade_rule() -> None:
    ruleset = build_ruleset([V4, V6], "eth0", masquerade=False)
    assert "masquerade" not in repr(ruleset)
    rules = [cmd["add"]["rule"] for cmd in ruleset["nftables"] if "rule" in cmd.get("add", {})]
    assert {r["chain"] for r in rules} == {"filter"}
    # the chains themselves are still created, so the table's shape does not depend on it
    assert ruleset["nftables"][: len(PREAMBLE)] == PREAMBLE


def test_other_table_name() -> None:
    ruleset = build_ruleset([V4], "eth0", table="trivpn_test")
    tables = {
        cmd[verb]["table"]["name"]
        for cmd in ruleset["nftables"]
        for verb in cmd
        if isinstance(cmd[verb].get("table"), dict)
    }
    in_table = {
        cmd["add"][kind]["table"]
        for cmd in ruleset["nftables"]
        if "add" in cmd
        for kind in ("chain", "rule", "set")
        if kind in cmd["add"]
    }
    assert tables == {"trivpn_test"}
    assert in_table == {"trivpn_test"}


def test_no_subnets_only_the_established_rule_and_the_routed_sets() -> None:
    assert build_ruleset([], "eth0") == {
        "nftables": [
            *PREAMBLE,
            *(rule("nat", source, oifname("eth0"), MASQ) for source in ROUTED),
            rule("filter", ESTABLISHED, ACCEPT),
            *(rule("filter", source, oifname("eth0"), ACCEPT) for source in ROUTED),
        ]
    }


def test_routed_sets_are_replaced_whole_with_nested_networks_merged() -> None:
    ref4 = {"family": "inet", "table": "trivpn", "name": "routed4"}
    ref6 = {"family": "inet", "table": "trivpn", "name": "routed6"}
    networks = [
        IPv4Network("192.168.50.0/24"),
        IPv6Network("fd00:77::/64"),
        IPv4Network("192.168.0.0/16"),  # holds the /24: one element
        IPv4Network("10.77.0.5/32"),
        IPv4Network("10.77.0.4/32"),  # adjacent to .5: one /31
    ]
    assert update_routed_sets(networks) == {
        "nftables": [
            {"flush": {"set": ref4}},
            {
                "add": {
                    "element": {
                        **ref4,
                        "elem": [
                            {"prefix": {"addr": "10.77.0.4", "len": 31}},
                            {"prefix": {"addr": "192.168.0.0", "len": 16}},
                        ],
                    }
                }
            },
            {"flush": {"set": ref6}},
            {"add": {"element": {**ref6, "elem": [{"prefix": {"addr": "fd00:77::", "len": 64}}]}}},
        ]
    }
    assert update_routed_sets([]) == {
        "nftables": [{"flush": {"set": ref4}}, {"flush": {"set": ref6}}]
    }


def test_pure_each_call_builds_a_new_object() -> None:
    first = build_ruleset([V4], "eth0")
    first["nftables"].clear()
    assert build_ruleset([V4], "eth0")["nftables"]


@pytest.mark.parametrize("egress", ["", "x" * 16])
def test_bad_egress_name_is_refused(egress: str) -> None:
    with pytest.raises(ValueError, match="egress interface name"):
        build_ruleset([V4], egress)
