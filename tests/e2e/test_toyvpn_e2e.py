"""`trivpn serve` and `trivpn toyvpn-connect` end to end in namespaces the tests build.

client ns ──198.51.100.0/24── server ns (trivpn serve, NAT) ──203.0.113.0/24── internet ns
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import netlab

pytestmark = pytest.mark.root

SECRET = "lab-secret-1234"
PORT = 8000

CONFIG = f"""
[interface]
name = "tvpn0"
address = ["10.8.0.1/24"]
mtu = 1400

[nat]
masquerade = true
egress = "auto"

[toyvpn]
enabled = true
listen = "0.0.0.0:{PORT}"
secret = "{SECRET}"
pool = "10.8.0.128/25"
dns = ["192.0.2.53"]
routes = ["0.0.0.0/0"]
keepalive = 5
idle_timeout = 20
"""


@pytest.fixture
def lab() -> Iterator[netlab.Lab]:
    with netlab.Lab("tvt", clients=2) as lab:
        yield lab


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "trivpn.toml"
    path.write_text(CONFIG)
    return path


def start_server(lab: netlab.Lab, config: Path, tmp_path: Path, n: int = 0) -> netlab.Trivpn:
    server = netlab.Trivpn(lab.server, ["serve", "-c", str(config)], tmp_path / f"server{n}.log")
    server.wait_log("trivpn serving")
    return server


def connect(client: netlab.Netns, tmp_path: Path) -> netlab.Trivpn:
    server_ip = client.server_ip  # type: ignore[attr-defined]
    proc = netlab.Trivpn(
        client,
        ["toyvpn-connect", f"{server_ip}:{PORT}", "--secret", SECRET, "--tun", "toy0"],
        tmp_path / f"client-{client.name}.log",
    )
    proc.wait_log("connected to")
    return proc


def tunnel_address(client: netlab.Netns) -> str:
    out = json.loads(client.run("ip", "-j", "-4", "addr", "show", "dev", "toy0").stdout)
    return str(out[0]["addr_info"][0]["local"])


def nft_tables(ns: netlab.Netns) -> list[str]:
    out = json.loads(ns.run("nft", "-j", "list", "tables").stdout)
    return [item["table"]["name"] for item in out["nftables"] if "table" in item]


def forwarding(ns: netlab.Netns) -> str:
    return ns.run("sysctl", "-n", "net.ipv4.ip_forward").stdout.strip()


def test_client_reaches_internet_through_tunnel_and_nat(
    lab: netlab.Lab, config: Path, tmp_path: Path
) -> None:
    assert forwarding(lab.server) == "0"
    server = start_server(lab, config, tmp_path)
    try:
        assert nft_tables(lab.server) == ["trivpn"]
        assert forwarding(lab.server) == "1"
        client = lab.clients[0]
        conn = connect(client, tmp_path)
        assert tunnel_address(client) == "10.8.0.129"
        ping = client.run(
            "ping", "-c", "3", "-i", "0.2", "-W", "2", netlab.INTERNET_HOST, check=False
        )
        assert ping.returncode == 0, ping.stdout + ping.stderr
        # The internet host has no route to 10.8.0.0/24: only the masquerade makes replies work,
        # and it sees the server's egress address as the source.
        assert netlab.tcp_transfer(lab, client, 4 << 20) == netlab.SERVER_EGRESS
        conn.stop()
    finally:
        code = server.stop(signal.SIGTERM)
    log = server.log()
    assert code == 0, log
    assert "table inet trivpn removed" in log
    assert nft_tables(lab.server) == []
    assert forwarding(lab.server) == "0"
    assert lab.server.run("ip", "link", "show", "tvpn0", check=False).returncode != 0
    assert SECRET not in log


def test_a_host_firewall_dropping_forwarded_traffic_is_named_and_the_advice_works(
    lab: netlab.Lab, config: Path, tmp_path: Path
) -> None:
    # iptables-nft's layout, as Docker leaves it: FORWARD drops what no rule accepts
    lab.server.run("nft", "add table ip filter")
    lab.server.run(
        "nft", "add chain ip filter FORWARD { type filter hook forward priority 0; policy drop; }"
    )
    server = start_server(lab, config, tmp_path)
    try:
        server.wait_log("nftables: chain ip filter FORWARD drops forwarded packets")
        client = lab.clients[0]
        conn = connect(client, tmp_path)
        ping = ["ping", "-c", "2", "-i", "0.2", "-W", "1", netlab.INTERNET_HOST]
        assert client.run(*ping, check=False).returncode != 0  # dropped there, as warned
        # what the warning suggests
        lab.server.run("nft", 'add rule ip filter FORWARD iifname "tvpn0" accept')
        lab.server.run(
            "nft",
            'add rule ip filter FORWARD oifname "tvpn0" ct state established,related accept',
        )
        result = client.run(*ping, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        conn.stop()
    finally:
        assert server.stop(signal.SIGTERM) == 0, server.log()


def test_two_clients_get_distinct_addresses_and_both_pass_traffic(
    lab: netlab.Lab, config: Path, tmp_path: Path
) -> None:
    server = start_server(lab, config, tmp_path)
    try:
        a, b = lab.clients
        conns = [connect(a, tmp_path), connect(b, tmp_path)]
        assert {tunnel_address(a), tunnel_address(b)} == {"10.8.0.129", "10.8.0.130"}
        for client, port in ((a, 5001), (b, 5002)):
            assert netlab.tcp_transfer(lab, client, 1 << 20, port) == netlab.SERVER_EGRESS
        # client to client through the server's TUN
        ping = a.run("ping", "-c", "2", "-W", "2", tunnel_address(b), check=False)
        assert ping.returncode == 0, ping.stdout
        for conn in conns:
            conn.stop()
    finally:
        assert server.stop() == 0, server.log()


def test_sigkill_then_restart_gives_exactly_one_table(
    lab: netlab.Lab, config: Path, tmp_path: Path
) -> None:
    first = start_server(lab, config, tmp_path, 0)
    first.kill()
    assert nft_tables(lab.server) == ["trivpn"]  # left behind by the killed server
    second = start_server(lab, config, tmp_path, 1)
    try:
        assert nft_tables(lab.server) == ["trivpn"]
        table = json.loads(lab.server.run("nft", "-j", "list", "table", "inet", "trivpn").stdout)
        rules = [i["rule"] for i in table["nftables"] if "rule" in i]
        assert len(rules) == len({json.dumps(r["expr"], sort_keys=True) for r in rules})
        conn = connect(lab.clients[0], tmp_path)
        assert netlab.tcp_transfer(lab, lab.clients[0], 1 << 20) == netlab.SERVER_EGRESS
        conn.stop()
    finally:
        assert second.stop() == 0, second.log()
    assert nft_tables(lab.server) == []


SEND_RAW = r"""
import socket, struct, sys
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xFFFF); s += s >> 16
    return ~s & 0xFFFF
