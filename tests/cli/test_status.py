"""`trivpn status` rendering: time phrases, byte units, the tables."""

from __future__ import annotations

import re

import pytest
from support.status_doc import NOW, document

from trivpn.cli import status


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 seconds"),
        (0.9, "0 seconds"),
        (1, "1 second"),
        (59, "59 seconds"),
        (60, "1 minute"),
        (63, "1 minute, 3 seconds"),
        (3600 + 120, "1 hour, 2 minutes"),
        (2 * 86400 + 3661, "2 days, 1 hour, 1 minute, 1 second"),
        (366 * 86400, "1 year, 1 day"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert status.format_duration(seconds) == text


@pytest.mark.parametrize(
    ("epoch", "text"),
    [
        (None, "never"),
        (NOW, "now"),
        (NOW - 63, "1 minute, 3 seconds ago"),
        (NOW - 7200, "2 hours ago"),
        (NOW + 30, "in the future (clock changed?)"),
    ],
)
def test_format_handshake(epoch: float | None, text: str) -> None:
    assert status.format_handshake(epoch, NOW) == text


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.00 KiB"),
        (1536, "1.50 KiB"),
        (5 * 1024**2 + 1024**2 // 4, "5.25 MiB"),
        (3 * 1024**3, "3.00 GiB"),
        (2 * 1024**6, "2048.00 PiB"),
    ],
)
def test_format_bytes(count: int, text: str) -> None:
    assert status.format_bytes(count) == text


def test_render_lists_interface_peers_sessions_and_counters() -> None:
    text = status.render(document(), NOW)
    lines = text.splitlines()
    assert lines[0] == "interface: tv0"
    assert "  address: 10.8.0.1/24, fd00:8::1/64" in lines
    assert "  nat: masquerade via inet0" in lines
    assert "  wireguard: listening on port 51820 (0.0.0.0:51820)" in lines
    assert "  pool: 10.8.0.128/25, 1 of 126 in use" in lines
    alice = next(line for line in lines if line.startswith("alice"))
    assert alice.split("  ")[0] == "alice"
    for cell in ("198.51.100.2:40000", "1 minute, 3 seconds ago", "1.50 KiB", "3.00 MiB"):
        assert cell in alice
    unnamed = next(line for line in lines if "B" * 43 in line)
    assert unnamed.startswith("-") and "never" in unnamed
    session = next(line for line in lines if line.startswith("10.8.0.129"))
    assert "[2001:db8::7]:5555" in session and "3 seconds" in session and "2.00 KiB" in session
    # only counters that counted something
    assert "  wireguard: bad_mac1=2" in lines
    assert "replay" not in text
    # the columns line up: every cell of a column starts at its header's offset
    header = next(line for line in lines if line.startswith("NAME"))
    assert alice.index("198.51.100.2") == header.index("ENDPOINT")
    assert all(line == line.rstrip() for line in lines)


def test_render_without_protocols_or_peers() -> None:
    doc = document()
    doc["toyvpn"] = None
    doc["wireguard"]["peers"] = []
    doc["nat"] = {"masquerade": False, "egress": ""}
    doc["counters"] = {"server": {}}
    text = status.render(doc, NOW)
    assert "wireguard peers: none" in text
    assert "toyvpn" not in text
    assert "  nat: off" in text
    assert "counters" not in text


def test_table_pads_columns() -> None:
    assert status.table(("A", "LONG"), [("xyz", "1"), ("", "")]) == "A    LONG\nxyz  1\n"


def test_render_shows_each_peers_usage_and_quota() -> None:
    doc = document()
    alice, unnamed = doc["wireguard"]["peers"]
    alice.update(
        state="over_quota", quota_bytes=4 * 1024**2, quota_period="total", usage_bytes=4198400
    )
    unnamed.update(quota_bytes=None, quota_period=None, usage_bytes=1536)
    lines = status.render(doc, NOW).splitlines()
    header = next(line for line in lines if line.startswith("NAME"))
    alice_line = next(line for line in lines if line.startswith("alice"))
    unnamed_line = next(line for line in lines if "B" * 43 in line)
    assert alice_line[header.index("STATE") :].startswith("over_quota ")
    assert alice_line[header.index("USAGE") :].startswith("4.00 MiB of 4.00 MiB/total ")
    assert unnamed_line[header.index("USAGE") :].startswith("1.50 KiB ")


def test_render_of_a_server_from_before_usage_shows_none() -> None:
    lines = status.render(document(), NOW).splitlines()
    header = next(line for line in lines if line.startswith("NAME"))
    alice = next(line for line in lines if line.startswith("alice"))
    assert alice[header.index("USAGE") :].startswith("- ")


def test_render_of_a_fleets_gateway_shows_its_node_and_each_peers() -> None:
    doc = document()
    assert "NODE" not in status.render(doc, NOW) and "node:" not in status.render(doc, NOW)
    doc["node"] = "gw1"
    alice, nobody = doc["wireguard"]["peers"]
    alice["node"], nobody["node"] = "gw2", None
    text = status.render(doc, NOW)
    assert "  node: gw1 (a gateway of a fleet)" in text.splitlines()
    header = next(line for line in text.splitlines() if line.startswith("NAME"))
    assert re.search(r"LATEST HANDSHAKE +NODE +RECEIVED", header), header
    assert re.search(r"^alice .* ago +gw2 +1.50 KiB ", text, re.M), text
    assert re.search(r"^- .* never +- +0 B ", text, re.M), text
