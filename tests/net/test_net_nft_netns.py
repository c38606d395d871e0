"""The ruleset applied for real in a fresh namespace, read back with the nft command."""

from __future__ import annotations

import json
from collections.abc import Callable
from ipaddress import IPv4Network, IPv6Network
from typing import Any

import pytest
from support.netlab import Netns

pytestmark = pytest.mark.root

NsCall = Callable[..., dict[str, Any]]
SUBNETS = [IPv4Network("10.9.0.0/24"), IPv6Network("fd00:9::/64")]


def nft_list(ns: Netns) -> list[dict[str, Any]]:
    """Everything in ``table inet trivpn`` as nft -j reports it (metainfo dropped)."""
    out = ns.run("nft", "-j", "list", "table", "inet", "trivpn")
    items: list[dict[str, Any]] = json.loads(out.stdout)["nftables"]
    return [item for item in items if "metainfo" not in item]


def summary(items: list[dict[str, Any]]) -> dict[str, Any]:
    """The meaning of the listing, without handles: chains and their rules in order."""
    chains = {
        item["chain"]["name"]: (
            item["chain"]["type"],
            item["chain"]["hook"],
            item["chain"]["prio"],
            item["chain"]["policy"],
        )
        for item in items
        if "chain" in item
    }
    rules: dict[str, list[tuple[Any, ...]]] = {name: [] for name in chains}
    for item in items:
        if "rule" in item:
            rules[item["rule"]["chain"]].append(describe(item["rule"]["expr"]))
    tables = [(i["table"]["family"], i["table"]["name"]) for i in items if "table" in i]
    sets = {
        i["set"]["name"]: [_element(e) for e in i["set"].get("elem", [])]
        for i in items
        if "set" in i
    }
    return {"tables": tables, "chains": chains, "rules": rules, "sets": sets}


def _element(element: Any) -> str:
    if isinstance(element, dict) and "prefix" in element:
        return f"{element['prefix']['addr']}/{element['prefix']['len']}"
    return str(element)  # a single address


def describe(expr: list[dict[str, Any]]) -> tuple[Any, ...]:
    """A rule as (saddr prefix or ct states, oifname, verdict)."""
    source: Any = None
    oif = None
    verdict = None
    for statement in expr:
        if "match" in statement:
            left, right = statement["match"]["left"], statement["match"]["right"]
            if "payload" in left and isinstance(right, str):  # "@set"
                source = f"{left['payload']['protocol']} {right}"
            elif "payload" in left:
                prefix = right["prefix"]
                source = f"{left['payload']['protocol']} {prefix['addr']}/{prefix['len']}"
            elif left.get("meta", {}).get("key") == "oifname":
                oif = right
            elif "ct" in left:
                source = "ct " + ",".join(sorted(right))
        else:
            (verdict,) = statement.keys()
    return (source, oif, verdict)


EXPECTED = {
    "tables": [("inet", "trivpn")],
    "chains": {
        "nat": ("nat", "postrouting", 100, "accept"),
        "filter": ("filter", "forward", 0, "accept"),
    },
    "rules": {
        "nat": [
            ("ip 10.9.0.0/24", "inet0", "masquerade"),
            ("ip6 fd00:9::/64", "inet0", "masquerade"),
            ("ip @routed4", "inet0", "masquerade"),
            ("ip6 @routed6", "inet0", "masquerade"),
        ],
        "filter": [
            ("ct established,related", None, "accept"),
            ("ip 10.9.0.0/24", "inet0", "accept"),
            ("ip6 fd00:9::/64", "inet0", "accept"),
            ("ip @routed4", "inet0", "accept"),
            ("ip6 @routed6", "inet0", "accept"),
        ],
    },
    "sets": {"routed4": [], "routed6": []},
}


def test_apply_reads_back_the_same_rules(netns: Netns, ns_call: NsCall) -> None:
    assert ns_call(netns, "nft.apply", SUBNETS, "inet0") == {"ok": None}
    assert summary(nft_list(netns)) == EXPECTED


def test_apply_twice_leaves_one_table_without_duplicates(netns: Netns, ns_call: NsCall) -> None:
    assert ns_call(netns, "nft.apply", SUBNETS, "inet0") == {"ok": None}
    assert ns_call(netns, "nft.apply", SUBNETS, "inet0") == {"ok": None}
    tables = json.loads(netns.run("nft", "-j", "list", "tables").stdout)["nftables"]
    assert [t["table"]["name"] for t in tables if "table" in t] == ["trivpn"]
    assert summary(nft_list(netns)) == EXPECTED


