"""The stock `wg` tool against a running `trivpn serve`, through the UAPI socket.

client ns A (wireguard-go 10.8.0.2, in the config) and client ns B (wireguard-go 10.8.0.3,
added at runtime with `wg set`) ── server ns (trivpn serve, NAT) ── internet ns. The socket
directory /var/run/wireguard is one path for every namespace, so the server's interface gets
a name no parallel run uses.
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from collections.abc import Callable, Iterator
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
HANDSHAKE_WAIT = 40.0  # s: wireguard-go retries an unanswered handshake every 5 s


class Server:
    """The trivpn under test: its interface name, keys, and `wg` run in its namespace."""

    def __init__(self, lab: netlab.Lab, tmp_path: Path) -> None:
        self.ns = lab.server
        self.ifname = wglab.unique_ifname("tvu")
        self.private_key = wglab.wg_genkey()
        self.public_key = wglab.wg_pubkey(self.private_key)
        self.tmp_path = tmp_path
        self.proc: netlab.Trivpn | None = None

    @property
    def socket_path(self) -> Path:
        return wglab.UAPI_DIR / f"{self.ifname}.sock"

    def start(self, peer_public_key: str) -> netlab.Trivpn:
        path = self.tmp_path / "trivpn.toml"
        path.write_text(f"""
[interface]
name = "{self.ifname}"
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
private_key = "{self.private_key}"

