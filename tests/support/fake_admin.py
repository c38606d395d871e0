"""A stand-in for the web admin's `Admin` with a few made-up peers, for tests of the pages and
for looking at them in a browser: rows with every field of the real ones, no server."""

from __future__ import annotations

import base64
import copy
import hashlib
import math
from collections.abc import Mapping
from typing import Any

from trivpn.config import PEER_NAME_ALLOWED
from trivpn.control.web.admin import AdminError, NewPeer

NOW = 1_800_000_000.0  # the fake's wall clock (2027-01-15), unless given another
GIB = 1 << 30


def _key(name: str) -> str:
    return base64.b64encode(hashlib.sha256(name.encode()).digest()).decode()


def peer_row(name: str, index: int, now: float, **changes: Any) -> dict[str, Any]:
    """A registry peer's row as the API answers it, online and idle unless ``changes`` say."""
    row: dict[str, Any] = {
        "name": name,
        "source": "registry",
        "addresses": [f"10.8.0.{index + 2}/32"],
        "public_key": _key(name),
        "created": "2026-11-02T09:30:00+00:00",
        "state": "active",
        "enabled": True,
        "expires": None,
        "quota_bytes": None,
        "quota_period": None,
        "usage_bytes": 0,
        "lifetime_rx_bytes": 0,
        "lifetime_tx_bytes": 0,
        "rate_down_bps": None,
        "rate_up_bps": None,
        "endpoint": f"198.51.100.{index + 7}:51820",
        "latest_handshake": now - 40,
        "received": 0,
        "sent": 0,
        "online": True,
        "rx_rate_bps": 0.0,
        "tx_rate_bps": 0.0,
    }
    row.update(changes)
    return row


def sample_peers(now: float = NOW) -> list[dict[str, Any]]:
    return [
        peer_row(
            "alice-laptop",
            0,
            now,
            latest_handshake=now - 12,
            usage_bytes=37 * GIB + 123_456_789,
            quota_bytes=50 * GIB,
            quota_period="month",
            received=2 * GIB,
            sent=35 * GIB,
            rx_rate_bps=1_250_000.0,
            tx_rate_bps=48_300_000.0,
            rate_down_bps=100_000_000,
            rate_up_bps=20_000_000,
        ),
        peer_row(
            "bob-phone",
            1,
            now,
            latest_handshake=now - 95,
            usage_bytes=812 * (1 << 20),
            received=300 * (1 << 20),
            sent=512 * (1 << 20),
            rx_rate_bps=64_000.0,
            tx_rate_bps=410_000.0,
            expires="2027-01-31T23:59:59Z",
        ),
        peer_row(
            "carol@office",
            2,
            now,
            source="config",
            created=None,
            latest_handshake=now - 2 * 3600,
            online=False,
            endpoint="203.0.113.40:43822",
            usage_bytes=5 * GIB,
            quota_bytes=5 * GIB,
            quota_period="week",
            state="over_quota",
        ),
        peer_row(
            "dave-tablet",
            3,
            now,
            enabled=False,
            state="disabled",
            latest_handshake=None,
            endpoint=None,
            online=False,
            received=None,
            sent=None,
        ),
    ]


class FakeAdmin:
    """`Admin`'s methods over rows in memory; ``calls`` records the writes. It checks only
    what the pages show errors for: a name missing (400) or in use (409) and unknown peers (404)."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now
        self.rows = {row["name"]: row for row in sample_peers(now)}
        self.calls: list[tuple[str, Any]] = []

    async def status(self) -> dict[str, Any]:
        rows = self.rows.values()
        return {
            "version": 1,
            "time": self.now,
            "interface": {"name": "trivpn0", "address": ["10.8.0.1/24"], "mtu": 1420},
            "nat": {"masquerade": True, "egress": "eth0"},
            "wireguard": {
                "listen": "0.0.0.0:51820",
                "listen_port": 51820,
                "public_key": _key("server"),
            },
            "toyvpn": {
                "listen": "0.0.0.0:8000",
                "listen_port": 8000,
                "pool": {"network": "10.9.0.0/24", "size": 253, "in_use": 2},
                "session_count": 2,
            },
            "counters": {"server": {}},
            "uptime_seconds": 3 * 86400 + 4 * 3600 + 5 * 60,
            "totals": {
                "peers": len(self.rows),
                "online": sum(1 for r in rows if r["online"]),
                "rx_bytes": sum(r["received"] or 0 for r in rows),
                "tx_bytes": sum(r["sent"] or 0 for r in rows),
            },
        }

    async def peers(self) -> list[dict[str, Any]]:
        return [copy.deepcopy(row) for row in self.rows.values()]

    def _row(self, name: str) -> dict[str, Any]:
        row = self.rows.get(name)
        if row is None:
            raise AdminError(404, f"no peer {name!r}")
        return row

    async def peer(self, name: str) -> dict[str, Any]:
        return copy.deepcopy(self._row(name))

    async def add_peer(self, body: Mapping[str, Any]) -> NewPeer:
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise AdminError(400, f"expected a name; {PEER_NAME_ALLOWED}", "name")
        if name in self.rows:
            raise AdminError(409, f"a peer named {name!r} exists", "name")
        self.calls.append(("add", dict(body)))
        row = peer_row(name, len(self.rows), self.now, latest_handshake=None, online=False)
        self.rows[name] = row
        config = (
            "[Interface]\n"
            f"PrivateKey = {_key('private ' + name)}\n"
            f"Address = {row['addresses'][0]}\n"
            "DNS = 10.8.0.1\n\n"
            "[Peer]\n"
            f"PublicKey = {_key('server')}\n"
            "AllowedIPs = 0.0.0.0/0, ::/0\n"
            "Endpoint = vpn.example.net:51820\n"
        )
        return NewPeer(copy.deepcopy(row), config)

    async def update_peer(self, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        row = self._row(name)
        self.calls.append(("update", (name, dict(body))))
        if "enabled" in body:
            row["enabled"] = bool(body["enabled"])
            row["state"] = "active" if row["enabled"] else "disabled"
        return copy.deepcopy(row)

    async def reset_usage(self, name: str) -> dict[str, Any]:
        row = self._row(name)
        self.calls.append(("reset", name))
        row["usage_bytes"] = 0
        return copy.deepcopy(row)

    async def remove_peer(self, name: str) -> None:
        self._row(name)
        self.calls.append(("remove", name))
        del self.rows[name]

    async def traffic(self, name: str) -> dict[str, Any]:
        """An hour of 10 s samples: a download that comes and goes, a steady trickle up."""
        self._row(name)
        start = self.now - 3600
        samples = [
            {
                "time": start + 10 * i,
                "rx_bps": 800_000.0 + 300_000.0 * math.sin(i / 7),
                "tx_bps": max(0.0, 30e6 * math.sin(i / 40)) + 2e6,
            }
            for i in range(1, 361)
        ]
        return {"interval": 10, "samples": samples}
