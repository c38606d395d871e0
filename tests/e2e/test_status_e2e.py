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
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import netlab
import pytest
import wglab
from prometheus_client.parser import text_string_to_metric_families

from trivpn import control

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(
        shutil.which("wireguard-go") is None or shutil.which("wg") is None,
        reason="wireguard-go and wg (Debian's wireguard-go, wireguard-tools) not installed",
    ),
]

WG_PORT = 51820
TOY_PORT = 8000
METRICS = "127.0.0.1:9586"
SECRET = "lab-secret-1234"
HANDSHAKE_WAIT = 40.0  # s: wireguard-go retries an unanswered handshake every 5 s

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


class Setup:
    def __init__(self, lab: netlab.Lab, tmp_path: Path) -> None:
        self.lab = lab
        self.tmp_path = tmp_path
        self.ifname = wglab.unique_ifname("tvst")
        self.private_key = wglab.wg_genkey()
        self.public_key = wglab.wg_pubkey(self.private_key)
        self.config = tmp_path / "trivpn.toml"
        self.procs: list[netlab.Trivpn] = []
        self.wg: wglab.WireGuardGo | None = None

    def write_config(self, alice_public_key: str) -> None:
        self.config.write_text(f"""
[interface]
name = "{self.ifname}"
address = ["10.8.0.1/24"]

[nat]
masquerade = true
egress = "auto"

[toyvpn]
enabled = true
listen = "0.0.0.0:{TOY_PORT}"
secret = "{SECRET}"
pool = "10.8.0.128/25"

[state]
dir = "state"  # beside this file: never the host's /var/lib/trivpn

[wireguard]
enabled = true
listen = "0.0.0.0:{WG_PORT}"
private_key = "{self.private_key}"

[[wireguard.peers]]
name = "alice"
public_key = "{alice_public_key}"
allowed_ips = ["10.8.0.2/32"]

[metrics]
listen = "{METRICS}"
""")
        os.chmod(self.config, 0o600)

    def trivpn(self, ns: netlab.Netns, args: list[str], log: str) -> netlab.Trivpn:
        proc = netlab.Trivpn(ns, args, self.tmp_path / log)
        self.procs.append(proc)
        return proc

    def status(self, *args: str) -> str:
        done = self.lab.server.run(
            sys.executable, "-m", "trivpn", "status", "-c", str(self.config), *args, timeout=20
        )
        return done.stdout

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of the metrics endpoint, parsed by prometheus_client's parser."""
        out = self.lab.server.run(sys.executable, "-c", SCRAPE, timeout=20).stdout
        content_type, _, text = out.partition("\n")
        assert content_type.startswith("text/plain; version=0.0.4")
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def send(self, client: netlab.Netns, port: int, payload: bytes) -> None:
        server_ip = client.server_ip  # type: ignore[attr-defined]
        client.run(sys.executable, "-c", SEND, server_ip, str(port), payload.hex())


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    with netlab.Lab("tvst", clients=2) as lab:
        s = Setup(lab, tmp_path)
        try:
            yield s
        finally:
            if s.wg is not None:
                s.wg.stop()
            for proc in reversed(s.procs):
                proc.kill()
            control.socket_path(s.ifname).unlink(missing_ok=True)  # only if a kill left it


def ping(ns: netlab.Netns, count: int = 1) -> bool:
    args = ("ping", "-c", str(count), "-i", "0.2", "-W", "1", netlab.INTERNET_HOST)
    return ns.run(*args, check=False).returncode == 0


def drop(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], protocol: str, reason: str
) -> float:
    key = ("trivpn_packets_dropped_total", (("protocol", protocol), ("reason", reason)))
    return samples[key]


