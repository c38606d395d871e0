"""`trivpn serve` with WireGuard enabled, against Debian's wireguard-go and wg, end to end.

client ns (wireguard-go, 10.8.0.2/32) ──198.51.100.0/24── server ns (trivpn serve, NAT)
──203.0.113.0/24── internet ns. The client routes everything into its wg interface; its peer
is the server at 198.51.100.1:51820 with allowed-ips 0.0.0.0/0.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import netlab
import pytest
import wglab

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(
        shutil.which("wireguard-go") is None or shutil.which("wg") is None,
        reason="wireguard-go and wg (Debian's wireguard-go, wireguard-tools) not installed",
    ),
]

WG_PORT = 51820
CLIENT_PORT = 51821
CLIENT_ADDRESS = "10.8.0.2"
TOYVPN_PORT = 8000
TOYVPN_SECRET = "lab-secret-1234"
HANDSHAKE_INIT_LEN = 148  # bytes of a handshake initiation on the wire


class Keys:
    """The server's key pair, made by `wg genkey` (the config carries it inline)."""

    def __init__(self) -> None:
        self.private = wglab.wg_genkey()
        self.public = wglab.wg_pubkey(self.private)


def peer_toml(name: str, public_key: str, address: str, endpoint: str | None = None) -> str:
    text = f"""
[[wireguard.peers]]
name = "{name}"
public_key = "{public_key}"
allowed_ips = ["{address}/32"]
"""
    return text + (f'endpoint = "{endpoint}"\n' if endpoint else "")


# The UAPI socket (/var/run/wireguard/<name>.sock) is shared by every namespace: the TUN's
# name must not collide with a parallel run's.
TUN_NAME = f"tvwg{os.getpid() % 100000}"


def config_text(server_key: Keys, peers: str, toyvpn: bool = False) -> str:
    text = f"""
[interface]
name = "{TUN_NAME}"
address = ["10.8.0.1/24"]
mtu = 1420

[nat]
masquerade = true
egress = "auto"

[state]
dir = "state"  # beside this file: never the host's /var/lib/trivpn

[wireguard]
enabled = true
listen = "0.0.0.0:{WG_PORT}"
private_key = "{server_key.private}"
under_load_rate = 500
"""
    if toyvpn:
        text += f"""
[toyvpn]
enabled = true
listen = "0.0.0.0:{TOYVPN_PORT}"
secret = "{TOYVPN_SECRET}"
pool = "10.8.0.128/25"
dns = ["192.0.2.53"]
routes = ["0.0.0.0/0"]
"""
    return text + peers


@pytest.fixture
def lab() -> Iterator[netlab.Lab]:
    with netlab.Lab("tvw", clients=1) as lab:
        yield lab


@pytest.fixture
def server_key() -> Keys:
    return Keys()


@pytest.fixture
def processes() -> Iterator[list[netlab.Trivpn]]:
    """trivpn processes a test started; killed at teardown if the test did not stop them."""
    started: list[netlab.Trivpn] = []
    yield started
    for proc in started:
        proc.kill()


@pytest.fixture
def serve(
    tmp_path: Path, server_key: Keys, processes: list[netlab.Trivpn], lab: netlab.Lab
) -> Callable[..., netlab.Trivpn]:
    def start(peers: str, toyvpn: bool = False) -> netlab.Trivpn:
        path = tmp_path / "trivpn.toml"
        path.write_text(config_text(server_key, peers, toyvpn))
        server = netlab.Trivpn(lab.server, ["serve", "-c", str(path)], tmp_path / "server.log")
        processes.append(server)
        listening = f"wireguard: listening on 0.0.0.0:{WG_PORT}, public key {server_key.public}"
        server.wait_log(listening)
        server.wait_log("trivpn serving")
        return server

    return start


@pytest.fixture
def wg_peers(tmp_path: Path) -> Iterator[Callable[..., wglab.WireGuardGo]]:
    """Start wireguard-go interfaces; all stopped (socket files removed) before the lab goes."""
    started: list[wglab.WireGuardGo] = []

    def start(ns: netlab.Netns, listen_port: int | None = None) -> wglab.WireGuardGo:
        wg = wglab.WireGuardGo(
            ns, listen_port=listen_port, log_path=tmp_path / f"wireguard-go-{len(started)}.log"
        )
        started.append(wg)
        return wg

    yield start
    for wg in started:
        wg.stop()


def wg_client(
    start: Callable[..., wglab.WireGuardGo],
    client: netlab.Netns,
    server_key: Keys,
    *,
    listen_port: int | None = None,
    with_endpoint: bool = True,
) -> wglab.WireGuardGo:
    """wireguard-go in ``client`` with 10.8.0.2/32, everything routed to the server peer."""
    wg = start(client, listen_port)
    server_ip = client.server_ip  # type: ignore[attr-defined]
    endpoint = f"{server_ip}:{WG_PORT}" if with_endpoint else None
    wg.add_peer(server_key.public, allowed_ips=("0.0.0.0/0",), endpoint=endpoint)
    # The server's UDP endpoint is on-link through eth0, so a default route into the tunnel
    # does not swallow the tunnel's own datagrams.
    wg.up(f"{CLIENT_ADDRESS}/32", routes=("default",))
    return wg


