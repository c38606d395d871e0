"""`trivpn status` rendering: time phrases, byte units, the tables."""

from __future__ import annotations

from typing import Any

import pytest

from trivpn.cli import status

NOW = 1_700_000_000.0


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


def document() -> dict[str, Any]:
    return {
        "version": 1,
        "time": NOW,
        "interface": {"name": "tv0", "address": ["10.8.0.1/24", "fd00:8::1/64"], "mtu": 1420},
        "nat": {"masquerade": True, "egress": "inet0"},
        "wireguard": {
            "listen": "0.0.0.0:51820",
            "listen_port": 51820,
            "public_key": "S" * 43 + "=",
            "peers": [
                {
                    "name": "alice",
                    "public_key": "A" * 43 + "=",
                    "endpoint": "198.51.100.2:40000",
                    "latest_handshake": NOW - 63,
                    "rx_bytes": 1536,
                    "tx_bytes": 3 * 1024**2,
                    "rx_packets": 12,
                    "tx_packets": 2200,
                    "handshakes": 3,
                    "allowed_ips": ["10.8.0.2/32"],
                    "persistent_keepalive": 0,
                },
                {
                    "name": None,
                    "public_key": "B" * 43 + "=",
                    "endpoint": None,
                    "latest_handshake": None,
                    "rx_bytes": 0,
                    "tx_bytes": 0,
                    "rx_packets": 0,
                    "tx_packets": 0,
                    "handshakes": 0,
                    "allowed_ips": [],
                    "persistent_keepalive": 25,
                },
            ],
        },
        "toyvpn": {
            "listen": "0.0.0.0:8000",
            "listen_port": 8000,
            "pool": {"network": "10.8.0.128/25", "size": 126, "in_use": 1},
            "sessions": [
                {
                    "endpoint": "[2001:db8::7]:5555",
                    "address": "10.8.0.129",
                    "rx_bytes": 100,
                    "tx_bytes": 2048,
                    "rx_packets": 1,
                    "tx_packets": 2,
                    "idle_seconds": 3.7,
                }
            ],
        },
        "counters": {"server": {}, "wireguard": {"bad_mac1": 2, "replay": 0}, "toyvpn": {}},
    }


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