def test_status_and_metrics_of_a_running_server(setup: Setup) -> None:
    lab = setup.lab
    alice_ns, toy_ns = lab.clients
    wg = setup.wg = wglab.WireGuardGo(alice_ns, log_path=setup.tmp_path / "wireguard-go.log")
    wg.add_peer(
        setup.public_key,
        allowed_ips=("0.0.0.0/0",),
        endpoint=f"{alice_ns.server_ip}:{WG_PORT}",  # type: ignore[attr-defined]
    )
    wg.up("10.8.0.2/32", routes=("default",))
    setup.write_config(wg.public_key)
    server = setup.trivpn(lab.server, ["serve", "-c", str(setup.config)], "server.log")
    server.wait_log("trivpn serving")
    assert f"metrics: serving http://{METRICS}/metrics" in server.log()
    toy_tun = wglab.unique_ifname("toy")
    client = setup.trivpn(
        toy_ns,
        ["toyvpn-connect", f"{toy_ns.server_ip}:{TOY_PORT}", "--secret", SECRET, "--tun", toy_tun],  # type: ignore[attr-defined]
        "toyvpn.log",
    )
    client.wait_log("connected to")
    netlab.wait_for(lambda: ping(alice_ns), HANDSHAKE_WAIT, what="alice online")
    assert ping(toy_ns, 2)

    # trivpn status: both clients, a recent handshake, transfer
    text = setup.status()
    assert f"interface: {setup.ifname}" in text
    assert "nat: masquerade via inet0" in text
    alice = next(line for line in text.splitlines() if line.startswith("alice"))
    assert f"{alice_ns.client_ip}:" in alice  # type: ignore[attr-defined]
    assert re.search(r"  (now|\d+ seconds? ago)  ", alice), alice  # a recent handshake
    session = next(line for line in text.splitlines() if line.startswith("10.8.0.129"))
    assert f"{toy_ns.client_ip}:" in session  # type: ignore[attr-defined]
    doc = json.loads(setup.status("--json"))
    (peer,) = doc["wireguard"]["peers"]
    assert time.time() - 60 < peer["latest_handshake"] <= time.time() + 1
    assert peer["rx_bytes"] > 0 and peer["tx_bytes"] > 0
    (toy,) = doc["toyvpn"]["sessions"]
    assert toy["rx_packets"] >= 2 and toy["tx_packets"] >= 2
    assert doc["toyvpn"]["pool"]["in_use"] == 1
    assert setup.private_key not in json.dumps(doc) and SECRET not in json.dumps(doc)

    # metrics: counters rise with traffic
    alice_labels = (("name", "alice"), ("public_key", wg.public_key))
    toy_labels = (("address", "10.8.0.129"),)
    before = setup.scrape()
    assert before[("trivpn_toyvpn_sessions", ())] == 1
    assert before[("trivpn_toyvpn_pool_addresses_in_use", ())] == 1
    handshake = before[("trivpn_wireguard_peer_latest_handshake_seconds", alice_labels)]
    assert time.time() - 60 < handshake <= time.time() + 1
    assert ping(alice_ns, 3) and ping(toy_ns, 3)
    after = setup.scrape()
    for name, labels in [
        ("trivpn_wireguard_peer_receive_bytes_total", alice_labels),
        ("trivpn_wireguard_peer_transmit_bytes_total", alice_labels),
        ("trivpn_toyvpn_session_receive_packets_total", toy_labels),
        ("trivpn_toyvpn_session_transmit_bytes_total", toy_labels),
    ]:
        assert after[name, labels] > before[name, labels] > 0, name

    # bad datagrams raise their drop counters
    setup.send(alice_ns, WG_PORT, b"\x01\x00\x00\x00" + os.urandom(144))  # an initiation: bad mac1
    setup.send(alice_ns, WG_PORT, b"\x01\x00\x00\x00" + bytes(10))  # too short for its type
    setup.send(toy_ns, TOY_PORT, b"")  # an empty ToyVPN datagram
    setup.send(alice_ns, TOY_PORT, b"\x45" + bytes(19))  # data from no session
    netlab.wait_for(
        lambda: drop(setup.scrape(), "toyvpn", "unknown_endpoint") > 0, 10, what="drops counted"
    )
    dropped = setup.scrape()
    assert drop(dropped, "wireguard", "bad_mac1") == drop(before, "wireguard", "bad_mac1") + 1
    assert drop(dropped, "wireguard", "malformed") == drop(before, "wireguard", "malformed") + 1
    assert drop(dropped, "toyvpn", "malformed") == drop(before, "toyvpn", "malformed") + 1

    # the control socket goes with the server
    assert server.stop(signal.SIGTERM) == 0, server.log()
    assert not control.socket_path(setup.ifname).exists()
