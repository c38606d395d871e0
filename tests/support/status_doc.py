"""A sample status document, as the control socket serves it (for renderers and metrics)."""

from __future__ import annotations

from typing import Any

NOW = 1_700_000_000.0


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