def ping(ns: netlab.Netns, dst: str, count: int = 3) -> None:
    done = ns.run("ping", "-c", str(count), "-i", "0.2", "-W", "3", dst, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def handshake_times(log: str, name: str) -> list[datetime]:
    """When the server logged "peer NAME handshake completed" (from the log's timestamps)."""
    stamp = r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) "
    pattern = stamp + rf".*wireguard: peer {re.escape(name)} handshake completed\b"
    return [
        datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f")
        for m in re.finditer(pattern, log, re.MULTILINE)
    ]


def test_handshake_ping_and_tcp_through_nat(
    lab: netlab.Lab,
    serve: Callable[..., netlab.Trivpn],
    wg_peers: Callable[..., wglab.WireGuardGo],
    server_key: Keys,
) -> None:
    client = lab.clients[0]
    wg = wg_client(wg_peers, client, server_key)
    server = serve(peer_toml("alice", wg.public_key, CLIENT_ADDRESS))

    ping(client, netlab.INTERNET_HOST)
    status = wg.peer(server_key.public)
    assert status.latest_handshake > 0
    assert status.endpoint == f"{netlab.SERVER_WAN}:{WG_PORT}"
    server.wait_log("wireguard: peer alice handshake completed")
    # The internet host has no route to 10.8.0.0/24: the replies come back through the
    # masquerade, which shows it the server's egress address.
    nbytes = 4 << 20
    assert netlab.tcp_transfer(lab, client, nbytes) == netlab.SERVER_EGRESS
    assert wg.peer(server_key.public).transfer_tx > nbytes

    assert server.stop() == 0, server.log()
    log = server.log()
    assert server_key.private not in log
    assert "wireguard: peer alice endpoint changed from none to 198.51.100.2:" in log


def test_server_initiates_toward_a_configured_endpoint(
    lab: netlab.Lab,
    serve: Callable[..., netlab.Trivpn],
    wg_peers: Callable[..., wglab.WireGuardGo],
    server_key: Keys,
) -> None:
    client = lab.clients[0]
    # No endpoint on the client's side: it cannot initiate, only answer.
    wg = wg_client(wg_peers, client, server_key, listen_port=CLIENT_PORT, with_endpoint=False)
    endpoint = f"{client.client_ip}:{CLIENT_PORT}"  # type: ignore[attr-defined]
    server = serve(peer_toml("bob", wg.public_key, CLIENT_ADDRESS, endpoint=endpoint))
    before = wg.peer(server_key.public)
    assert (before.latest_handshake, before.transfer_tx, before.endpoint) == (0, 0, None)

    # The server has a packet for 10.8.0.2 and no session: it initiates, then delivers it.
    ping(lab.server, CLIENT_ADDRESS)
    after = wg.peer(server_key.public)
    assert after.latest_handshake > 0
    assert after.endpoint == f"{client.server_ip}:{WG_PORT}"  # type: ignore[attr-defined]
    server.wait_log("wireguard: peer bob handshake completed")
    assert server.stop() == 0, server.log()


PACED_SEND = r"""
import socket, sys, time
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
total, sent, chunk = int(sys.argv[3]), 0, b"x" * 65536
while sent < total:
    n = min(len(chunk), total - sent)
    c.sendall(chunk[:n]); sent += n
    time.sleep(0.02)  # paced, so the transfer is still running when the client roams
c.shutdown(socket.SHUT_WR)
print(c.recv(100).decode())
"""


def test_client_roams_to_a_new_port_during_a_transfer(
    lab: netlab.Lab,
    serve: Callable[..., netlab.Trivpn],
    wg_peers: Callable[..., wglab.WireGuardGo],
    server_key: Keys,
) -> None:
    client = lab.clients[0]
    wg = wg_client(wg_peers, client, server_key, listen_port=CLIENT_PORT)
    server = serve(peer_toml("carol", wg.public_key, CLIENT_ADDRESS))
    ping(client, netlab.INTERNET_HOST, count=1)

    port, nbytes = 5003, 8 << 20
    sink = lab.internet.popen(
        [sys.executable, "-c", netlab.TCP_SINK, str(port)], stdout=subprocess.PIPE
    )
    procs = [sink]
    try:
        assert sink.stdout is not None and sink.stdout.readline().strip() == "listening"
        sender = client.popen(
            [sys.executable, "-c", PACED_SEND, netlab.INTERNET_HOST, str(port), str(nbytes)],
            stdout=subprocess.PIPE,
        )
        procs.append(sender)
        netlab.wait_for(
            lambda: wg.peer(server_key.public).transfer_tx > 1 << 20, 30, what="1 MB sent"
        )
        wg.set_listen_port(CLIENT_PORT + 1)
        assert wg.peer(server_key.public).transfer_tx < nbytes  # roamed mid-transfer
        out, _ = sender.communicate(timeout=60)
        assert out.strip() == str(nbytes)
        assert sink.stdout.readline().split() == ["PEER", netlab.SERVER_EGRESS, str(nbytes)]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    client_ip = client.client_ip  # type: ignore[attr-defined]
    old, new = (f"{client_ip}:{p}" for p in (CLIENT_PORT, CLIENT_PORT + 1))
    server.wait_log(f"wireguard: peer carol endpoint changed from {old} to {new}")
    ping(client, netlab.INTERNET_HOST, count=2)
    assert server.stop() == 0, server.log()