src, dst, port, payload = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].encode()
udp = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload
hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                  socket.inet_aton(src), socket.inet_aton(dst))
hdr = hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
s.sendto(hdr + udp, (dst, 0))
"""

UDP_SINK = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", int(sys.argv[1])))
s.settimeout(float(sys.argv[2])); print("listening", flush=True)
try:
    while True:
        data, peer = s.recvfrom(2048); print(peer[0], data.decode(), flush=True)
except TimeoutError:
    pass
"""


def test_spoofed_source_is_not_forwarded(lab: netlab.Lab, config: Path, tmp_path: Path) -> None:
    server = start_server(lab, config, tmp_path)
    try:
        client = lab.clients[0]
        conn = connect(client, tmp_path)
        own = tunnel_address(client)
        sink = lab.internet.popen(
            [sys.executable, "-c", UDP_SINK, "9999", "3"], stdout=subprocess.PIPE
        )
        assert sink.stdout is not None and sink.stdout.readline().strip() == "listening"
        # Raw packets routed into the client's TUN, so the client carries them to the server.
        for src, tag in (("10.8.0.200", "spoofed"), (own, "honest"), ("10.8.0.1", "server")):
            client.run(sys.executable, "-c", SEND_RAW, src, netlab.INTERNET_HOST, "9999", tag)
        out, _ = sink.communicate(timeout=10)
        assert out.split() == [netlab.SERVER_EGRESS, "honest"]
        conn.stop()
    finally:
        assert server.stop() == 0
    # Two here; the client's kernel may add its own (IPv6 solicitations from no v6 address).
    spoofed = re.search(r"toyvpn_spoofed_source=(\d+)", server.log())
    assert spoofed and int(spoofed.group(1)) >= 2


