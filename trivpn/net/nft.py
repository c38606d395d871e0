"""The nftables table trivpn owns: masquerade and forward rules for the tunnel subnets.

``build_ruleset`` is pure (libnftables JSON in, nothing touched), so the exact rules are
unit-tested; ``apply_ruleset`` hands them to the kernel in one atomic transaction through
the libnftables binding, in the network namespace of the calling thread.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from ipaddress import IPv4Network, IPv6Network, collapse_addresses
from typing import Any

import nftables

TABLE = "trivpn"
FAMILY = "inet"  # one table for IPv4 and IPv6
NAT_CHAIN = "nat"
FILTER_CHAIN = "filter"
# Networks routed to peers outside the tunnel subnets (a site's LAN), masqueraded and
# forwarded as the subnets are; trivpn.daemon.peer_routes fills them while the server runs.
ROUTED_SETS = {4: "routed4", 6: "routed6"}
_SET_TYPES = {4: "ipv4_addr", 6: "ipv6_addr"}
_SRCNAT_PRIORITY = 100
_FILTER_PRIORITY = 0
_IFNAMSIZ = 16


class NftError(Exception):
    """libnftables refused a command; the message is nft's own."""


def build_ruleset(
    subnets: Sequence[IPv4Network | IPv6Network],
    egress: str,
    *,
    masquerade: bool = True,
    table: str = TABLE,
) -> dict[str, Any]:
    """One transaction that replaces any stale ``table inet <table>`` with a fresh one.

    "add, delete, add" works whether or not the table exists, and since the whole list is
    one transaction no packet ever sees a half-built table. Both chains have policy
    accept: the table only adds what the tunnel needs and never blocks the host's other
    forwarding. The sets of routed peer networks start empty (`update_routed_sets`).
    """
    if not egress or len(egress.encode()) >= _IFNAMSIZ:
        raise ValueError(f"egress interface name {egress!r} is not a valid interface name")
    table_ref = {"family": FAMILY, "name": table}
    commands: list[dict[str, Any]] = [
        {"add": {"table": table_ref}},
        {"delete": {"table": table_ref}},
        {"add": {"table": table_ref}},
        _chain(table, NAT_CHAIN, "nat", "postrouting", _SRCNAT_PRIORITY),
        _chain(table, FILTER_CHAIN, "filter", "forward", _FILTER_PRIORITY),
        *(_set(table, version) for version in ROUTED_SETS),
    ]
    sources = [_saddr(subnet) for subnet in subnets]
    sources += [_saddr_in_set(version) for version in ROUTED_SETS]
    if masquerade:
        for source in sources:
            commands.append(_rule(table, NAT_CHAIN, source, _oifname(egress), {"masquerade": None}))
    established = {
        "match": {
            "op": "in",
            "left": {"ct": {"key": "state"}},
            "right": ["established", "related"],
        }
    }
    commands.append(_rule(table, FILTER_CHAIN, established, {"accept": None}))
    for source in sources:
        commands.append(_rule(table, FILTER_CHAIN, source, _oifname(egress), {"accept": None}))
    return {"nftables": commands}


def update_routed_sets(
    networks: Iterable[IPv4Network | IPv6Network], *, table: str = TABLE
) -> dict[str, Any]:
    """One transaction that makes the routed sets hold exactly ``networks`` (nested and
    adjacent ones merged first: an interval set refuses overlapping elements)."""
    networks = list(networks)
    commands: list[dict[str, Any]] = []
    for version, name in ROUTED_SETS.items():
        ref = {"family": FAMILY, "table": table, "name": name}
        commands.append({"flush": {"set": ref}})
        same = sorted(n for n in networks if n.version == version)
        if same:
            merged = collapse_addresses(same)  # type: ignore[type-var]  # one version, checked
            elements = [_prefix(n) for n in merged]
            commands.append({"add": {"element": {**ref, "elem": elements}}})
    return {"nftables": commands}


def _set(table: str, version: int) -> dict[str, Any]:
    return {
        "add": {
            "set": {
                "family": FAMILY,
                "table": table,
                "name": ROUTED_SETS[version],
                "type": _SET_TYPES[version],
                "flags": ["interval"],
            }
        }
    }


def _saddr_in_set(version: int) -> dict[str, Any]:
    return _saddr_is(version, "@" + ROUTED_SETS[version])


def _prefix(network: IPv4Network | IPv6Network) -> dict[str, Any]:
    return {"prefix": {"addr": str(network.network_address), "len": network.prefixlen}}


def _chain(table: str, name: str, kind: str, hook: str, priority: int) -> dict[str, Any]:
    return {
        "add": {
            "chain": {
                "family": FAMILY,
                "table": table,
                "name": name,
                "type": kind,
                "hook": hook,
                "prio": priority,
                "policy": "accept",
            }
        }
    }


def _rule(table: str, chain: str, *expr: dict[str, Any]) -> dict[str, Any]:
    return {"add": {"rule": {"family": FAMILY, "table": table, "chain": chain, "expr": list(expr)}}}