def test_unknown_key_gets_no_answer_and_known_peer_is_served(
    lab: netlab.Lab,
    serve: Callable[..., netlab.Trivpn],
    wg_peers: Callable[..., wglab.WireGuardGo],
    server_key: Keys,
) -> None:
    known_ns, stranger_ns = lab.clients[0], lab.add_client("tvw")
    known = wg_client(wg_peers, known_ns, server_key)
    stranger = wg_client(wg_peers, stranger_ns, server_key)  # its key is not in the config
    server = serve(peer_toml("dave", known.public_key, CLIENT_ADDRESS))

    stranger_ns.run("ping", "-c", "1", "-W", "1", netlab.INTERNET_HOST, check=False)
    # wireguard-go retries its initiation every 5 s; wait for a second try, then nothing heard.
    netlab.wait_for(
        lambda: stranger.peer(server_key.public).transfer_tx >= 2 * HANDSHAKE_INIT_LEN,
        20,
        what="the stranger's second handshake initiation",
    )
    status = stranger.peer(server_key.public)
    assert (status.latest_handshake, status.transfer_rx) == (0, 0)

    ping(known_ns, netlab.INTERNET_HOST)
    assert netlab.tcp_transfer(lab, known_ns, 1 << 20) == netlab.SERVER_EGRESS
    assert known.peer(server_key.public).latest_handshake > 0
    assert stranger.peer(server_key.public).transfer_rx == 0
    assert server.stop() == 0, server.log()
    log = server.log()
    assert len(handshake_times(log, "dave")) == log.count("handshake completed") == 1
    dropped = re.search(r"wireguard_unknown_peer=(\d+)", log)  # counted, not answered
    assert dropped and int(dropped.group(1)) >= 2, log


@pytest.mark.slow
def test_rekey_after_120_seconds_keeps_traffic_flowing(
    lab: netlab.Lab,
    serve: Callable[..., netlab.Trivpn],
    wg_peers: Callable[..., wglab.WireGuardGo],
    server_key: Keys,
) -> None:
    client = lab.clients[0]
    wg = wg_client(wg_peers, client, server_key)
    server = serve(peer_toml("erin", wg.public_key, CLIENT_ADDRESS))

    count = 280  # one every 0.5 s: 140 s, across the initiator's rekey at 120 s
    started = time.time()
    flow = client.run(
        "ping", "-c", str(count), "-i", "0.5", "-W", "2", netlab.INTERNET_HOST,
        check=False, timeout=count * 0.5 + 30,
    )  # fmt: skip
    stats = re.search(r"(\d+) packets transmitted, (\d+) received", flow.stdout)
    assert stats, flow.stdout + flow.stderr
    sent, received = int(stats.group(1)), int(stats.group(2))
    assert sent == count and received >= count * 0.98, flow.stdout

    assert server.stop() == 0, server.log()
    times = handshake_times(server.log(), "erin")
    assert len(times) >= 2, server.log()
    # 120 s after the first session began; a second of slack for the two log timestamps.
    assert (times[1] - times[0]).total_seconds() >= 119
    # wireguard-go saw the new session too (its clock is the wall clock, in whole seconds)
    assert wg.peer(server_key.public).latest_handshake >= int(started) + 119


def test_toyvpn_and_wireguard_clients_at_once(
    lab: netlab.Lab,
    serve: Callable[..., netlab.Trivpn],
    wg_peers: Callable[..., wglab.WireGuardGo],
    server_key: Keys,
    tmp_path: Path,
    processes: list[netlab.Trivpn],
) -> None:
    toy_ns, wg_ns = lab.clients[0], lab.add_client("tvw")
    wg = wg_client(wg_peers, wg_ns, server_key)
    server = serve(peer_toml("frank", wg.public_key, CLIENT_ADDRESS), toyvpn=True)
    toy = netlab.Trivpn(
        toy_ns,
        ["toyvpn-connect", f"{netlab.SERVER_WAN}:{TOYVPN_PORT}", "--secret", TOYVPN_SECRET,
         "--tun", "toy0"],
        tmp_path / "toyvpn-client.log",
    )  # fmt: skip
    processes.append(toy)
    toy.wait_log("connected to")

    assert netlab.tcp_transfer(lab, toy_ns, 1 << 20, 5001) == netlab.SERVER_EGRESS
    assert netlab.tcp_transfer(lab, wg_ns, 1 << 20, 5002) == netlab.SERVER_EGRESS
    # and each through the server's TUN to the other
    ping(wg_ns, "10.8.0.129")
    assert wg.peer(server_key.public).latest_handshake > 0
    toy.stop()
    assert server.stop() == 0, server.log()
    assert "wireguard: peer frank handshake completed" in server.log()