def test_apply_replaces_a_stale_table(netns: Netns, ns_call: NsCall) -> None:
    netns.run(
        "nft", "add table inet trivpn { chain stale { type filter hook input priority 0; }; }"
    )
    assert "chain stale" in netns.run("nft", "list", "table", "inet", "trivpn").stdout
    assert ns_call(netns, "nft.apply", SUBNETS[:1], "eth9", masquerade=False) == {"ok": None}
    assert summary(nft_list(netns)) == {
        "tables": [("inet", "trivpn")],
        "chains": EXPECTED["chains"],
        "rules": {
            "nat": [],
            "filter": [
                ("ct established,related", None, "accept"),
                ("ip 10.9.0.0/24", "eth9", "accept"),
                ("ip @routed4", "eth9", "accept"),
                ("ip6 @routed6", "eth9", "accept"),
            ],
        },
        "sets": EXPECTED["sets"],
    }


def test_list_and_delete_table(netns: Netns, ns_call: NsCall) -> None:
    assert ns_call(netns, "nft.list_table") == {"ok": None}
    assert ns_call(netns, "nft.delete_table") == {"ok": False}
    ns_call(netns, "nft.apply", SUBNETS, "inet0")
    listed = ns_call(netns, "nft.list_table")["ok"]
    assert summary([i for i in listed["nftables"] if "metainfo" not in i]) == EXPECTED
    assert ns_call(netns, "nft.delete_table") == {"ok": True}
    assert "trivpn" not in netns.run("nft", "list", "tables").stdout
    assert ns_call(netns, "nft.delete_table") == {"ok": False}
    assert ns_call(netns, "nft.list_table") == {"ok": None}


def test_delete_leaves_other_tables_alone(netns: Netns, ns_call: NsCall) -> None:
    netns.run("nft", "add table inet other")
    ns_call(netns, "nft.apply", SUBNETS, "inet0")
    assert ns_call(netns, "nft.delete_table") == {"ok": True}
    assert "table inet other" in netns.run("nft", "list", "tables").stdout


def test_a_refused_ruleset_raises_nft_error_and_changes_nothing(
    netns: Netns, ns_call: NsCall
) -> None:
    ns_call(netns, "nft.apply", SUBNETS, "inet0")
    ruleset = {
        "nftables": [
            {"delete": {"table": {"family": "inet", "name": "trivpn"}}},
            {"add": {"rule": {"family": "inet", "table": "nope", "chain": "x", "expr": []}}},
        ]
    }
    outcome = ns_call(netns, "nft.apply_ruleset", ruleset)
    assert outcome["error"] == "NftError"
    assert "No such file or directory" in outcome["message"]
    # one transaction: the delete before the failing command did not happen either
    assert summary(nft_list(netns)) == EXPECTED


def test_forward_blockers_finds_a_drop_policy_and_a_final_reject(
    netns: Netns, ns_call: NsCall
) -> None:
    ns_call(netns, "nft.apply", SUBNETS, "inet0")  # our own accept chain is never a blocker
    assert ns_call(netns, "nft.forward_blockers", "tv0") == {"ok": []}
    # iptables-nft's (Docker's) layout: policy drop on FORWARD
    netns.run("nft", "add table ip filter")
    netns.run(
        "nft", "add chain ip filter FORWARD { type filter hook forward priority 0; policy drop; }"
    )
    # firewalld's: policy accept, then an unconditional reject at the end
    netns.run("nft", "add table inet fw")
    netns.run("nft", "add chain inet fw filter_FORWARD { type filter hook forward priority 10; }")
    netns.run("nft", "add rule inet fw filter_FORWARD ct state established accept")
    netns.run("nft", "add rule inet fw filter_FORWARD counter reject")
    assert ns_call(netns, "nft.forward_blockers", "tv0") == {
        "ok": ["ip filter FORWARD", "inet fw filter_FORWARD"]
    }
    # a rule anywhere in the table that names the tunnel (Docker's DOCKER-USER, say) counts
    netns.run("nft", "add chain ip filter DOCKER-USER")
    netns.run("nft", 'add rule ip filter DOCKER-USER iifname "tv*" accept')
    assert ns_call(netns, "nft.forward_blockers", "tv0") == {"ok": ["inet fw filter_FORWARD"]}


def test_the_routed_sets_follow_the_peer_networks(netns: Netns, ns_call: NsCall) -> None:
    ns_call(netns, "nft.apply", SUBNETS, "inet0")
    networks = [
        IPv4Network("192.168.50.0/24"),
        IPv4Network("192.168.0.0/16"),
        IPv4Network("10.77.0.5/32"),
        IPv6Network("fd00:77::/64"),
    ]
    assert ns_call(netns, "nft.set_routed_networks", networks) == {"ok": None}
    assert summary(nft_list(netns))["sets"] == {
        "routed4": ["10.77.0.5", "192.168.0.0/16"],
        "routed6": ["fd00:77::/64"],
    }
    assert ns_call(netns, "nft.set_routed_networks", networks[:1]) == {"ok": None}
    assert summary(nft_list(netns))["sets"] == {"routed4": ["192.168.50.0/24"], "routed6": []}