def _saddr(subnet: IPv4Network | IPv6Network) -> dict[str, Any]:
    return _saddr_is(subnet.version, _prefix(subnet))


def _saddr_is(version: int, right: Any) -> dict[str, Any]:
    """``ip saddr <right>`` (``ip6`` for version 6): a prefix or a set reference."""
    protocol = "ip" if version == 4 else "ip6"
    left = {"payload": {"protocol": protocol, "field": "saddr"}}
    return {"match": {"op": "==", "left": left, "right": right}}


def _oifname(egress: str) -> dict[str, Any]:
    return {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": egress}}


def _run(command: dict[str, Any]) -> Any:
    nft = nftables.Nftables()
    rc, output, error = nft.json_cmd(command)
    if rc != 0:
        raise NftError(str(error).strip() or f"nft failed with status {rc}")
    return output


def _table_exists(table: str) -> bool:
    listing = _run({"nftables": [{"list": {"tables": {"family": FAMILY}}}]})
    return any(item.get("table", {}).get("name") == table for item in _items(listing))


def _items(listing: Any) -> list[dict[str, Any]]:
    if not isinstance(listing, dict):
        return []
    return [item for item in listing.get("nftables", []) if isinstance(item, dict)]


def apply_ruleset(ruleset: dict[str, Any]) -> None:
    """Apply ``ruleset`` atomically: all of it or, on NftError, none of it."""
    _run(ruleset)


def delete_table(table: str = TABLE) -> bool:
    """Remove ``table inet <table>``; True if it existed, False (no error) if not."""
    try:
        _run({"nftables": [{"delete": {"table": {"family": FAMILY, "name": table}}}]})
    except NftError:
        if _table_exists(table):
            raise
        return False
    return True


def list_table(table: str = TABLE) -> dict[str, Any] | None:
    """The parsed JSON of ``list table inet <table>``, or None if there is no such table."""
    try:
        listing = _run({"nftables": [{"list": {"table": {"family": FAMILY, "name": table}}}]})
    except NftError:
        if _table_exists(table):
            raise
        return None
    return listing if isinstance(listing, dict) else None


# --- other tables that can drop the tunnel's forwarded traffic -----------------------------

_FAMILIES_THAT_FORWARD = frozenset({"ip", "ip6", "inet"})
_TERMINAL = frozenset({"drop", "reject"})
_HARMLESS = frozenset({"counter", "log", "limit"})  # statements that do not select packets


def forward_blockers(listing: Any, tunnel: str) -> list[str]:
    """The forward-hook base chains of other tables that drop what no rule accepts (policy
    drop, or an unconditional drop/reject at the end, as firewalld's), in tables none of
    whose rules names the ``tunnel`` interface. nftables runs every base chain of a hook and
    a drop in any of them is final: our table's accept cannot get the tunnel's traffic past
    such a chain (Docker's FORWARD chain is one). A heuristic for a warning, never a refusal.
    """
    items = _items(listing)
    rules: dict[tuple[Any, ...], list[Any]] = {}  # (family, table, chain): rule expressions
    for item in items:
        rule = item.get("rule")
        if isinstance(rule, dict):
            key = (rule.get("family"), rule.get("table"), rule.get("chain"))
            rules.setdefault(key, []).append(rule.get("expr"))
    naming_tables = {(f, t) for (f, t, _), exprs in rules.items() if _names(exprs, tunnel)}
    blockers: list[str] = []
    for item in items:
        chain = item.get("chain")
        if not isinstance(chain, dict) or chain.get("hook") != "forward":
            continue
        family, table, name = chain.get("family"), chain.get("table"), chain.get("name")
        if family not in _FAMILIES_THAT_FORWARD or (family, table) == (FAMILY, TABLE):
            continue
        if (family, table) in naming_tables:
            continue
        exprs = rules.get((family, table, name), [])
        if chain.get("policy") == "drop" or (exprs and _drops_everything(exprs[-1])):
            blockers.append(f"{family} {table} {name}")
    return blockers


def _names(value: Any, tunnel: str) -> bool:
    """Whether a rule's JSON holds the interface name (or a wildcard "prefix*" that fits it)."""
    if isinstance(value, str):
        return value == tunnel or (value.endswith("*") and tunnel.startswith(value[:-1]))
    if isinstance(value, dict):
        return any(_names(v, tunnel) for v in value.values())
    if isinstance(value, list):
        return any(_names(v, tunnel) for v in value)
    return False


def _drops_everything(expr: Any) -> bool:
    if not isinstance(expr, list):
        return False
    kinds = {key for statement in expr if isinstance(statement, dict) for key in statement}
    return bool(kinds & _TERMINAL) and kinds <= _TERMINAL | _HARMLESS


def list_ruleset() -> Any:
    """The parsed JSON of ``list ruleset`` (every table of this namespace)."""
    return _run({"nftables": [{"list": {"ruleset": None}}]})


def set_routed_networks(networks: Iterable[IPv4Network | IPv6Network], table: str = TABLE) -> None:
    """Make the routed sets of the running table hold exactly ``networks`` (atomically)."""
    _run(update_routed_sets(networks, table=table))
