"""A wireguard-go peer inside a netlab namespace, driven by Debian's `wg` tool.

wireguard-go runs in the foreground (one process per interface) and its UAPI socket lives in
/var/run/wireguard, which every namespace shares; interface names therefore carry the pid and
a counter so that parallel runs never collide, and ``stop()`` removes the socket file even
when the process was killed. Keys come from `wg genkey` / `wg pubkey`, and reach `wg` on
stdin, never on a command line or in a file. Typical use::

    with WireGuardGo(lab.clients[0]) as wg:
        wg.add_peer(server_public, endpoint="198.51.100.1:51820", allowed_ips=("0.0.0.0/0",))
        wg.up("10.8.0.2/32", routes=("default",))
        wg.peer(server_public).latest_handshake

The trivpn side of such a lab: ``server_config()`` writes a `trivpn serve` config (with
``peer_table()`` entries), ``LabServer`` runs it in the server namespace with its own key pair
(``ServerKeys``), and ``connect_client()`` makes a wireguard-go interface its peer.
"""

from __future__ import annotations

import configparser
import contextlib
import itertools
import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support.netlab import INTERNET_HOST, SERVER_WAN, Netns, Trivpn, wait_for
from trivpn.control import status_socket

UAPI_DIR = Path("/var/run/wireguard")
IFNAMSIZ = 15  # the kernel's limit on an interface name, without the NUL

_ifcounter = itertools.count()


def _wg(*args: str, input: str | None = None) -> str:
    """`wg ARGS` for the key commands, which touch no network (so: any namespace)."""
    done = subprocess.run(
        ["wg", *args], input=input, capture_output=True, text=True, check=True, timeout=10
    )
    return done.stdout.strip()


def wg_genkey() -> str:
    return _wg("genkey")


def wg_pubkey(private_key: str) -> str:
    return _wg("pubkey", input=private_key + "\n")


def wg_genpsk() -> str:
    return _wg("genpsk")


def unique_ifname(prefix: str = "wgl") -> str:
    """An interface name unique across parallel runs: prefix, pid, a counter (<= 15 chars)."""
    name = f"{prefix}{os.getpid()}n{next(_ifcounter)}"
    if len(name) > IFNAMSIZ:
        raise ValueError(f"interface name {name!r} is longer than {IFNAMSIZ} characters")
    return name


@dataclass(frozen=True)
class PeerStatus:
    """One peer line of `wg show IF dump` (times in seconds since the epoch, 0 = never)."""

    public_key: str
    has_preshared_key: bool
    endpoint: str | None
    allowed_ips: tuple[str, ...]
    latest_handshake: int
    transfer_rx: int
    transfer_tx: int
    persistent_keepalive: int | None


@dataclass(frozen=True)
class InterfaceStatus:
    """`wg show IF dump`, without the private key it also prints."""

    public_key: str
    listen_port: int
    peers: dict[str, PeerStatus]


def _none_if(value: str, absent: str) -> str | None:
    return None if value == absent else value


def parse_dump(text: str) -> InterfaceStatus:
    """Parse `wg show IF dump`: one tab-separated interface line, then one line per peer."""
    lines = text.strip("\n").split("\n")
    _private, public, port, _fwmark = lines[0].split("\t")
    peers: dict[str, PeerStatus] = {}
    for line in lines[1:]:
        key, psk, endpoint, allowed, handshake, rx, tx, keepalive = line.split("\t")
        peers[key] = PeerStatus(
            public_key=key,
            has_preshared_key=psk != "(none)",
            endpoint=_none_if(endpoint, "(none)"),
            allowed_ips=() if allowed == "(none)" else tuple(allowed.split(",")),
            latest_handshake=int(handshake),
            transfer_rx=int(rx),
            transfer_tx=int(tx),
            persistent_keepalive=None if keepalive == "off" else int(keepalive),
        )
    return InterfaceStatus(public_key=public, listen_port=int(port), peers=peers)


