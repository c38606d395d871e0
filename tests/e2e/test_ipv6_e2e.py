"""IPv6 through the tunnel: a dual-stack interface, a dual-stack WireGuard peer, NAT66.

The lab's namespaces get IPv6 documentation addresses (2001:db8::/32) on the server ↔
internet link; the internet host has no route to fd00:8::/64, so only the masquerade of the
`inet trivpn` table (ip6 saddr … masquerade) lets replies come back.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import pytest
from support import netlab, wglab

pytestmark = [pytest.mark.root, pytest.mark.wireguard_go, pytest.mark.lab("tv6")]

SERVER_EGRESS6 = "2001:db8:1::1"
INTERNET6 = "2001:db8:1::2"

UDP6_SINK = r"""
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s.bind(("::", 9996))
s.settimeout(10); print("listening", flush=True)
data, peer = s.recvfrom(2048); print(peer[0], data.decode(), flush=True)
"""


@pytest.fixture
def lab(lab: netlab.Lab) -> netlab.Lab:
    """The shared lab, with IPv6 on the server ↔ internet link."""
    for ns, addr in ((lab.server, SERVER_EGRESS6), (lab.internet, INTERNET6)):
        dev = "inet0" if ns is lab.server else "eth0"
        ns.run("ip", "-6", "addr", "add", f"{addr}/64", "dev", dev, "nodad")
    lab.server.run("ip", "-6", "route", "add", "default", "via", INTERNET6)
    return lab


def test_dual_stack_peer_reaches_the_internet_over_ipv6_through_nat66(
    lab: netlab.Lab,
    server: wglab.LabServer,
    wireguard_go: Callable[..., wglab.WireGuardGo],
) -> None:
    client = lab.clients[0]
    wg = wireguard_go(client)
    server.write_config(
        wglab.peer_table("dual", wg.public_key, "10.8.0.2/32", "fd00:8::2/128"),
        addresses=("10.8.0.1/24", "fd00:8::1/64"),
    )
    proc = server.start()
    try:
        assert lab.server.run("sysctl", "-n", "net.ipv6.conf.all.forwarding").stdout == "1\n"
        wglab.connect_client(wg, server.keys.public, "10.8.0.2", allowed_ips=("0.0.0.0/0", "::/0"))
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
        code = proc.stop()
    assert code == 0, proc.log()
    # forwarding for both families is restored on the way out
    assert lab.server.run("sysctl", "-n", "net.ipv6.conf.all.forwarding").stdout == "0\n"
