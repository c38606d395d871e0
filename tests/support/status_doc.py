"""A sample status document (for the renderers and metrics) and a fake status source: what
the status document reads of a running server."""

from __future__ import annotations

import ipaddress
import os
import time
from types import SimpleNamespace
from typing import Any

from trivpn.config import parse_config
from trivpn.proto import toyvpn
from trivpn.proto.policy import PeerState, Policy
from trivpn.proto.usage import UsageRecord
from trivpn.proto.wireguard import Device, PeerConfig, encode_key, keys

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
                    "state": "active",
                    "enabled": True,
                    "expires": "2027-02-01T00:00:00Z",
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
                    "state": "disabled",
                    "enabled": False,
                    "expires": None,
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


SERVER_KEY = keys.parse_key(keys.genkey(lambda n: b"\x01" * n))
PSK = b"\x05" * 32
ALICE = keys.parse_key(keys.pubkey(keys.genkey(lambda n: b"\x02" * n)))
SECRET = b"lab-secret-1234"
CONFIG = """
[interface]
name = "tvc0"
address = ["10.8.0.1/24"]
[nat]
egress = "inet0"
[toyvpn]
enabled = true
secret = "lab-secret-1234"
[wireguard]
enabled = true
private_key = "{server}"
[[wireguard.peers]]
name = "alice"
public_key = "{alice}"
allowed_ips = ["10.8.0.2/32"]
"""


def fake_server() -> Any:
    """What status_document reads of a Server: config, counters, the two fronts."""
    cfg = parse_config(CONFIG.format(alice=encode_key(ALICE), server=encode_key(SERVER_KEY)))
    device = Device(SERVER_KEY, rng=os.urandom, wallclock=time.time)
    peer = device.add_peer(
        PeerConfig(
            public_key=ALICE,
            preshared_key=PSK,
            allowed_ips=(ipaddress.ip_network("10.8.0.2/32"),),
            name="alice",
        )
    )
    peer.endpoint = ("198.51.100.2", 40000)
    peer.rx_bytes, peer.tx_bytes, peer.last_handshake_time = 1000, 2000, 1_700_000_000.0
    peer.rx_packets, peer.tx_packets, peer.handshakes = 10, 20, 2
    device.counters["bad_mac1"] += 3
    front = SimpleNamespace(
        device=device,
        listen_port=51820,
        public_key=encode_key(device.public_key),
        peer_state=lambda key: (PeerState.DISABLED, Policy(enabled=False)),
        peer_usage=lambda key: UsageRecord(lifetime_rx=5000, lifetime_tx=7000, total=12000),
    )
    toy = toyvpn.ToyVpnServer(secret=SECRET, pool=cfg.toyvpn.pool, mtu=1420)
    hs = toy.receive(b"\x00" + SECRET, ("2001:db8::7", 5555), 10.0)
    assert isinstance(hs, toyvpn.Handshake)
    assert toy.receive(b"\x45" + bytes(11) + b"\x0a\x08\x00\x81" + bytes(4), hs.session.addr, 12.0)
    return SimpleNamespace(
        cfg=cfg,
        counters={"tun_no_route": 2},
        egress="inet0",
        wireguard=front,
        toyvpn=toy,
        fleet=None,  # not a fleet's gateway
    )