def test_wrong_secret_gets_no_reply_and_server_keeps_serving(
    lab: netlab.Lab, config: Path, tmp_path: Path
) -> None:
    server = start_server(lab, config, tmp_path)
    try:
        client = lab.clients[0]
        probe = client.run(
            sys.executable,
            "-c",
            "import socket,sys; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);"
            "s.settimeout(1.5); [s.sendto(b'\\x00wrong-secret', (sys.argv[1], 8000)) "
            "for _ in range(20)]; s.sendto(b'', (sys.argv[1], 8000));"
            "s.sendto(b'\\x45garbage', (sys.argv[1], 8000))\n"
            "try: print(s.recv(2048))\nexcept TimeoutError: print('silent')",
            client.server_ip,  # type: ignore[attr-defined]
        )
        assert probe.stdout.strip() == "silent"
        conn = connect(client, tmp_path)  # the server still serves after the bad input
        assert netlab.tcp_transfer(lab, client, 1 << 20) == netlab.SERVER_EGRESS
        conn.stop()
    finally:
        assert server.stop() == 0
    log = server.log()
    assert log.count("wrong secret") == 1  # twenty tries, one line per second at most
    assert "toyvpn_bad_secret=20" in log


def test_client_reconnects_when_the_server_comes_back(
    lab: netlab.Lab, config: Path, tmp_path: Path
) -> None:
    client = lab.clients[0]
    server = start_server(lab, config, tmp_path, 0)
    conn = netlab.Trivpn(
        client,
        [
            "toyvpn-connect",
            f"{netlab.SERVER_WAN}:{PORT}",
            "--secret",
            SECRET,
            "--tun",
            "toy0",
            "--keepalive",
            "1",
            "--quiet-timeout",
            "3",
        ],
        tmp_path / "client.log",
    )
    try:
        conn.wait_log("connected to")
        assert server.stop() == 0
        server = start_server(lab, config, tmp_path, 1)
        netlab.wait_for(lambda: conn.log().count("connected to") == 2, 30, what="reconnect")
        assert "went quiet; reconnecting" in conn.log()
        assert netlab.tcp_transfer(lab, client, 1 << 20) == netlab.SERVER_EGRESS
    finally:
        conn.stop()
        assert server.stop() == 0, server.log()


def test_a_second_signal_during_shutdown_does_not_cut_the_cleanup_short(
    lab: netlab.Lab, config: Path, tmp_path: Path
) -> None:
    server = start_server(lab, config, tmp_path)
    assert forwarding(lab.server) == "1"
    # As a terminal's Ctrl-C reaches the whole process group and a supervisor follows with
    # SIGTERM: both arrive before the clean-up can finish.
    server.proc.send_signal(signal.SIGINT)
    server.proc.send_signal(signal.SIGTERM)
    server.proc.send_signal(signal.SIGINT)
    # ... and a supervisor that keeps asking until the process is gone: no signal, however
    # late (after the clean-up, before the exit), may turn the clean exit into a kill.
    deadline = time.monotonic() + 15
    while server.proc.poll() is None and time.monotonic() < deadline:
        server.proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.proc.wait(0.002)
    assert server.stop(signal.SIGTERM) == 0, server.log()
    log = server.log()
    # The first signal handled starts the shutdown (which of the pending SIGINT and SIGTERM
    # comes first is the kernel's and Python's choice); every later one is absorbed.
    handled = re.findall(r"(SIGINT|SIGTERM): (shutting down|already shutting down)", log)
    assert [what for _, what in handled[:1]] == ["shutting down"], log
    assert all(what == "already shutting down" for _, what in handled[1:]), log
    assert len(handled) >= 2, log
    assert "table inet trivpn removed" in log
    assert nft_tables(lab.server) == []
    assert forwarding(lab.server) == "0"
