"""Peers while `trivpn serve` runs: `trivpn peer add/remove`, `wg set`, SIGHUP, a restart.

client ns 0 (wireguard-go, configured from what `trivpn peer add` printed, or added with
`wg set`; it reaches the server at 198.51.100.1:51820, the config's public_endpoint) and
client ns 1 (wireguard-go, the static peer "alice", 10.8.0.2, through 192.0.2.5) ── server ns
(trivpn serve, NAT) ── internet ns. The registry lives in a state dir under tmp_path; the
TUN name carries the pid, because the UAPI socket directory is shared by every namespace.
"""

from __future__ import annotations

import configparser
import json
import os
import shutil
import signal
import sys
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
ALICE_ADDRESS = "10.8.0.2"
HANDSHAKE_WAIT = 40.0  # s: wireguard-go retries an unanswered handshake every 5 s
CUT_OFF_WAIT = 5.0  # s: the registry watcher polls every 0.5 s


class Server:
    """The trivpn under test, its config file, its `wg` and `trivpn peer` commands."""

    def __init__(self, lab: netlab.Lab, tmp_path: Path) -> None:
        self.lab = lab
        self.ns = lab.server
        self.ifname = wglab.unique_ifname("tvp")
        self.private_key = wglab.wg_genkey()
        self.public_key = wglab.wg_pubkey(self.private_key)
        self.tmp_path = tmp_path
        self.config = tmp_path / "trivpn.toml"
        self.runs = 0
        self.proc: netlab.Trivpn | None = None

    @property
    def socket_path(self) -> Path:
        return wglab.UAPI_DIR / f"{self.ifname}.sock"

    def write_config(self, static_peers: dict[str, tuple[str, str]]) -> None:
        """``static_peers``: name -> (public key, address)."""
        text = f"""
[interface]
name = "{self.ifname}"
address = ["10.8.0.1/24"]
mtu = 1420

[nat]
masquerade = true
egress = "auto"

[state]
dir = "{self.tmp_path / "state"}"

[wireguard]
enabled = true
listen = "0.0.0.0:{WG_PORT}"
private_key = "{self.private_key}"
public_endpoint = "{netlab.SERVER_WAN}:{WG_PORT}"
client_dns = []
client_allowed_ips = ["0.0.0.0/0"]
"""
        for name, (key, address) in static_peers.items():
            text += f"""
[[wireguard.peers]]
name = "{name}"
public_key = "{key}"
allowed_ips = ["{address}/32"]
"""
        self.config.write_text(text)
        os.chmod(self.config, 0o600)

    def start(self) -> netlab.Trivpn:
        self.runs += 1
        log = self.tmp_path / f"server-{self.runs}.log"
        self.proc = netlab.Trivpn(self.ns, ["serve", "-c", str(self.config)], log)
        self.proc.wait_log(f"uapi: `wg` can configure {self.ifname}")
        self.proc.wait_log("trivpn serving")
        return self.proc

    def trivpn(self, *args: str) -> str:
        """`trivpn ARGS -c CONFIG` in the server ns; its stdout (it may hold a private key)."""
        done = self.ns.run(
            sys.executable, "-m", "trivpn", *args, "-c", str(self.config), check=False
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def registry_names(self) -> set[str]:
        rows = json.loads(self.trivpn("peer", "list", "--json"))
        return {row["name"] for row in rows if row["source"] == "registry"}

    def wg(self, *args: str) -> str:
        done = self.ns.run("wg", *args, check=False, timeout=15)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def dump(self) -> wglab.InterfaceStatus:
        return wglab.parse_dump(self.wg("show", self.ifname, "dump"))

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()


@pytest.fixture
def lab() -> Iterator[netlab.Lab]:
    with netlab.Lab("tvp", clients=2) as lab:
        yield lab


@pytest.fixture
def server(lab: netlab.Lab, tmp_path: Path) -> Iterator[Server]:
    srv = Server(lab, tmp_path)
    yield srv
    srv.stop()
    srv.socket_path.unlink(missing_ok=True)  # only if the kill left it behind


@pytest.fixture
def wireguard_go(tmp_path: Path) -> Iterator[Callable[[netlab.Netns], wglab.WireGuardGo]]:
    started: list[wglab.WireGuardGo] = []

    def start(ns: netlab.Netns) -> wglab.WireGuardGo:
        wg = wglab.WireGuardGo(ns, log_path=tmp_path / f"wireguard-go-{len(started)}.log")
        started.append(wg)
        return wg

    yield start
    for wg in started:
        wg.stop()


def connect(wg: wglab.WireGuardGo, server: Server, address: str) -> None:
    """Route everything of ``wg``'s namespace to the server, as ``address``/32."""
    endpoint = f"{wg.ns.server_ip}:{WG_PORT}"  # type: ignore[attr-defined]
    wg.add_peer(server.public_key, allowed_ips=("0.0.0.0/0",), endpoint=endpoint)
    wg.up(f"{address}/32", routes=("default",))


def apply_client_config(wg: wglab.WireGuardGo, text: str) -> str:
    """Configure ``wg`` from exactly the wg-quick text `trivpn peer add` printed: keys,
    endpoint, allowed ips, keepalive with `wg set`, the address and routes as wg-quick
    would. Returns the client's public key."""
    ini = configparser.ConfigParser()
    ini.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    ini.read_string(text)
    iface, peer = ini["Interface"], ini["Peer"]
    wg.wg("set", wg.ifname, "private-key", "/dev/stdin", input=iface["PrivateKey"])
    allowed = tuple(a.strip() for a in peer["AllowedIPs"].split(","))
    wg.add_peer(
        peer["PublicKey"],
        allowed_ips=allowed,
        endpoint=peer["Endpoint"],
        persistent_keepalive=int(peer["PersistentKeepalive"]),
        preshared_key=peer["PresharedKey"],
    )
    (address,) = (a.strip() for a in iface["Address"].split(","))
    routes = ["default" if a == "0.0.0.0/0" else a for a in allowed]
    wg.up(address, routes=routes)
    return wglab.wg_pubkey(iface["PrivateKey"])


def reaches_internet(ns: netlab.Netns, count: int = 1) -> bool:
    done = ns.run(
        "ping", "-c", str(count), "-i", "0.2", "-W", "1", netlab.INTERNET_HOST, check=False
    )
    return done.returncode == 0


def wait_online(ns: netlab.Netns) -> None:
    netlab.wait_for(lambda: reaches_internet(ns), HANDSHAKE_WAIT, what=f"{ns.name} online")


def assert_cut_off(server: Server, ns: netlab.Netns, public_key: str) -> None:
    netlab.wait_for(
        lambda: public_key not in server.dump().peers, CUT_OFF_WAIT, what="the peer gone"
    )
    assert not reaches_internet(ns, count=3)


def test_peer_add_while_running_then_peer_remove(
    lab: netlab.Lab,
    server: Server,
    wireguard_go: Callable[[netlab.Netns], wglab.WireGuardGo],
) -> None:
    new_ns, alice_ns = lab.clients
    alice = wireguard_go(alice_ns)
    server.write_config({"alice": (alice.public_key, ALICE_ADDRESS)})
    proc = server.start()
    connect(alice, server, ALICE_ADDRESS)
    wait_online(alice_ns)

    printed = server.trivpn("peer", "add", "bob")
    assert f"Endpoint = {netlab.SERVER_WAN}:{WG_PORT}" in printed
    bob = wireguard_go(new_ns)
    bob_key = apply_client_config(bob, printed)
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
    assert reaches_internet(alice_ns, count=3)
    proc.wait_log("peersync: peer 'bob' removed (registry); its sessions end")

    assert proc.stop() == 0, proc.log()
    log = proc.log()
    assert "Traceback" not in log
    assert server.private_key not in log


def test_wg_set_is_kept_across_a_restart_and_wg_remove_cuts_off(
    lab: netlab.Lab,
    server: Server,
    wireguard_go: Callable[[netlab.Netns], wglab.WireGuardGo],
) -> None:
    carol_ns, alice_ns = lab.clients
    alice, carol = wireguard_go(alice_ns), wireguard_go(carol_ns)
    server.write_config({"alice": (alice.public_key, ALICE_ADDRESS)})
    proc = server.start()
    connect(alice, server, ALICE_ADDRESS)
    connect(carol, server, "10.8.0.7")

    server.wg("set", server.ifname, "peer", carol.public_key, "allowed-ips", "10.8.0.7/32")
    wait_online(carol_ns)
    wait_online(alice_ns)
    carol_name = "wg-" + carol.public_key[:8].replace("+", "-").replace("/", "_")
    proc.wait_log(f"added in the registry: {carol_name!r}", timeout=5)
    assert server.registry_names() == {carol_name}
    assert proc.stop() == 0, proc.log()

    proc = server.start()  # carol comes back from the registry
    assert server.dump().peers[carol.public_key].allowed_ips == ("10.8.0.7/32",)
    wait_online(carol_ns)
    wait_online(alice_ns)

    server.wg("set", server.ifname, "peer", carol.public_key, "remove")
    assert_cut_off(server, carol_ns, carol.public_key)
    assert reaches_internet(alice_ns, count=3)
    netlab.wait_for(lambda: server.registry_names() == set(), CUT_OFF_WAIT, what="deleted")

    assert proc.stop() == 0, proc.log()
    assert "Traceback" not in proc.log()


def test_sighup_keeps_serving_on_a_broken_file_and_adds_a_static_peer(
    lab: netlab.Lab,
    server: Server,
    wireguard_go: Callable[[netlab.Netns], wglab.WireGuardGo],
) -> None:
    dave_ns, alice_ns = lab.clients
    alice, dave = wireguard_go(alice_ns), wireguard_go(dave_ns)
    static = {"alice": (alice.public_key, ALICE_ADDRESS)}
    server.write_config(static)
    proc = server.start()
    connect(alice, server, ALICE_ADDRESS)
    connect(dave, server, "10.8.0.9")
    wait_online(alice_ns)
    assert not reaches_internet(dave_ns)  # not a peer yet

    good = server.config.read_text()
    server.config.write_text(good.replace("mtu = 1420", "mtu = 20"))
    proc.proc.send_signal(signal.SIGHUP)
    proc.wait_log("is invalid; the running config stays")
    proc.wait_log("interface.mtu")
    assert proc.proc.poll() is None
    assert reaches_internet(alice_ns, count=3)

    static["dave"] = (dave.public_key, "10.8.0.9")
    server.write_config(static)
    proc.proc.send_signal(signal.SIGHUP)
    proc.wait_log("reload: static peer 'dave' added")
    wait_online(dave_ns)
    assert reaches_internet(alice_ns, count=3)
    assert server.dump().peers[dave.public_key].allowed_ips == ("10.8.0.9/32",)

    assert proc.stop() == 0, proc.log()
    assert "Traceback" not in proc.log()
