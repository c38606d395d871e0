"""IPv6 through the tunnel: a dual-stack interface, a dual-stack WireGuard peer, NAT66.

The lab's namespaces get IPv6 documentation addresses (2001:db8::/32) on the server ↔
internet link; the internet host has no route to fd00:8::/64, so only the masquerade of the
`inet trivpn` table (ip6 saddr … masquerade) lets replies come back.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import netlab
import pytest
import wglab

pytestmark = pytest.mark.root

SERVER_EGRESS6 = "2001:db8:1::1"
INTERNET6 = "2001:db8:1::2"
TUN_NAME = f"tv6w{os.getpid() % 100000}"

UDP6_SINK = r"""
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s.bind(("::", 9996))
s.settimeout(10); print("listening", flush=True)
data, peer = s.recvfrom(2048); print(peer[0], data.decode(), flush=True)
"""


@pytest.fixture
def lab() -> Iterator[netlab.Lab]:
    with netlab.Lab("tv6") as lab:
        for ns, addr in ((lab.server, SERVER_EGRESS6), (lab.internet, INTERNET6)):
            dev = "inet0" if ns is lab.server else "eth0"
            ns.run("ip", "-6", "addr", "add", f"{addr}/64", "dev", dev, "nodad")
        lab.server.run("ip", "-6", "route", "add", "default", "via", INTERNET6)
        yield lab


def test_dual_stack_peer_reaches_the_internet_over_ipv6_through_nat66(
    lab: netlab.Lab, tmp_path: Path
) -> None:
    server_private = wglab.wg_genkey()
    client = lab.clients[0]
    with wglab.WireGuardGo(client, prefix="wg6") as wg:
        config = tmp_path / "trivpn.toml"
        config.write_text(
            f"""
[interface]
name = "{TUN_NAME}"
address = ["10.8.0.1/24", "fd00:8::1/64"]
mtu = 1420

[state]
dir = "state"  # beside this file: never the host's /var/lib/trivpn

[wireguard]
enabled = true
listen = "0.0.0.0:51820"
private_key = "{server_private}"

[[wireguard.peers]]
name = "dual"
public_key = "{wg.public_key}"
allowed_ips = ["10.8.0.2/32", "fd00:8::2/128"]
"""
        )
        server = netlab.Trivpn(lab.server, ["serve", "-c", str(config)], tmp_path / "s.log")
        try:
            server.wait_log("trivpn serving")
            assert lab.server.run("sysctl", "-n", "net.ipv6.conf.all.forwarding").stdout == "1\n"
            wg.add_peer(
                wglab.wg_pubkey(server_private),
                endpoint=f"{netlab.SERVER_WAN}:51820",
                allowed_ips=("0.0.0.0/0", "::/0"),
            )
            wg.up("10.8.0.2/32", routes=("default",))
            client.run("ip", "-6", "addr", "add", "fd00:8::2/128", "dev", wg.ifname, "nodad")
            client.run("ip", "-6", "route", "add", "default", "dev", wg.ifname)
            ping = client.run("ping", "-6", "-c", "3", "-i", "0.2", "-W", "3", INTERNET6,
                              check=False)  # fmt: skip
            assert ping.returncode == 0, ping.stdout + ping.stderr
            # The source the internet host sees is the server's egress address: NAT66.
            sink = lab.internet.popen([sys.executable, "-c", UDP6_SINK], stdout=subprocess.PIPE)
            assert sink.stdout is not None and sink.stdout.readline().strip() == "listening"
            client.run(
                sys.executable, "-c",
                "import socket,sys; socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)"
                ".sendto(b'over-v6', (sys.argv[1], 9996))",
                INTERNET6,
            )  # fmt: skip
            out, _ = sink.communicate(timeout=15)
            assert out.split() == [SERVER_EGRESS6, "over-v6"]
            nft = lab.server.run("nft", "list", "table", "inet", "trivpn").stdout
            assert "ip6 saddr fd00:8::/64" in nft
        finally:
            code = server.stop()
        assert code == 0, server.log()
        # forwarding for both families is restored on the way out
        assert lab.server.run("sysctl", "-n", "net.ipv6.conf.all.forwarding").stdout == "0\n"
