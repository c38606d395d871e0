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
"""

from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from netlab import Netns, wait_for

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