class WireGuardGo:
    """A wireguard-go interface with a fresh key pair in ``ns``; ``stop()`` (or ``with``) ends it.

    ``log_path``: where wireguard-go's own (verbose) log goes; discarded when None.
    """

    def __init__(
        self,
        ns: Netns,
        *,
        log_path: Path | None = None,
        listen_port: int | None = None,
        prefix: str = "wgl",
    ) -> None:
        self.ns = ns
        self.ifname = unique_ifname(prefix)
        self.private_key = wg_genkey()
        self.public_key = wg_pubkey(self.private_key)
        self._log = open(log_path, "w") if log_path else None  # noqa: SIM115 - lives with proc
        env = dict(os.environ, WG_PROCESS_FOREGROUND="1", LOG_LEVEL="verbose")
        self.proc = ns.popen(
            ["wireguard-go", "-f", self.ifname],
            stdout=self._log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            wait_for(self._ready, 10, what=f"wireguard-go's interface {self.ifname}")
            self.wg("set", self.ifname, "private-key", "/dev/stdin", input=self.private_key)
            if listen_port is not None:
                self.set_listen_port(listen_port)
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"wireguard-go exited ({self.proc.returncode}) for {self.ifname}")
        return self.wg("show", self.ifname, check=False).returncode == 0

    @property
    def socket_path(self) -> Path:
        return UAPI_DIR / f"{self.ifname}.sock"

    def wg(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """`wg ARGS` inside the namespace (its UAPI socket is found by interface name)."""
        return self.ns.run("wg", *args, input=input, check=check, timeout=15)

    def set(self, *args: str) -> None:
        """`wg set IF ARGS`."""
        self.wg("set", self.ifname, *args)

    def setconf(self, conf: str) -> None:
        """`wg setconf IF` with a wg(8) config text (on stdin: it may hold keys)."""
        self.wg("setconf", self.ifname, "/dev/stdin", input=conf)

    def set_listen_port(self, port: int) -> None:
        self.set("listen-port", str(port))

    def add_peer(
        self,
        public_key: str,
        *,
        allowed_ips: Sequence[str] = ("0.0.0.0/0",),
        endpoint: str | None = None,
        persistent_keepalive: int | None = None,
        preshared_key: str | None = None,
    ) -> None:
        args = ["peer", public_key, "allowed-ips", ",".join(allowed_ips)]
        if endpoint is not None:
            args += ["endpoint", endpoint]
        if persistent_keepalive is not None:
            args += ["persistent-keepalive", str(persistent_keepalive)]
        if preshared_key is None:
            self.set(*args)
        else:
            self.wg("set", self.ifname, *args, "preshared-key", "/dev/stdin", input=preshared_key)

    def up(self, address: str, *, mtu: int = 1420, routes: Sequence[str] = ()) -> None:
        """Give the interface ``address``, bring it up, route ``routes`` (e.g. "default") to it."""
        self.ns.run("ip", "addr", "add", address, "dev", self.ifname)
        self.ns.run("ip", "link", "set", self.ifname, "mtu", str(mtu), "up")
        for route in routes:
            self.ns.run("ip", "route", "add", route, "dev", self.ifname)

    def dump(self) -> InterfaceStatus:
        return parse_dump(self.wg("show", self.ifname, "dump").stdout)

    def peer(self, public_key: str) -> PeerStatus:
        return self.dump().peers[public_key]

    def stop(self, timeout: float = 5.0) -> None:
        """End wireguard-go (TERM, then KILL) and remove its socket file, which a killed
        process leaves behind in the directory all namespaces share."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        if self._log is not None:
            self._log.close()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    def __enter__(self) -> WireGuardGo:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- the trivpn server of a lab ------------------------------------------------------------------

WG_PORT = 51820
SERVER_ADDRESS = "10.8.0.1/24"
# [wireguard] settings whose `trivpn peer add` prints a client config that reaches the server
# on the lab's WAN address and routes everything through it (no DNS: the lab has none).
ROUTE_ALL = {
    "public_endpoint": f"{SERVER_WAN}:{WG_PORT}",
    "client_dns": [],
    "client_allowed_ips": ["0.0.0.0/0"],
}
HANDSHAKE_WAIT = 40.0  # s: wireguard-go retries an unanswered handshake every 5 s
# s: a peer the server blocked, then let back: wireguard-go's own retry reconnects it (it
# handshakes again 15 s after the server stopped answering, then every 5 s)
RECONNECT_WAIT = 20.0


@dataclass(frozen=True)
class ServerKeys:
    """A server's key pair, made by `wg genkey` / `wg pubkey`."""

    private: str
    public: str

    @classmethod
    def generate(cls) -> ServerKeys:
        private = wg_genkey()
        return cls(private, wg_pubkey(private))


def _toml(value: object) -> str:
    # A JSON string, number, boolean or list of those is also a TOML value.
    return json.dumps(value)


def _settings(table: Mapping[str, object] | None) -> str:
    return "".join(f"{name} = {_toml(value)}\n" for name, value in (table or {}).items())


def peer_table(
    name: str,
    public_key: str,
    *allowed_ips: str,
    endpoint: str | None = None,
    policy: Mapping[str, object] | None = None,
) -> str:
    """One ``[[wireguard.peers]]`` table of a trivpn config; ``policy``: more keys of it
    (``{"quota": "4MiB/total", "rate_down": "20Mbit"}``)."""
    text = f"""
[[wireguard.peers]]
name = {_toml(name)}
public_key = {_toml(public_key)}
allowed_ips = {_toml(list(allowed_ips))}
"""
    settings: dict[str, object] = {"endpoint": endpoint} if endpoint else {}
    settings.update(policy or {})
    return text + _settings(settings)


def server_config(
    ifname: str,
    private_key: str | Path,
    *peers: str,
    addresses: Sequence[str] = (SERVER_ADDRESS,),
    port: int = WG_PORT,
    wireguard: Mapping[str, object] | None = None,
    state: Mapping[str, object] | None = None,
    extra: str = "",
) -> str:
    """The config of `trivpn serve` in a lab: TUN ``ifname`` with ``addresses``, the masquerade,
    the ``state`` settings (a fleet's database, node), WireGuard on ``port`` with
    ``private_key`` inline (a Path: the file it is read from) and the ``wireguard`` settings,
    then ``extra`` tables (toyvpn, metrics) and ``peers`` (peer_table).

    ``ifname`` must be unique (unique_ifname): the UAPI and control socket directories are
    shared by every namespace. The [state] dir is beside the config file, never the host's.
    """
    if isinstance(private_key, Path):
        key = f"private_key_file = {_toml(str(private_key))}"
    else:
        key = f"private_key = {_toml(private_key)}"
    settings = _settings(wireguard)
    return f"""
[interface]
name = {_toml(ifname)}
address = {_toml(list(addresses))}
mtu = 1420

[nat]
masquerade = true
egress = "auto"

[state]
dir = "state"  # beside this file: never the host's /var/lib/trivpn
{_settings(state)}
[wireguard]
enabled = true
listen = "0.0.0.0:{port}"
{key}
{settings}{extra}{"".join(peers)}"""


def connect_client(
    wg: WireGuardGo,
    server_public_key: str,
    address: str,
    *,
    allowed_ips: Sequence[str] = ("0.0.0.0/0",),
    with_endpoint: bool = True,
    port: int = WG_PORT,
) -> None:
    """Make the lab server ``wg``'s peer and route everything to it, ``wg`` being ``address``/32.

    Without the endpoint, ``wg`` cannot initiate, only answer. The server's UDP endpoint is
    on-link through eth0, so the default route into the tunnel does not swallow the tunnel's
    own datagrams.
    """
    server_ip = wg.ns.server_ip  # type: ignore[attr-defined]
    endpoint = f"{server_ip}:{port}" if with_endpoint else None
    wg.add_peer(server_public_key, allowed_ips=allowed_ips, endpoint=endpoint)
    wg.up(f"{address}/32", routes=("default",))


def apply_client_config(wg: WireGuardGo, text: str) -> str:
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
    return wg_pubkey(iface["PrivateKey"])


def reaches_internet(ns: Netns, count: int = 1) -> bool:
    """Does the lab's internet host answer ``count`` pings from ``ns`` (any of them)?"""
    done = ns.run("ping", "-c", str(count), "-i", "0.2", "-W", "1", INTERNET_HOST, check=False)
    return done.returncode == 0


def wait_online(ns: Netns) -> None:
    """Until ``ns`` reaches the internet host: through a tunnel, after its handshake."""
    wait_for(lambda: reaches_internet(ns), HANDSHAKE_WAIT, what=f"{ns.name} online")


PORT_TAKER = r"""
import socket, sys
s = socket.create_server(("127.0.0.1", int(sys.argv[1])))
print("listening", flush=True)
sys.stdin.read()
"""


class LabServer:
    """`trivpn serve` with WireGuard in ``ns``: its interface name, keys and config file (in
    ``work``), and `wg` / `trivpn` run beside it. ``kill()`` ends it and the sockets it left."""

    def __init__(self, ns: Netns, work: Path, *, prefix: str) -> None:
        self.ns = ns
        self.work = work
        self.ifname = unique_ifname(prefix)
        self.keys = ServerKeys.generate()
        self.config = work / "trivpn.toml"
        self.runs = 0
        self.proc: Trivpn | None = None

    @property
    def socket_path(self) -> Path:
        return UAPI_DIR / f"{self.ifname}.sock"

    @property
    def uapi_ready(self) -> str:
        """What the server logs once `wg` can reach it."""
        return f"uapi: `wg` can configure {self.ifname} through {self.socket_path}"

    def write_config(
        self,
        *peers: str,
        addresses: Sequence[str] = (SERVER_ADDRESS,),
        wireguard: Mapping[str, object] | None = None,
        state: Mapping[str, object] | None = None,
        extra: str = "",
    ) -> None:
        """server_config() for this server, in a 0600 file: it holds the private key."""
        text = server_config(
            self.ifname,
            self.keys.private,
            *peers,
            addresses=addresses,
            wireguard=wireguard,
            state=state,
            extra=extra,
        )
        self.config.write_text(text)
        os.chmod(self.config, 0o600)

    def start(self, *ready: str) -> Trivpn:
        """`trivpn serve`; returns once it logged each of ``ready`` and "trivpn serving"."""
        self.runs += 1
        log = self.work / f"server-{self.runs}.log"
        self.proc = Trivpn(self.ns, ["serve", "-c", str(self.config)], log)
        for line in (*ready, "trivpn serving"):
            self.proc.wait_log(line)
        return self.proc

    def wg(self, *args: str, input: str | None = None, check: bool = True) -> str:
        """`wg ARGS` in the server ns: its stdout, or with ``check=False`` its stderr."""
        done = self.ns.run("wg", *args, input=input, check=False, timeout=15)
        if check:
            assert done.returncode == 0, done.stderr
        return done.stdout if check else done.stderr

    def dump(self) -> InterfaceStatus:
        return parse_dump(self.wg("show", self.ifname, "dump"))

    def peer_json(self, name: str) -> dict[str, Any]:
        """`trivpn peer show NAME --json`: live from the server when it runs, else stored."""
        row: dict[str, Any] = json.loads(self.trivpn("peer", "show", name, "--json"))
        return row

    def trivpn(self, *args: str, timeout: float = 60) -> str:
        """`trivpn ARGS -c CONFIG` in the server ns; its stdout (it may hold a private key)."""
        done = self.ns.run(
            sys.executable, "-m", "trivpn", *args, "-c", str(self.config),
            check=False, timeout=timeout,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    def serve_with_port_taken(self, port: int, extra: str) -> subprocess.CompletedProcess[str]:
        """`trivpn serve` on its config plus ``extra`` while another process holds TCP ``port``
        on the namespace's 127.0.0.1: what a server that cannot listen there says."""
        taker = self.ns.popen(
            [sys.executable, "-c", PORT_TAKER, str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        try:
            assert taker.stdout is not None and taker.stdout.readline().strip() == "listening"
            self.write_config(extra=extra)
            return self.ns.run(
                sys.executable, "-m", "trivpn", "serve", "-c", str(self.config),
                check=False, timeout=30,
            )  # fmt: skip
        finally:
            taker.kill()
            taker.wait(10)

    def kill(self) -> None:
        """Kill the server if it runs; remove the sockets a kill leaves in the shared dirs."""
        if self.proc is not None:
            self.proc.kill()
        self.socket_path.unlink(missing_ok=True)
        status_socket.socket_path(self.ifname).unlink(missing_ok=True)
