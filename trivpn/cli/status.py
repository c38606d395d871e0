"""`trivpn status`: the running server's control socket document, as JSON or as text tables.

Times read like `wg show`'s ("1 minute, 3 seconds ago"), sizes in binary units ("1.50 MiB").
The rendering is pure: the document and the present moment in, text out; `trivpn peer` uses
its formats and its table too.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

from trivpn.cli import configfile
from trivpn.cli.errors import CliError

NONE: Final = "-"
_UNITS: Final = (
    ("year", 365 * 24 * 3600),
    ("day", 24 * 3600),
    ("hour", 3600),
    ("minute", 60),
    ("second", 1),
)
_BYTE_UNITS: Final = ("KiB", "MiB", "GiB", "TiB", "PiB")


def add_arguments(command: str, parser: argparse.ArgumentParser) -> None:
    configfile.add_config_option(parser)
    parser.add_argument("--json", action="store_true", help="the server's status document as JSON")
    parser.set_defaults(func=cmd_status)


def cmd_status(args: argparse.Namespace) -> int:
    from trivpn.control import status_client

    cfg = configfile.load(args.config)
    path = status_client.socket_path(cfg.interface.name)
    try:
        document = status_client.query_status(path)
    except status_client.ControlUnavailable as e:
        raise CliError(f"status of {cfg.interface.name}: {e}") from e
    if args.json:
        print_json(document)
    else:
        sys.stdout.write(render(document, time.time()))
    return 0


def print_json(value: object) -> None:
    """A command's ``--json`` output; json is loaded for it alone (issue 13)."""
    import json

    print(json.dumps(value, indent=2))


def format_duration(seconds: float) -> str:
    """Whole seconds in words: "1 minute, 3 seconds"; under a second is "0 seconds"."""
    left = int(seconds)
    if left <= 0:
        return "0 seconds"
    parts: list[str] = []
    for name, size in _UNITS:
        count, left = divmod(left, size)
        if count:
            parts.append(f"{count} {name}" + ("" if count == 1 else "s"))
    return ", ".join(parts)


def format_handshake(epoch: float | None, now: float) -> str:
    """When a handshake happened, relative to ``now`` (both epoch seconds)."""
    if epoch is None:
        return "never"
    age = now - epoch
    if age < -1:  # a wall clock set back since then; say so rather than guess
        return "in the future (clock changed?)"
    if age < 1:
        return "now"
    return f"{format_duration(age)} ago"


def format_bytes(count: int) -> str:
    """Binary units with two decimals above 1023 bytes, as `wg show` prints transfer."""
    if count < 1024:
        return f"{count} B"
    value = float(count)
    for unit in _BYTE_UNITS:
        value /= 1024
        if value < 1024 or unit == _BYTE_UNITS[-1]:
            return f"{value:.2f} {unit}"
    raise AssertionError("unreachable")


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart, no trailing blanks."""
    lines = [list(headers), *(list(row) for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def _or_none(value: object) -> str:
    return NONE if value is None or value == "" else str(value)


def _header(doc: Mapping[str, Any]) -> list[str]:
    iface = doc["interface"]
    nat = doc["nat"]
    lines = [f"interface: {iface['name']}"]
    if doc.get("node") is not None:
        lines.append(f"  node: {doc['node']} (a gateway of a fleet)")
    lines.append(f"  address: {', '.join(iface['address']) or NONE}")
    lines.append(f"  mtu: {iface['mtu']}")
    egress = nat["egress"] or NONE
    lines.append(f"  nat: masquerade via {egress}" if nat["masquerade"] else "  nat: off")
    wg = doc.get("wireguard")
    if wg is not None:
        lines.append(f"  wireguard: listening on port {wg['listen_port']} ({wg['listen']})")
        lines.append(f"  public key: {wg['public_key']}")
    toy = doc.get("toyvpn")
    if toy is not None:
        pool = toy["pool"]
        lines.append(f"  toyvpn: listening on port {toy['listen_port']} ({toy['listen']})")
        lines.append(f"  pool: {pool['network']}, {pool['in_use']} of {pool['size']} in use")
    return lines


def format_usage(peer: Mapping[str, Any]) -> str:
    """What counts against the peer's quota, and the quota: "1.50 GiB of 50.00 GiB/month";
    without a quota, the bytes since the last reset."""
    used = peer.get("usage_bytes")
    if used is None:  # a server from before usage
        return NONE
    quota = peer.get("quota_bytes")
    if quota is None:
        return format_bytes(used)
    return f"{format_bytes(used)} of {format_bytes(quota)}/{peer['quota_period']}"


def _peers(peers: Sequence[Mapping[str, Any]], now: float, *, fleet: bool) -> list[str]:
    """The peers' table; ``fleet``: with the gateway each one's live session is on."""
    if not peers:
        return ["wireguard peers: none"]
    columns: list[tuple[str, Callable[[Mapping[str, Any]], str]]] = [
        ("NAME", lambda p: _or_none(p["name"])),
        ("STATE", lambda p: p.get("state", "active")),  # a server from before policies
        ("USAGE", format_usage),
        ("ENDPOINT", lambda p: _or_none(p["endpoint"])),
        ("LATEST HANDSHAKE", lambda p: format_handshake(p["latest_handshake"], now)),
        *([("NODE", lambda p: _or_none(p.get("node")))] if fleet else []),
        ("RECEIVED", lambda p: format_bytes(p["rx_bytes"])),
        ("SENT", lambda p: format_bytes(p["tx_bytes"])),
        ("ALLOWED IPS", lambda p: ", ".join(p["allowed_ips"]) or NONE),
        ("KEY", lambda p: p["public_key"]),
    ]
    rows = [[cell(p) for _, cell in columns] for p in peers]
    return [f"wireguard peers: {len(peers)}", table([title for title, _ in columns], rows)]


def _sessions(sessions: Sequence[Mapping[str, Any]]) -> list[str]:
    if not sessions:
        return ["toyvpn sessions: none"]
    rows = [
        (
            _or_none(s["address"]),
            _or_none(s["endpoint"]),
            f"{format_duration(s['idle_seconds'])}",
            format_bytes(s["rx_bytes"]),
            format_bytes(s["tx_bytes"]),
        )
        for s in sessions
    ]
    headers = ("ADDRESS", "ENDPOINT", "IDLE", "RECEIVED", "SENT")
    return [f"toyvpn sessions: {len(sessions)}", table(headers, rows)]


def _counters(groups: Mapping[str, Mapping[str, int]]) -> list[str]:
    lines = []
    for group, counts in sorted(groups.items()):
        shown = ", ".join(f"{k}={v}" for k, v in sorted(counts.items()) if v)
        if shown:
            lines.append(f"  {group}: {shown}")
    return ["counters:", *lines] if lines else []


def render(doc: Mapping[str, Any], now: float) -> str:
    """The whole status as text; ``now`` (epoch seconds) dates the handshakes."""
    blocks = ["\n".join(_header(doc))]
    wg = doc.get("wireguard")
    if wg is not None:
        fleet = doc.get("node") is not None
        blocks.append("\n".join(_peers(wg["peers"], now, fleet=fleet)))
    toy = doc.get("toyvpn")
    if toy is not None:
        blocks.append("\n".join(_sessions(toy["sessions"])))
    counters = _counters(doc.get("counters", {}))
    if counters:
        blocks.append("\n".join(counters))
    return "\n\n".join(blocks) + "\n"
