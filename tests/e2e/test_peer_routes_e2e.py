"""Site-to-site: a peer's network outside the interface subnets is routed into the TUN.

client ns (wireguard-go 10.8.0.2, its "LAN" 192.168.77.1 on lo) ── server ns (trivpn serve)
── internet ns. The server's static peer has allowed_ips 10.8.0.2/32, 192.168.77.0/24 and
fd00:77::/64: trivpn adds kernel routes for the last two through its TUN, so the server's own
ping reaches the client's LAN and the LAN reaches the internet host (masqueraded); a `wg set`
that drops them deletes those routes.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from support import netlab, wglab

pytestmark = [pytest.mark.root, pytest.mark.wireguard_go, pytest.mark.lab("tvr", clients=1)]

LAN_HOST = "192.168.77.1"
LAN = "192.168.77.0/24"
LAN6 = "fd00:77::/64"
ROUTE_WAIT = 10.0  # s: a sync follows a change within a fraction of a second


def kernel_route(ns: netlab.Netns, network: str) -> str:
    """`ip route show exact NETWORK` in ``ns`` (empty when there is none)."""
    family = "-6" if ":" in network else "-4"
    return ns.run("ip", family, "route", "show", "exact", network).stdout.strip()


def test_a_peer_network_is_routed_into_the_tunnel_while_it_is_the_peers(
    lab: netlab.Lab,
    server: wglab.LabServer,
    wg_client: Callable[..., wglab.WireGuardGo],
) -> None:
    site = lab.clients[0]
    site.run("ip", "addr", "add", f"{LAN_HOST}/32", "dev", "lo")  # the client ns, never root's
    client = wg_client(site, "10.8.0.2")  # its peer (the server) has allowed-ips 0.0.0.0/0
    server.write_config(wglab.peer_table("site", client.public_key, "10.8.0.2/32", LAN, LAN6))
    proc = server.start(server.uapi_ready)
    wglab.wait_online(site)

    through_tun = f"dev {server.ifname}"
    netlab.wait_for(
        lambda: (
            through_tun in kernel_route(lab.server, LAN)
            and through_tun in kernel_route(lab.server, LAN6)
        ),
        ROUTE_WAIT,
        what=f"the routes to {LAN} and {LAN6} through {server.ifname}",
    )
    assert kernel_route(lab.server, "10.8.0.2/32") == ""  # inside the connected 10.8.0.0/24
    ping = lab.server.run("ping", "-c", "1", "-W", "2", LAN_HOST, check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    # The LAN reaches the outside through the server: the internet host has no route back to
    # it, so only the masquerade of the routed set makes the reply come back.
    from_lan = ["ping", "-c", "1", "-W", "2", "-I", LAN_HOST, netlab.INTERNET_HOST]
    ping = site.run(*from_lan, check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr

    server.wg("set", server.ifname, "peer", client.public_key, "allowed-ips", "10.8.0.2/32")
    netlab.wait_for(
        lambda: kernel_route(lab.server, LAN) == "" and kernel_route(lab.server, LAN6) == "",
        ROUTE_WAIT,
        what=f"the routes to {LAN} and {LAN6} gone",
    )
    assert wglab.reaches_internet(site)  # the peer itself is untouched
    assert site.run(*from_lan, check=False).returncode != 0  # the LAN is no longer the peer's

    assert proc.stop() == 0, proc.log()
    log = proc.log()
    assert f"kernel route: {LAN} via {server.ifname} added" in log
    assert f"kernel route: {LAN} via {server.ifname} removed" in log
    assert "cannot" not in log and "Traceback" not in log
