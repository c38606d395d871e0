"""Peers while `trivpn serve` runs: `trivpn peer add/remove`, `wg set`, SIGHUP, a restart.

client ns 0 (wireguard-go, configured from what `trivpn peer add` printed, or added with
`wg set`; it reaches the server at 198.51.100.1:51820, the config's public_endpoint) and
client ns 1 (wireguard-go, the static peer "alice", 10.8.0.2, through 192.0.2.5) ── server ns
(trivpn serve, NAT) ── internet ns. The registry lives in a state dir under tmp_path; the
TUN name carries the pid, because the UAPI socket directory is shared by every namespace.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable

import pytest
from support import netlab, wglab

pytestmark = [pytest.mark.root, pytest.mark.wireguard_go, pytest.mark.lab("tvp", clients=2)]

WG_PORT = wglab.WG_PORT
ALICE_ADDRESS = "10.8.0.2"
CUT_OFF_WAIT = 5.0  # s: the registry watcher polls every 0.5 s


def write_config(server: wglab.LabServer, static_peers: dict[str, tuple[str, str]]) -> None:
    """``static_peers``: name -> (public key, address)."""
    peers = (
        wglab.peer_table(name, key, f"{address}/32")
        for name, (key, address) in static_peers.items()
    )
    server.write_config(*peers, wireguard=wglab.ROUTE_ALL)


def registry_names(server: wglab.LabServer) -> set[str]:
    rows = json.loads(server.trivpn("peer", "list", "--json"))
    return {row["name"] for row in rows if row["source"] == "registry"}


def assert_cut_off(server: wglab.LabServer, ns: netlab.Netns, public_key: str) -> None:
    netlab.wait_for(
        lambda: public_key not in server.dump().peers, CUT_OFF_WAIT, what="the peer gone"
    )
    assert not wglab.reaches_internet(ns, count=3)


def test_peer_add_while_running_then_peer_remove(
    lab: netlab.Lab,
    server: wglab.LabServer,
    wireguard_go: Callable[..., wglab.WireGuardGo],
) -> None:
    new_ns, alice_ns = lab.clients
    alice = wireguard_go(alice_ns)
    write_config(server, {"alice": (alice.public_key, ALICE_ADDRESS)})
    proc = server.start(server.uapi_ready)
    wglab.connect_client(alice, server.keys.public, ALICE_ADDRESS)
    wglab.wait_online(alice_ns)

    printed = server.trivpn("peer", "add", "bob")
    assert f"Endpoint = {netlab.SERVER_WAN}:{WG_PORT}" in printed
    bob = wireguard_go(new_ns)
    bob_key = wglab.apply_client_config(bob, printed)
    # TCP through the tunnel and the masquerade, from exactly the printed config
    assert netlab.tcp_transfer(lab, new_ns, 1 << 20) == netlab.SERVER_EGRESS
    status = server.dump().peers[bob_key]
    assert status.allowed_ips == ("10.8.0.3/32",)  # alice's 10.8.0.2 is reserved
    assert time.time() - 60 < status.latest_handshake <= time.time() + 1
    assert status.transfer_rx > 1 << 20 and status.transfer_tx > 0
    assert status.has_preshared_key
    proc.wait_log("peersync: peer 'bob' added (registry: 10.8.0.3)")

    server.trivpn("peer", "remove", "bob")
    assert_cut_off(server, new_ns, bob_key)
    assert wglab.reaches_internet(alice_ns, count=3)
    proc.wait_log("peersync: peer 'bob' removed (registry); its sessions end")

    assert proc.stop() == 0, proc.log()
    log = proc.log()
    assert "Traceback" not in log
    assert server.keys.private not in log


def test_wg_set_is_kept_across_a_restart_and_wg_remove_cuts_off(
    lab: netlab.Lab,
    server: wglab.LabServer,
    wireguard_go: Callable[..., wglab.WireGuardGo],
) -> None:
    carol_ns, alice_ns = lab.clients
    alice, carol = wireguard_go(alice_ns), wireguard_go(carol_ns)
    write_config(server, {"alice": (alice.public_key, ALICE_ADDRESS)})
    proc = server.start(server.uapi_ready)
    wglab.connect_client(alice, server.keys.public, ALICE_ADDRESS)
    wglab.connect_client(carol, server.keys.public, "10.8.0.7")

    # a host address, a network behind carol and a keepalive: all kept
    server.wg(
        "set",
        server.ifname,
        "peer",
        carol.public_key,
        "allowed-ips",
        "10.8.0.7/32,192.168.66.0/24",
        "persistent-keepalive",
        "25",
    )
    wglab.wait_online(carol_ns)
    wglab.wait_online(alice_ns)
    carol_name = "wg-" + carol.public_key[:8].replace("+", "-").replace("/", "_")
    proc.wait_log(f"added in the registry: {carol_name!r}", timeout=5)
    assert registry_names(server) == {carol_name}
    assert proc.stop() == 0, proc.log()

    proc = server.start(server.uapi_ready)  # carol comes back from the registry
    back = server.dump().peers[carol.public_key]
    assert back.allowed_ips == ("10.8.0.7/32", "192.168.66.0/24")
    assert back.persistent_keepalive == 25
    wglab.wait_online(carol_ns)
    wglab.wait_online(alice_ns)

    server.wg("set", server.ifname, "peer", carol.public_key, "remove")
    assert_cut_off(server, carol_ns, carol.public_key)
    assert wglab.reaches_internet(alice_ns, count=3)
    netlab.wait_for(lambda: registry_names(server) == set(), CUT_OFF_WAIT, what="deleted")

    assert proc.stop() == 0, proc.log()
    assert "Traceback" not in proc.log()


def test_sighup_keeps_serving_on_a_broken_file_and_adds_a_static_peer(
    lab: netlab.Lab,
    server: wglab.LabServer,
    wireguard_go: Callable[..., wglab.WireGuardGo],
) -> None:
    dave_ns, alice_ns = lab.clients
    alice, dave = wireguard_go(alice_ns), wireguard_go(dave_ns)
    static = {"alice": (alice.public_key, ALICE_ADDRESS)}
    write_config(server, static)
    proc = server.start(server.uapi_ready)
    wglab.connect_client(alice, server.keys.public, ALICE_ADDRESS)
    wglab.connect_client(dave, server.keys.public, "10.8.0.9")
    wglab.wait_online(alice_ns)
    assert not wglab.reaches_internet(dave_ns)  # not a peer yet

    good = server.config.read_text()
    server.config.write_text(good.replace("mtu = 1420", "mtu = 20"))
    proc.proc.send_signal(signal.SIGHUP)
    proc.wait_log("is invalid; the running config stays")
    proc.wait_log("interface.mtu")
    assert proc.proc.poll() is None
    assert wglab.reaches_internet(alice_ns, count=3)

    static["dave"] = (dave.public_key, "10.8.0.9")
    write_config(server, static)
    proc.proc.send_signal(signal.SIGHUP)
    proc.wait_log("reload: static peer 'dave' added")
    wglab.wait_online(dave_ns)
    assert wglab.reaches_internet(alice_ns, count=3)
    assert server.dump().peers[dave.public_key].allowed_ips == ("10.8.0.9/32",)

    assert proc.stop() == 0, proc.log()
    assert "Traceback" not in proc.log()
