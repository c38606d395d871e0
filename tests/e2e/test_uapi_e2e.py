"""The stock `wg` tool against a running `trivpn serve`, through the UAPI socket.

client ns A (wireguard-go 10.8.0.2, in the config) and client ns B (wireguard-go 10.8.0.3,
added at runtime with `wg set`) ── server ns (trivpn serve, NAT) ── internet ns. The socket
directory /var/run/wireguard is one path for every namespace, so the server's interface gets
a name no parallel run uses.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from support import netlab, wglab

pytestmark = [pytest.mark.root, pytest.mark.wireguard_go, pytest.mark.lab("tvu", clients=2)]

WG_PORT = wglab.WG_PORT


def start(server: wglab.LabServer, peer_public_key: str) -> netlab.Trivpn:
    server.write_config(wglab.peer_table("alice", peer_public_key, "10.8.0.2/32"))
    return server.start(server.uapi_ready)


def test_wg_show_and_showconf(
    lab: netlab.Lab,
    server: wglab.LabServer,
    wg_client: Callable[..., wglab.WireGuardGo],
) -> None:
    alice = wg_client(lab.clients[0], "10.8.0.2")
    proc = start(server, alice.public_key)
    mode = os.stat(server.socket_path).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    wglab.wait_online(lab.clients[0])

    status = server.dump()
    assert (status.public_key, status.listen_port) == (server.keys.public, WG_PORT)
    peer = status.peers[alice.public_key]
    assert time.time() - 60 < peer.latest_handshake <= time.time() + 1
    assert peer.transfer_rx > 0 and peer.transfer_tx > 0
    assert peer.allowed_ips == ("10.8.0.2/32",)
    assert peer.endpoint is not None and peer.endpoint.startswith("198.51.100.2:")
    assert (peer.has_preshared_key, peer.persistent_keepalive) == (False, None)

    shown = server.wg("show", server.ifname)
    assert "private key: (hidden)" in shown and server.keys.private not in shown
    assert f"peer: {alice.public_key}" in shown and "latest handshake:" in shown
    assert f"listening port: {WG_PORT}" in shown and "transfer:" in shown
    assert server.wg("show", server.ifname, "private-key").strip() == server.keys.private
    assert server.wg("show", server.ifname, "public-key").strip() == server.keys.public

    conf = server.wg("showconf", server.ifname)
    for line in (
        f"ListenPort = {WG_PORT}",
        f"PrivateKey = {server.keys.private}",
        f"PublicKey = {alice.public_key}",
        "AllowedIPs = 10.8.0.2/32",
        "Endpoint = 198.51.100.2:",
    ):
        assert line in conf, conf

    assert proc.stop() == 0, proc.log()
    assert not server.socket_path.exists()
    assert server.keys.private not in proc.log()


def test_wg_set_adds_and_removes_peers_and_syncconf_applies_a_file(
    lab: netlab.Lab,
    server: wglab.LabServer,
    wg_client: Callable[..., wglab.WireGuardGo],
    tmp_path: Path,
) -> None:
    ns_a, ns_b = lab.clients
    alice = wg_client(ns_a, "10.8.0.2")
    bob = wg_client(ns_b, "10.8.0.3")
    proc = start(server, alice.public_key)
    wglab.wait_online(ns_a)
    assert bob.public_key not in server.dump().peers

    # A new peer, without a restart.
    server.wg("set", server.ifname, "peer", bob.public_key, "allowed-ips", "10.8.0.3/32")
    assert server.dump().peers[bob.public_key].allowed_ips == ("10.8.0.3/32",)
    wglab.wait_online(ns_b)
    assert server.dump().peers[bob.public_key].latest_handshake > 0
    proc.wait_log(f"wireguard: peer {bob.public_key[:8]}… added through the UAPI")

    # Removed: bob is cut off, alice keeps her traffic.
    server.wg("set", server.ifname, "peer", bob.public_key, "remove")
    assert bob.public_key not in server.dump().peers
    received = bob.peer(server.keys.public).transfer_rx
    assert not wglab.reaches_internet(ns_b, count=3)
    assert bob.peer(server.keys.public).transfer_rx == received  # nothing came back
    assert wglab.reaches_internet(ns_a, count=3)

    # syncconf: the file's peers, no others; peers that stay are not disturbed.
    alice_handshake = server.dump().peers[alice.public_key].latest_handshake
    conf = tmp_path / "sync.conf"
    conf.touch(mode=0o600)
    conf.write_text(f"""[Interface]
PrivateKey = {server.keys.private}
ListenPort = {WG_PORT}

[Peer]
PublicKey = {alice.public_key}
AllowedIPs = 10.8.0.2/32

[Peer]
PublicKey = {bob.public_key}
AllowedIPs = 10.8.0.3/32
""")
    server.wg("syncconf", server.ifname, str(conf))
    assert set(server.dump().peers) == {alice.public_key, bob.public_key}
    wglab.wait_online(ns_b)
    assert wglab.reaches_internet(ns_a)
    assert server.dump().peers[alice.public_key].latest_handshake == alice_handshake

    # A file without PrivateKey would remove the key: refused, and nothing else applied.
    only_bob = f"""
[Peer]
PublicKey = {bob.public_key}
AllowedIPs = 10.8.0.3/32
"""
    conf.write_text(f"[Interface]\nListenPort = {WG_PORT}\n{only_bob}")
    refused = server.wg("syncconf", server.ifname, str(conf), check=False)
    assert "Operation not supported" in refused
    assert set(server.dump().peers) == {alice.public_key, bob.public_key}
    conf.write_text(f"[Interface]\nPrivateKey = {server.keys.private}\n{only_bob}")
    server.wg("syncconf", server.ifname, str(conf))
    assert set(server.dump().peers) == {bob.public_key}
    assert not wglab.reaches_internet(ns_a, count=3)
    assert wglab.reaches_internet(ns_b)

    assert proc.stop() == 0, proc.log()
    log = proc.log()
    assert server.keys.private not in log
    assert "Traceback" not in log