[[wireguard.peers]]
name = "alice"
public_key = "{peer_public_key}"
allowed_ips = ["10.8.0.2/32"]
""")
        os.chmod(path, 0o600)
        self.proc = netlab.Trivpn(self.ns, ["serve", "-c", str(path)], self.tmp_path / "server.log")
        self.proc.wait_log(f"uapi: `wg` can configure {self.ifname} through {self.socket_path}")
        self.proc.wait_log("trivpn serving")
        return self.proc

    def wg(self, *args: str, input: str | None = None, check: bool = True) -> str:
        done = self.ns.run("wg", *args, input=input, check=False, timeout=15)
        if check:
            assert done.returncode == 0, done.stderr
        return done.stdout if check else done.stderr

    def dump(self) -> wglab.InterfaceStatus:
        return wglab.parse_dump(self.wg("show", self.ifname, "dump"))

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()


@pytest.fixture
def lab() -> Iterator[netlab.Lab]:
    with netlab.Lab("tvu", clients=2) as lab:
        yield lab


@pytest.fixture
def server(lab: netlab.Lab, tmp_path: Path) -> Iterator[Server]:
    srv = Server(lab, tmp_path)
    yield srv
    srv.stop()
    srv.socket_path.unlink(missing_ok=True)  # only if the kill left it behind


@pytest.fixture
def wg_client(
    tmp_path: Path, server: Server
) -> Iterator[Callable[[netlab.Netns, str], wglab.WireGuardGo]]:
    """wireguard-go in a client ns with ``address``/32, everything routed to the server."""
    started: list[wglab.WireGuardGo] = []

    def start(ns: netlab.Netns, address: str) -> wglab.WireGuardGo:
        wg = wglab.WireGuardGo(ns, log_path=tmp_path / f"wireguard-go-{len(started)}.log")
        started.append(wg)
        endpoint = f"{ns.server_ip}:{WG_PORT}"  # type: ignore[attr-defined]
        wg.add_peer(server.public_key, allowed_ips=("0.0.0.0/0",), endpoint=endpoint)
        wg.up(f"{address}/32", routes=("default",))
        return wg

    yield start
    for wg in started:
        wg.stop()


def reaches_internet(ns: netlab.Netns, count: int = 1) -> bool:
    done = ns.run(
        "ping", "-c", str(count), "-i", "0.2", "-W", "1", netlab.INTERNET_HOST, check=False
    )
    return done.returncode == 0


def wait_reaches_internet(ns: netlab.Netns) -> None:
    netlab.wait_for(lambda: reaches_internet(ns), HANDSHAKE_WAIT, what=f"{ns.name} online")


def test_wg_show_and_showconf(
    lab: netlab.Lab,
    server: Server,
    wg_client: Callable[[netlab.Netns, str], wglab.WireGuardGo],
) -> None:
    alice = wg_client(lab.clients[0], "10.8.0.2")
    proc = server.start(alice.public_key)
    mode = os.stat(server.socket_path).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    wait_reaches_internet(lab.clients[0])

    status = server.dump()
    assert (status.public_key, status.listen_port) == (server.public_key, WG_PORT)
    peer = status.peers[alice.public_key]
    assert time.time() - 60 < peer.latest_handshake <= time.time() + 1
    assert peer.transfer_rx > 0 and peer.transfer_tx > 0
    assert peer.allowed_ips == ("10.8.0.2/32",)
    assert peer.endpoint is not None and peer.endpoint.startswith("198.51.100.2:")
    assert (peer.has_preshared_key, peer.persistent_keepalive) == (False, None)

    shown = server.wg("show", server.ifname)
    assert "private key: (hidden)" in shown and server.private_key not in shown
    assert f"peer: {alice.public_key}" in shown and "latest handshake:" in shown
    assert f"listening port: {WG_PORT}" in shown and "transfer:" in shown
    assert server.wg("show", server.ifname, "private-key").strip() == server.private_key
    assert server.wg("show", server.ifname, "public-key").strip() == server.public_key

    conf = server.wg("showconf", server.ifname)
    for line in (
        f"ListenPort = {WG_PORT}",
        f"PrivateKey = {server.private_key}",
        f"PublicKey = {alice.public_key}",
        "AllowedIPs = 10.8.0.2/32",
        "Endpoint = 198.51.100.2:",
    ):
        assert line in conf, conf

    # Changes trivpn cannot make at runtime are refused, not half-done.
    refused = server.wg("set", server.ifname, "listen-port", str(WG_PORT + 1), check=False)
    assert "Operation not supported" in refused
    assert server.dump().listen_port == WG_PORT

    assert proc.stop() == 0, proc.log()
    assert not server.socket_path.exists()
    assert server.private_key not in proc.log()


def test_wg_set_adds_and_removes_peers_and_syncconf_applies_a_file(
    lab: netlab.Lab,
    server: Server,
    wg_client: Callable[[netlab.Netns, str], wglab.WireGuardGo],
    tmp_path: Path,
) -> None:
    ns_a, ns_b = lab.clients
    alice = wg_client(ns_a, "10.8.0.2")
    bob = wg_client(ns_b, "10.8.0.3")
    proc = server.start(alice.public_key)
    wait_reaches_internet(ns_a)
    assert bob.public_key not in server.dump().peers

    # A new peer, without a restart.
    server.wg("set", server.ifname, "peer", bob.public_key, "allowed-ips", "10.8.0.3/32")
    assert server.dump().peers[bob.public_key].allowed_ips == ("10.8.0.3/32",)
    wait_reaches_internet(ns_b)
    assert server.dump().peers[bob.public_key].latest_handshake > 0
    proc.wait_log(f"wireguard: peer {bob.public_key[:8]}… added through the UAPI")

    # Removed: bob is cut off, alice keeps her traffic.
    server.wg("set", server.ifname, "peer", bob.public_key, "remove")
    assert bob.public_key not in server.dump().peers
    received = bob.peer(server.public_key).transfer_rx
    assert not reaches_internet(ns_b, count=3)
    assert bob.peer(server.public_key).transfer_rx == received  # nothing came back
    assert reaches_internet(ns_a, count=3)

    # syncconf: the file's peers, no others; peers that stay are not disturbed.
    alice_handshake = server.dump().peers[alice.public_key].latest_handshake
    conf = tmp_path / "sync.conf"
    conf.touch(mode=0o600)
    conf.write_text(f"""[Interface]
PrivateKey = {server.private_key}
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
    wait_reaches_internet(ns_b)
    assert reaches_internet(ns_a)
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
    conf.write_text(f"[Interface]\nPrivateKey = {server.private_key}\n{only_bob}")
    server.wg("syncconf", server.ifname, str(conf))
    assert set(server.dump().peers) == {bob.public_key}
    assert not reaches_internet(ns_a, count=3)
    assert reaches_internet(ns_b)

    assert proc.stop() == 0, proc.log()
    log = proc.log()
    assert server.private_key not in log
    assert "Traceback" not in log
