"""`trivpn serve` with WireGuard enabled, against Debian's wireguard-go and wg, end to end.

client ns (wireguard-go, 10.8.0.2/32) ──198.51.100.0/24── server ns (trivpn serve, NAT)
──203.0.113.0/24── internet ns. The client routes everything into its wg interface; its peer
is the server at 198.51.100.1:51820 with allowed-ips 0.0.0.0/0.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from support import netlab, wglab

from trivpn.dataplane.data_thread import ENV_SWITCH as DATA_THREAD_SWITCH

pytestmark = [pytest.mark.root, pytest.mark.wireguard_go, pytest.mark.lab("tvw", clients=1)]

WG_PORT = wglab.WG_PORT
CLIENT_PORT = 51821
CLIENT_ADDRESS = "10.8.0.2"
TOYVPN_PORT = 8000
TOYVPN_SECRET = "lab-secret-1234"
HANDSHAKE_INIT_LEN = 148  # bytes of a handshake initiation on the wire

TOYVPN_TABLE = f"""
[toyvpn]
enabled = true
listen = "0.0.0.0:{TOYVPN_PORT}"
secret = "{TOYVPN_SECRET}"
pool = "10.8.0.128/25"
dns = ["192.0.2.53"]
routes = ["0.0.0.0/0"]
"""


@dataclass
class Setup:
    """The lab, the trivpn under test (``server``) and its wireguard-go clients at 10.8.0.2."""

    lab: netlab.Lab
    server: wglab.LabServer
    wg_client: Callable[..., wglab.WireGuardGo]

    @property
    def keys(self) -> wglab.ServerKeys:
        return self.server.keys

    def client(
        self, ns: netlab.Netns, *, listen_port: int | None = None, with_endpoint: bool = True
    ) -> wglab.WireGuardGo:
        """wireguard-go in ``ns`` with 10.8.0.2/32, everything routed to the server peer."""
        return self.wg_client(
            ns, CLIENT_ADDRESS, listen_port=listen_port, with_endpoint=with_endpoint
        )

    def serve(
        self, name: str, public_key: str, *, endpoint: str | None = None, toyvpn: bool = False
    ) -> netlab.Trivpn:
        """`trivpn serve` with the one peer ``name`` at 10.8.0.2 (and ToyVPN with ``toyvpn``)."""
        peer = wglab.peer_table(name, public_key, f"{CLIENT_ADDRESS}/32", endpoint=endpoint)
        extra = TOYVPN_TABLE if toyvpn else ""
        self.server.write_config(peer, wireguard={"under_load_rate": 500}, extra=extra)
        listening = f"wireguard: listening on 0.0.0.0:{WG_PORT}, public key {self.keys.public}"
        return self.server.start(listening)

    def serve_first_client(
        self,
        name: str,
        *,
        endpoint: str | None = None,
        listen_port: int | None = None,
        with_endpoint: bool = True,
    ) -> tuple[wglab.WireGuardGo, netlab.Trivpn]:
        """A client() in the lab's first client ns, then serve() with it as the peer ``name``."""
        wg = self.client(self.lab.clients[0], listen_port=listen_port, with_endpoint=with_endpoint)
        return wg, self.serve(name, wg.public_key, endpoint=endpoint)


@pytest.fixture
def setup(
    lab: netlab.Lab, server: wglab.LabServer, wg_client: Callable[..., wglab.WireGuardGo]
) -> Setup:
    return Setup(lab, server, wg_client)


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


def test_handshake_ping_and_tcp_through_nat(setup: Setup) -> None:
    lab, server_key = setup.lab, setup.keys
    client = lab.clients[0]
    wg, server = setup.serve_first_client("alice")

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


def test_server_initiates_toward_a_configured_endpoint(setup: Setup) -> None:
    lab, server_key = setup.lab, setup.keys
    client = lab.clients[0]
    endpoint = f"{client.client_ip}:{CLIENT_PORT}"  # type: ignore[attr-defined]
    # No endpoint on the client's side: it cannot initiate, only answer.
    wg, server = setup.serve_first_client(
        "bob", endpoint=endpoint, listen_port=CLIENT_PORT, with_endpoint=False
    )
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


def test_client_roams_to_a_new_port_during_a_transfer(setup: Setup) -> None:
    lab, server_key = setup.lab, setup.keys
    client = lab.clients[0]
    wg, server = setup.serve_first_client("carol", listen_port=CLIENT_PORT)
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


def test_unknown_key_gets_no_answer_and_known_peer_is_served(setup: Setup) -> None:
    lab, server_key = setup.lab, setup.keys
    known_ns, stranger_ns = lab.clients[0], lab.add_client("tvw")
    known = setup.client(known_ns)
    stranger = setup.client(stranger_ns)  # its key is not in the config
    server = setup.serve("dave", known.public_key)

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
def test_rekey_after_120_seconds_keeps_traffic_flowing(setup: Setup) -> None:
    lab, server_key = setup.lab, setup.keys
    client = lab.clients[0]
    wg, server = setup.serve_first_client("erin")

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


@pytest.mark.parametrize("data_thread", [False, True], ids=["on-trio", "data-thread"])
def test_toyvpn_and_wireguard_clients_at_once(
    setup: Setup,
    tmp_path: Path,
    processes: list[netlab.Trivpn],
    monkeypatch: pytest.MonkeyPatch,
    data_thread: bool,
) -> None:
    """Both protocols through one TUN, with the data path on its own thread (the default)
    and on trio (the opt-out, TRIVPN_DATA_THREAD=0; the server inherits the environment)."""
    monkeypatch.setenv(DATA_THREAD_SWITCH, "1" if data_thread else "0")
    lab, server_key = setup.lab, setup.keys
    toy_ns, wg_ns = lab.clients[0], lab.add_client("tvw")
    wg = setup.client(wg_ns)
    server = setup.serve("frank", wg.public_key, toyvpn=True)
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
    assert ("data path on its own thread" in server.log()) == data_thread
    assert ("data path on trio" in server.log()) != data_thread
