"""A server with a second address answers from the address each client dialed (sticky source).

client ns (198.51.100.2) ──198.51.100.0/24── server ns (wan0: 198.51.100.1, and the secondary
198.51.100.11) ──203.0.113.0/24── internet ns. The clients dial the secondary address; the
kernel's choice of source toward them is the primary one, so a server that let the kernel
choose would answer from 198.51.100.1: wireguard-go would roam its endpoint there, and a
ToyVPN client's connected socket would drop every answer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from support import netlab, wglab

pytestmark = [pytest.mark.root, pytest.mark.wireguard_go, pytest.mark.lab("tvk", clients=1)]

SECONDARY = "198.51.100.11"
CLIENT_ADDRESS = "10.8.0.2"
TOYVPN_PORT = 8000
TOYVPN_SECRET = "lab-secret-1234"
TOYVPN_TABLE = f"""
[toyvpn]
enabled = true
listen = "0.0.0.0:{TOYVPN_PORT}"
secret = "{TOYVPN_SECRET}"
pool = "10.8.0.128/25"
routes = ["0.0.0.0/0"]
"""


def add_secondary(lab: netlab.Lab) -> None:
    lab.server.run("ip", "addr", "add", f"{SECONDARY}/24", "dev", "wan0")


def tunnel_address(client: netlab.Netns) -> str:
    out = json.loads(client.run("ip", "-j", "-4", "addr", "show", "dev", "toy0").stdout)
    return str(out[0]["addr_info"][0]["local"])


def ping(ns: netlab.Netns, dst: str, count: int = 3) -> None:
    done = ns.run("ping", "-c", str(count), "-i", "0.2", "-W", "3", dst, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_wireguard_go_keeps_the_endpoint_it_dialed(
    lab: netlab.Lab,
    server: wglab.LabServer,
    wireguard_go: Callable[..., wglab.WireGuardGo],
) -> None:
    add_secondary(lab)
    client = lab.clients[0]
    wg = wireguard_go(client)
    dialed = f"{SECONDARY}:{wglab.WG_PORT}"
    wg.add_peer(server.keys.public, endpoint=dialed)
    wg.up(f"{CLIENT_ADDRESS}/32", routes=("default",))
    server.write_config(wglab.peer_table("alice", wg.public_key, f"{CLIENT_ADDRESS}/32"))
    trivpn = server.start()

    ping(client, netlab.INTERNET_HOST)  # client → internet, through the tunnel
    ping(lab.server, CLIENT_ADDRESS)  # server → client
    status = wg.peer(server.keys.public)
    assert status.latest_handshake > 0
    assert status.endpoint == dialed

    # The address goes away: the server's next reply fails from it and leaves from the
    # kernel's choice instead, and the client roams there.
    lab.server.run("ip", "addr", "del", f"{SECONDARY}/24", "dev", "wan0")
    ping(lab.server, CLIENT_ADDRESS)
    assert wg.peer(server.keys.public).endpoint == f"{netlab.SERVER_WAN}:{wglab.WG_PORT}"
    ping(client, netlab.INTERNET_HOST)
    assert trivpn.stop() == 0, trivpn.log()


def test_a_toyvpn_client_dialing_the_secondary_address_connects(
    lab: netlab.Lab, server: wglab.LabServer, tmp_path: Path
) -> None:
    add_secondary(lab)
    server.write_config(extra=TOYVPN_TABLE)
    trivpn = server.start()
    client = lab.clients[0]
    connect = netlab.Trivpn(
        client,
        [
            "toyvpn-connect",
            f"{SECONDARY}:{TOYVPN_PORT}",
            "--secret",
            TOYVPN_SECRET,
            "--tun",
            "toy0",
        ],
        tmp_path / "client.log",
    )
    try:
        connect.wait_log("connected to")
        ping(client, netlab.INTERNET_HOST)
        ping(lab.server, tunnel_address(client))
    finally:
        connect.stop()
    assert trivpn.stop() == 0, trivpn.log()
