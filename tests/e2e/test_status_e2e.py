"""`trivpn status` and the metrics endpoint of a running server, end to end.

client ns A (wireguard-go 10.8.0.2) and client ns B (trivpn toyvpn-connect) ── server ns
(trivpn serve, NAT, metrics on its own 127.0.0.1) ── internet ns. The control socket
directory /run/trivpn is one path for every namespace: the server's interface gets a name no
parallel run uses.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import netlab, wglab

from trivpn.control import status_socket

pytestmark = [pytest.mark.root, pytest.mark.wireguard_go, pytest.mark.lab("tvst", clients=2)]

WG_PORT = wglab.WG_PORT
TOY_PORT = 8000
METRICS = "127.0.0.1:9586"
SECRET = "lab-secret-1234"

TOYVPN_AND_METRICS = f"""
[toyvpn]
enabled = true
listen = "0.0.0.0:{TOY_PORT}"
secret = "{SECRET}"
pool = "10.8.0.128/25"

[metrics]
listen = "{METRICS}"

[web]
listen = "127.0.0.1:51821"
"""
SCRAPE = f"""
import sys, urllib.request
with urllib.request.urlopen("http://{METRICS}/metrics", timeout=10) as r:
    sys.stdout.write(r.headers["Content-Type"] + "\\n" + r.read().decode())
"""
SEND = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.sendto(bytes.fromhex(sys.argv[3]), (sys.argv[1], int(sys.argv[2])))
"""


def scrape(lab: netlab.Lab) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the metrics endpoint, parsed by prometheus_client's parser."""
    out = lab.server.run(sys.executable, "-c", SCRAPE, timeout=20).stdout
    content_type, _, text = out.partition("\n")
    assert content_type.startswith("text/plain; version=0.0.4")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def send(client: netlab.Netns, port: int, payload: bytes) -> None:
    server_ip = client.server_ip  # type: ignore[attr-defined]
    client.run(sys.executable, "-c", SEND, server_ip, str(port), payload.hex())


def drop(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], protocol: str, reason: str
) -> float:
    key = ("trivpn_packets_dropped_total", (("protocol", protocol), ("reason", reason)))
    return samples[key]


def test_status_and_metrics_of_a_running_server(
    lab: netlab.Lab,
    server: wglab.LabServer,
    wg_client: Callable[..., wglab.WireGuardGo],
    processes: list[netlab.Trivpn],
    tmp_path: Path,
) -> None:
    alice_ns, toy_ns = lab.clients
    wg = wg_client(alice_ns, "10.8.0.2")
    server.write_config(
        wglab.peer_table("alice", wg.public_key, "10.8.0.2/32"), extra=TOYVPN_AND_METRICS
    )
    proc = server.start()
    assert f"metrics: serving http://{METRICS}/metrics" in proc.log()
    assert "web: serving http://127.0.0.1:51821/" in proc.log()
    toy_tun = wglab.unique_ifname("toy")
    client = netlab.Trivpn(
        toy_ns,
        ["toyvpn-connect", f"{toy_ns.server_ip}:{TOY_PORT}", "--secret", SECRET, "--tun", toy_tun],  # type: ignore[attr-defined]
        tmp_path / "toyvpn.log",
    )
    processes.append(client)
    client.wait_log("connected to")
    wglab.wait_online(alice_ns)
    assert wglab.reaches_internet(toy_ns, 2)

    # trivpn status: both clients, a recent handshake, transfer
    text = server.trivpn("status", timeout=20)
    assert f"interface: {server.ifname}" in text
    assert "nat: masquerade via inet0" in text
    alice = next(line for line in text.splitlines() if line.startswith("alice"))
    assert f"{alice_ns.client_ip}:" in alice  # type: ignore[attr-defined]
    assert re.search(r"  (now|\d+ seconds? ago)  ", alice), alice  # a recent handshake
    session = next(line for line in text.splitlines() if line.startswith("10.8.0.129"))
    assert f"{toy_ns.client_ip}:" in session  # type: ignore[attr-defined]
    doc = json.loads(server.trivpn("status", "--json", timeout=20))
    (peer,) = doc["wireguard"]["peers"]
    assert time.time() - 60 < peer["latest_handshake"] <= time.time() + 1
    assert peer["rx_bytes"] > 0 and peer["tx_bytes"] > 0
    (toy,) = doc["toyvpn"]["sessions"]
    assert toy["rx_packets"] >= 2 and toy["tx_packets"] >= 2
    assert doc["toyvpn"]["pool"]["in_use"] == 1
    assert server.keys.private not in json.dumps(doc) and SECRET not in json.dumps(doc)

    # metrics: counters rise with traffic
    alice_labels = (("name", "alice"), ("public_key", wg.public_key))
    toy_labels = (("address", "10.8.0.129"),)
    before = scrape(lab)
    assert before[("trivpn_toyvpn_sessions", ())] == 1
    assert before[("trivpn_toyvpn_pool_addresses_in_use", ())] == 1
    handshake = before[("trivpn_wireguard_peer_latest_handshake_seconds", alice_labels)]
    assert time.time() - 60 < handshake <= time.time() + 1
    assert wglab.reaches_internet(alice_ns, 3) and wglab.reaches_internet(toy_ns, 3)
    after = scrape(lab)
    for name, labels in [
        ("trivpn_wireguard_peer_receive_bytes_total", alice_labels),
        ("trivpn_wireguard_peer_transmit_bytes_total", alice_labels),
        ("trivpn_toyvpn_session_receive_packets_total", toy_labels),
        ("trivpn_toyvpn_session_transmit_bytes_total", toy_labels),
    ]:
        assert after[name, labels] > before[name, labels] > 0, name

    # bad datagrams raise their drop counters
    send(alice_ns, WG_PORT, b"\x01\x00\x00\x00" + os.urandom(144))  # an initiation: bad mac1
    send(alice_ns, WG_PORT, b"\x01\x00\x00\x00" + bytes(10))  # too short for its type
    send(toy_ns, TOY_PORT, b"")  # an empty ToyVPN datagram
    send(alice_ns, TOY_PORT, b"\x45" + bytes(19))  # data from no session
    netlab.wait_for(
        lambda: drop(scrape(lab), "toyvpn", "unknown_endpoint") > 0, 10, what="drops counted"
    )
    dropped = scrape(lab)
    assert drop(dropped, "wireguard", "bad_mac1") == drop(before, "wireguard", "bad_mac1") + 1
    assert drop(dropped, "wireguard", "malformed") == drop(before, "wireguard", "malformed") + 1
    assert drop(dropped, "toyvpn", "malformed") == drop(before, "toyvpn", "malformed") + 1

    # the control socket goes with the server
    assert proc.stop(signal.SIGTERM) == 0, proc.log()
    assert not status_socket.socket_path(server.ifname).exists()
