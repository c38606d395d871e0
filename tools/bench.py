"""Benchmark trivpn in the namespace lab: ping RTT, iperf3 TCP throughput, CPU per process.

    client ns ──198.51.100.0/24── server ns ──203.0.113.0/24── internet ns (iperf3 -s)

Modes (each builds one lab and measures its scenarios in it):
  toyvpn     `trivpn serve` (ToyVPN on) and `trivpn toyvpn-connect` as the client
  baseline   no tunnel: the client routes via the server, which forwards and masquerades with a
             throwaway nft ruleset; the ceiling of the lab itself
  wireguard  a wireguard-go client (10.8.0.2/32) against `trivpn serve` (WireGuard on), then
             against wireguard-go as the server; the two alternate run by run in one lab, so
             both see the same machine noise, and the ratios trivpn/wireguard-go are printed
             (with --policy: trivpn with a rate limit and a quota that never bind, against
             trivpn without; the ratios policy/no policy are printed)
  all        toyvpn, baseline and wireguard
  scale      10,000 peers (config and registry): registry adds, RSS, time to serving, the
             time of status, a scrape and `wg show`, the worst ping RTT meanwhile (bench_scale)
  flood      --mode wireguard's two servers under paced 20 kpps junk floods (bad-mac1
             initiations, garbage, unknown indices) from a flood ns while iperf3 runs:
             throughput kept and pings lost (bench_flood)
  control    the time of status, a scrape and `wg show` (1,000 peers) and the worst ping RTT
             meanwhile, unflooded and under those floods (and one at 200 kpps), with the data
             path on its thread and on trio, taking turns (bench_control)
  handshakes completed responder handshakes per second over the wire from many initiators,
             and how long a legitimate peer takes to connect under a valid-mac1 initiation
             flood (cookies) (bench_handshakes)
  startup    the CLI's start-up: `genkey`, `peer add`, `peer list` as new processes, median of
             --runs runs each (default 5), no lab (bench_startup)
  wake       what one wake-up of a UDP echo costs over loopback, cold and warm, by how the
             server waits: a blocking thread, epoll, a trio task, two trio tasks (bench_wake)
Several scenarios in one run add ratio columns against the last one.

Usage: tools/bench [--mode toyvpn] [--runs 3] [--time 5] [--json FILE] [--policy]
       tools/bench --mode wireguard,toyvpn|flood --data-thread  (issue 12: trivpn as usual,
             its data path on its own thread; trivpn with it on trio; the reference; taking
             turns)
Everything lives in namespaces this tool creates and removes; no traffic leaves them.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support import iperf, netlab, wglab

from trivpn.net import nft

TOYVPN_PORT = 8000
IPERF_PORT = 5201
PING_COUNT = 50
# Seconds between pings: 20 ms leaves each one to find the machine idle and its caches cold,
# which decides the RTT here (docs/architecture.md, "Measured"); --ping-interval changes it.
PING_INTERVAL = 0.02
CLK_TCK = os.sysconf("SC_CLK_TCK")
MACHINE = "machine, all cores"  # every process and the kernel, this benchmark's or not


class BenchError(Exception):
    """A step of the benchmark failed; the message says which and why."""


def _ns_run(ns: netlab.Netns, *args: str, timeout: float = 30) -> str:
    result = ns.run(*args, check=False, timeout=timeout)
    if result.returncode != 0:
        raise BenchError(
            f"{' '.join(args)} in {ns.name}: {(result.stderr or result.stdout).strip()}"
        )
    return result.stdout


def _wait(predicate: Callable[[], object], timeout: float, what: str) -> None:
    netlab.wait_for(predicate, timeout=timeout, what=what)


def _listening(ns: netlab.Netns, proto: str, port: int) -> bool:
    out = ns.run("ss", "-H", f"-{proto}ln", f"sport = :{port}", check=False, timeout=5)
    return bool(out.stdout.strip())


def _pings(ns: netlab.Netns, target: str) -> bool:
    return ns.run("ping", "-c", "1", "-W", "1", target, check=False, timeout=5).returncode == 0


# -- scenarios: what carries the traffic ------------------------------------------------------


class Scenario(Protocol):
    """One way of connecting the client ns to the internet ns, set up in a lab.

    Alone in its group it is started once in a fresh lab. In a group of several, it is
    started and stopped once per round, so stop() must leave the lab as start() found it.
    """

    name: str

    def start(self, lab: netlab.Lab, work: Path) -> None:
        """Build the path; return once the client reaches the internet host through it."""

    def processes(self) -> dict[str, int]:
        """Label → pid of the processes whose CPU use the benchmark reports."""

    def stop(self) -> None:
        """Release what start() began (bounded); the lab teardown removes the rest."""


class Fixture(Protocol):
    """Lab state the scenarios of a group share (a VPN client), up for the whole group."""

    def start(self, lab: netlab.Lab, work: Path) -> None: ...

    def stop(self) -> None: ...


@dataclass
class Group:
    """Scenarios measured in one lab. With several, each round runs every one in turn (a, b,
    b, a, a, b, ...) so that all of them see the same machine noise."""

    scenarios: list[Scenario]
    fixtures: list[Fixture] = field(default_factory=list)


TOYVPN_CONFIG = """\
[interface]
name = "tvb0"
address = ["10.8.0.1/24"]
mtu = 1420

[nat]
masquerade = true
egress = "auto"

[toyvpn]
enabled = true
listen = "0.0.0.0:{port}"
secret_file = "{secret_file}"
pool = "10.8.0.128/25"
dns = ["192.0.2.53"]
routes = ["0.0.0.0/0"]
"""


DATA_THREAD_ENV = "TRIVPN_DATA_THREAD"  # trivpn.dataplane.data_thread.ENV_SWITCH


@contextmanager
def _data_thread(on: bool) -> Iterator[None]:
    """The environment of a `trivpn serve` started inside: its data path on its own OS
    thread if ``on`` (the default), else on trio (--data-thread's second trivpn). Set
    either way: the bench's own environment does not choose."""
    before = os.environ.pop(DATA_THREAD_ENV, None)
    os.environ[DATA_THREAD_ENV] = "1" if on else "0"
    try:
        yield
    finally:
        os.environ.pop(DATA_THREAD_ENV, None)
        if before is not None:
            os.environ[DATA_THREAD_ENV] = before


def _alive(proc: netlab.Trivpn | None) -> bool:
    """True while the process runs; a BenchError with its log once it has exited."""
    assert proc is not None
    if proc.proc.poll() is not None:
        raise BenchError(f"trivpn exited ({proc.proc.returncode}):\n{proc.log()}")
    return True


class ToyVpnScenario:
    """`trivpn serve` in the server ns, `trivpn toyvpn-connect` in the client ns."""

    def __init__(self, *, data_thread: bool = True) -> None:
        self.data_thread = data_thread
        self.name = "toyvpn" if data_thread else "toyvpn-trio"
        self.server: netlab.Trivpn | None = None
        self.client: netlab.Trivpn | None = None

    def start(self, lab: netlab.Lab, work: Path) -> None:
        # The secret travels in a 0600 file, never on a command line or in the output.
        secret_file = work / "toyvpn.secret"
        secret_file.touch(mode=0o600)
        secret_file.write_text(secrets.token_hex(16))
        config = work / "trivpn.toml"
        config.write_text(TOYVPN_CONFIG.format(port=TOYVPN_PORT, secret_file=secret_file))
        # Log level warning keeps logging off the hot path; readiness is read from the system.
        with _data_thread(self.data_thread):
            self.server = netlab.Trivpn(
                lab.server,
                ["--log-level", "warning", "serve", "-c", str(config)],
                work / "server.log",
            )
        _wait(
            lambda: _alive(self.server) and _listening(lab.server, "u", TOYVPN_PORT),
            15,
            "trivpn serve to listen",
        )
        client_ns = lab.clients[0]
        self.client = netlab.Trivpn(
            client_ns,
            [
                "--log-level",
                "warning",
                "toyvpn-connect",
                f"{netlab.SERVER_WAN}:{TOYVPN_PORT}",
                "--secret-file",
                str(secret_file),
                "--tun",
                "toyb0",
            ],
            work / "client.log",
        )
        _wait(
            lambda: _alive(self.client) and _pings(client_ns, netlab.INTERNET_HOST),
            15,
            "the client to reach the internet host through the tunnel",
        )

    def processes(self) -> dict[str, int]:
        assert self.server is not None and self.client is not None
        return {"server": self.server.proc.pid, "client (trivpn)": self.client.proc.pid}

    def stop(self) -> None:
        for proc in (self.client, self.server):
            if proc is None:
                continue
            try:
                proc.stop(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


BASELINE_RULESET = """\
table ip bench_baseline {
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "inet0" masquerade
    }
}
"""


class BaselineScenario:
    """Plain kernel forwarding and masquerade in the server ns: the lab's own ceiling."""

    name = "baseline"

    def start(self, lab: netlab.Lab, work: Path) -> None:
        client = lab.clients[0]
        _ns_run(client, "ip", "route", "add", "203.0.113.0/24", "via", netlab.SERVER_WAN)
        # Both are per-namespace: they vanish with the server ns.
        _ns_run(lab.server, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        result = lab.server.run("nft", "-f", "-", input=BASELINE_RULESET, check=False, timeout=10)
        if result.returncode != 0:
            raise BenchError(f"nft in {lab.server.name}: {result.stderr.strip()}")
        _wait(lambda: _pings(client, netlab.INTERNET_HOST), 10, "forwarding to work")

    def processes(self) -> dict[str, int]:
        return {}  # the kernel does the work; see the system-wide figure

    def stop(self) -> None:
        pass


class BareRelayScenario:
    """tools/bare_relay.py (epoll, one client, no checks) as the ToyVPN server; same client.

    The floor for trivpn's ToyVPN server: what the same lab, client and minute give without
    trio, sessions, routing, checks or batching in the server.
    """

    name = "bare-relay"

    def __init__(self) -> None:
        self.relay: subprocess.Popen[str] | None = None
        self.client: netlab.Trivpn | None = None
        self.lab: netlab.Lab | None = None

    def start(self, lab: netlab.Lab, work: Path) -> None:
        self.lab = lab
        secret_file = work / "relay.secret"
        secret_file.touch(mode=0o600)
        secret_file.write_text(secrets.token_hex(16))
        _ns_run(lab.server, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        result = lab.server.run("nft", "-f", "-", input=BASELINE_RULESET, check=False, timeout=10)
        if result.returncode != 0:
            raise BenchError(f"nft in {lab.server.name}: {result.stderr.strip()}")
        relay = str(Path(__file__).resolve().parent / "bare_relay.py")
        self.relay = lab.server.popen(
            [sys.executable, relay, "relay0", "10.8.0.1/24", str(TOYVPN_PORT), str(secret_file)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait(lambda: _listening(lab.server, "u", TOYVPN_PORT), 15, "the bare relay to listen")
        client_ns = lab.clients[0]
        self.client = netlab.Trivpn(
            client_ns,
            [
                "--log-level", "warning", "toyvpn-connect", f"{netlab.SERVER_WAN}:{TOYVPN_PORT}",
                "--secret-file", str(secret_file), "--tun", "toyb0",
            ],
            work / "relay-client.log",
        )  # fmt: skip
        _wait(
            lambda: _alive(self.client) and _pings(client_ns, netlab.INTERNET_HOST),
            15,
            "the client to reach the internet host through the bare relay",
        )

    def processes(self) -> dict[str, int]:
        assert self.relay is not None and self.client is not None
        return {"server": self.relay.pid, "client (trivpn)": self.client.proc.pid}

    def stop(self) -> None:
        if self.client is not None:
            try:
                self.client.stop(timeout=10)
            except subprocess.TimeoutExpired:
                self.client.kill()
        if self.relay is not None:
            self.relay.kill()
            self.relay.wait(10)
        if self.lab is not None:
            self.lab.server.run("nft", "delete", "table", "ip", "bench_baseline", check=False)
            self.lab.server.run("sysctl", "-qw", "net.ipv4.ip_forward=0", check=False)


# -- WireGuard: a wireguard-go client against trivpn and against wireguard-go ------------------

WG_TRIVPN_PORT = 51820
WG_GO_PORT = 51821
WG_SERVER_ADDRESS = "10.8.0.1/24"
WG_CLIENT_IP = "10.8.0.2"
WG_SUBNET = "10.8.0.0/24"
WG_NFT_TABLE = "bench_wg"


@contextmanager
def _wireguard_go_step(what: str) -> Iterator[None]:
    """wglab's failures (a dead wireguard-go, a refused `wg`/`ip`) as one BenchError line."""
    try:
        yield
    except subprocess.CalledProcessError as e:
        detail = (e.stderr or e.stdout or "").strip()
        raise BenchError(f"{what}: {' '.join(map(str, e.cmd))}: {detail}") from e
    except RuntimeError as e:
        raise BenchError(f"{what}: {e}") from e


def _stop_wireguard_go(wg: wglab.WireGuardGo) -> None:
    # Killed and still not reaped: the lab teardown removes its namespace anyway.
    with contextlib.suppress(subprocess.TimeoutExpired):
        wg.stop(timeout=10)


class WireGuardClient:
    """The wireguard-go client in the client ns, shared by both WireGuard scenarios: each
    points it at its own server with connect() and takes the peer away with disconnect()."""

    def __init__(self) -> None:
        self.wg: wglab.WireGuardGo | None = None
        self._peer: str | None = None

    def start(self, lab: netlab.Lab, work: Path) -> None:
        with _wireguard_go_step("the wireguard-go client"):
            self.wg = wglab.WireGuardGo(
                lab.clients[0], log_path=work / "wg-client.log", prefix="bwc"
            )
            # Only the internet host's subnet goes through the tunnel (no default route).
            self.wg.up(f"{WG_CLIENT_IP}/32", routes=("203.0.113.0/24",))

    @property
    def public_key(self) -> str:
        assert self.wg is not None
        return self.wg.public_key

    @property
    def pid(self) -> int:
        assert self.wg is not None
        return self.wg.proc.pid

    def connect(
        self, server_public_key: str, port: int, alive: Callable[[], bool], timeout: float = 15
    ) -> None:
        """Make the server the client's one peer; return once the internet host answers."""
        assert self.wg is not None and self._peer is None
        # A peer added afresh starts with a handshake, whatever the previous server left.
        with _wireguard_go_step("the wireguard-go client"):
            self.wg.add_peer(
                server_public_key,
                endpoint=f"{netlab.SERVER_WAN}:{port}",
                allowed_ips=(WG_SUBNET, "203.0.113.0/24"),
            )
        self._peer = server_public_key
        ns = self.wg.ns
        _wait(
            lambda: alive() and _pings(ns, netlab.INTERNET_HOST),
            timeout,
            "the WireGuard client to reach the internet host through the tunnel",
        )

    def disconnect(self) -> None:
        if self.wg is not None and self._peer is not None:
            peer, self._peer = self._peer, None
            with _wireguard_go_step("the wireguard-go client"):
                self.wg.set("peer", peer, "remove")

    def stop(self) -> None:
        if self.wg is not None:
            _stop_wireguard_go(self.wg)


# --policy: limits that never bind in a run (a few GB at most), so only their cost shows.
BENCH_POLICY = {"quota": "1TiB/total", "rate_down": "10Gbit", "rate_up": "10Gbit"}


class WireGuardTrivpnScenario:
    """`trivpn serve` with WireGuard on (ToyVPN off) and the wireguard-go client as its peer,
    a static peer with ``policy`` (keys of its ``[[wireguard.peers]]`` table) if given."""

    def __init__(
        self,
        client: WireGuardClient,
        policy: dict[str, str] | None = None,
        *,
        data_thread: bool = True,
    ) -> None:
        self.client = client
        self.policy = policy
        self.data_thread = data_thread
        self.name = "trivpn-wg" + ("+policy" if policy else "") + ("" if data_thread else "-trio")
        self.server: netlab.Trivpn | None = None
        # The UAPI socket directory is shared by every namespace: a name no parallel run uses.
        self.ifname = wglab.unique_ifname("tvwg")

    def start(self, lab: netlab.Lab, work: Path) -> None:
        # The key travels in a 0600 file, never on a command line or in the output.
        keys = wglab.ServerKeys.generate()
        self.public_key = keys.public
        key_file = work / "wg-trivpn.key"
        key_file.unlink(missing_ok=True)
        key_file.touch(mode=0o600)
        key_file.write_text(keys.private + "\n")
        config = work / "trivpn-wg.toml"
        client_peer = wglab.peer_table(
            "bench-client", self.client.public_key, f"{WG_CLIENT_IP}/32", policy=self.policy
        )
        config.write_text(
            wglab.server_config(
                self.ifname,
                key_file,
                client_peer,
                addresses=(WG_SERVER_ADDRESS,),
                port=WG_TRIVPN_PORT,
            )
        )
        # Log level warning keeps logging off the hot path; readiness is read from the system.
        with _data_thread(self.data_thread):
            server = self.server = netlab.Trivpn(
                lab.server,
                ["--log-level", "warning", "serve", "-c", str(config)],
                work / "server-wg.log",
            )
        _wait(
            lambda: _alive(server) and _listening(lab.server, "u", WG_TRIVPN_PORT),
            15,
            "trivpn serve to listen for WireGuard",
        )
        self.client.connect(keys.public, WG_TRIVPN_PORT, lambda: _alive(server))

    def processes(self) -> dict[str, int]:
        assert self.server is not None
        return {"server": self.server.proc.pid, "client wireguard-go": self.client.pid}

    def stop(self) -> None:
        self.client.disconnect()
        if self.server is not None:
            server, self.server = self.server, None
            try:
                server.stop(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()


class WireGuardGoScenario:
    """wireguard-go as the server, with forwarding and the masquerade trivpn would set up."""

    name = "wireguard-go"

    def __init__(self, client: WireGuardClient) -> None:
        self.client = client
        self.server: wglab.WireGuardGo | None = None
        self._ns: netlab.Netns | None = None
        self._forwarding: str | None = None
        self._nft = False

    def start(self, lab: netlab.Lab, work: Path) -> None:
        ns = self._ns = lab.server
        with _wireguard_go_step("wireguard-go as the server"):
            server = self.server = wglab.WireGuardGo(
                ns, log_path=work / "wg-server.log", listen_port=WG_GO_PORT, prefix="bws"
            )
            server.add_peer(self.client.public_key, allowed_ips=(f"{WG_CLIENT_IP}/32",))
            server.up(WG_SERVER_ADDRESS)
        # Per namespace, like trivpn's own: remembered and restored by stop().
        self._forwarding = _ns_run(ns, "sysctl", "-n", "net.ipv4.ip_forward").strip()
        _ns_run(ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        # trivpn's own ruleset builder, under another table name.
        ruleset = nft.build_ruleset([ipaddress.ip_network(WG_SUBNET)], "inet0", table=WG_NFT_TABLE)
        self._nft = True
        result = ns.run("nft", "-j", "-f", "-", input=json.dumps(ruleset), check=False, timeout=10)
        if result.returncode != 0:
            raise BenchError(f"nft in {ns.name}: {result.stderr.strip()}")

        def alive() -> bool:
            if server.proc.poll() is not None:
                raise BenchError(f"wireguard-go exited ({server.proc.returncode}) in {ns.name}")
            return True

        self.client.connect(server.public_key, WG_GO_PORT, alive)

    def processes(self) -> dict[str, int]:
        assert self.server is not None
        return {"server": self.server.proc.pid, "client wireguard-go": self.client.pid}

    def stop(self) -> None:
        self.client.disconnect()
        ns = self._ns
        if ns is not None and self._nft:
            self._nft = False
            ns.run("nft", "delete", "table", nft.FAMILY, WG_NFT_TABLE, check=False, timeout=10)
        if ns is not None and self._forwarding is not None:
            value, self._forwarding = self._forwarding, None
            ns.run("sysctl", "-qw", f"net.ipv4.ip_forward={value}", check=False, timeout=10)
        if self.server is not None:
            server, self.server = self.server, None
            _stop_wireguard_go(server)


def _wireguard_group() -> Group:
    client = WireGuardClient()
    return Group([WireGuardTrivpnScenario(client), WireGuardGoScenario(client)], [client])


def _data_thread_group(mode: str) -> Group:
    """--data-thread: trivpn as usual (its data path on its own thread), trivpn with the data
    path on trio, and the mode's reference, taking turns in one lab (issue 12)."""
    if mode == "toyvpn":
        return Group([ToyVpnScenario(), ToyVpnScenario(data_thread=False), BareRelayScenario()])
    client = WireGuardClient()
    return Group(
        [
            WireGuardTrivpnScenario(client),
            WireGuardTrivpnScenario(client, data_thread=False),
            WireGuardGoScenario(client),
        ],
        [client],
    )


def _policy_group() -> Group:
    """--policy: trivpn with BENCH_POLICY against trivpn without, taking turns in one lab."""
    client = WireGuardClient()
    return Group(
        [WireGuardTrivpnScenario(client, BENCH_POLICY), WireGuardTrivpnScenario(client)], [client]
    )


MODES: dict[str, Callable[[], Group]] = {
    "toyvpn": lambda: Group([ToyVpnScenario(), BareRelayScenario()]),
    "baseline": lambda: Group([BaselineScenario()]),
    "wireguard": _wireguard_group,
}
ALL_MODES = ("toyvpn", "baseline", "wireguard")  # what --mode all runs


# -- measurements -----------------------------------------------------------------------------


def _proc_ticks(pid: int) -> int | None:
    """utime + stime of a process (all its threads), in clock ticks; None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm (field 2) may hold spaces: split after its closing parenthesis.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


def _system_busy_ticks() -> int:
    """Non-idle ticks summed over all CPUs (so 100 per second per busy core)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    return sum(values) - values[3] - values[4]  # minus idle and iowait


@contextmanager
def cpu_sampler(pids: dict[str, int]) -> Iterator[dict[str, float]]:
    """Fills the yielded dict with each pid's CPU use over the block, in % of one core."""
    usage: dict[str, float] = {}
    start = {label: _proc_ticks(pid) for label, pid in pids.items()}
    system_start = _system_busy_ticks()
    t0 = time.monotonic()
    yield usage
    elapsed = time.monotonic() - t0
    for label, pid in pids.items():
        before, after = start[label], _proc_ticks(pid)
        if before is not None and after is not None:
            usage[label] = 100.0 * (after - before) / CLK_TCK / elapsed
    usage[MACHINE] = 100.0 * (_system_busy_ticks() - system_start) / CLK_TCK / elapsed


@dataclass
class PingResult:
    rtts_ms: list[float] = field(default_factory=list)
    sent: int = 0

    @property
    def loss_pct(self) -> float | None:
        return 100.0 * (self.sent - len(self.rtts_ms)) / self.sent if self.sent else None

    def add(self, other: PingResult) -> None:
        """Pool another round's pings into these."""
        self.rtts_ms += other.rtts_ms
        self.sent += other.sent


def measure_ping(
    client: netlab.Netns, target: str, count: int = PING_COUNT, interval: float = PING_INTERVAL
) -> PingResult:
    out = client.run(
        "ping",
        "-n",
        "-c",
        str(count),
        "-i",
        str(interval),
        "-W",
        "2",
        target,
        check=False,
        timeout=count * interval + 30,
    ).stdout
    return PingResult([float(m) for m in re.findall(r"time=([\d.]+)", out)], count)


@dataclass
class IperfRun:
    bits_per_second: float
    cpu: dict[str, float]


def iperf_once(
    client: netlab.Netns, target: str, seconds: int, reverse: bool, pids: dict[str, int]
) -> IperfRun:
    argv = iperf.client_argv(target, seconds, reverse=reverse, port=IPERF_PORT)
    for _ in range(iperf.BUSY_RETRIES):
        with cpu_sampler(pids) as cpu:
            result = client.run(*argv, check=False, timeout=seconds + 30)
        try:
            report = iperf.report_of(result)
        except iperf.IperfError as e:
            raise BenchError(str(e)) from e
        if report is not None:
            end = report["end"]
            # iperf3 measures its own two ends (getrusage over wall time: % of one core).
            cpu["iperf3 client"] = float(end["cpu_utilization_percent"]["host_total"])
            cpu["iperf3 server"] = float(end["cpu_utilization_percent"]["remote_total"])
            return IperfRun(iperf.received_bps(report), cpu)
        time.sleep(iperf.BUSY_WAIT)
    raise BenchError(f"iperf3: the server on port {IPERF_PORT} stayed busy")


@dataclass
class ScenarioResult:
    name: str
    ping: PingResult = field(default_factory=PingResult)
    upload: list[IperfRun] = field(default_factory=list)
    download: list[IperfRun] = field(default_factory=list)

    def metrics(self) -> dict[str, float | None]:
        """Flat, ordered metric name → value (None when not measured)."""
        rtts = self.ping.rtts_ms
        deciles = statistics.quantiles(rtts, n=10, method="inclusive") if len(rtts) > 1 else None
        out: dict[str, float | None] = {
            "ping median (ms)": statistics.median(rtts) if rtts else None,
            "ping p10 (ms)": deciles[0] if deciles else None,
            "ping p90 (ms)": deciles[8] if deciles else None,
            "ping loss (%)": self.ping.loss_pct,
        }
        for short, label, runs in (
            ("up", "client→internet", self.upload),
            ("down", "internet→client", self.download),
        ):
            mbps = statistics.median(r.bits_per_second for r in runs) / 1e6
            out[f"TCP {short}: {label} (Mbit/s)"] = mbps
            for who in sorted(runs[0].cpu, key=lambda w: w == MACHINE):
                samples = [r.cpu[who] for r in runs if who in r.cpu]
                out[f"  {short}: CPU {who} (% core)"] = (
                    statistics.median(samples) if samples else None
                )
        return out

    def raw(self) -> dict[str, Any]:
        return {
            "ping_rtts_ms": self.ping.rtts_ms,
            "ping_sent": self.ping.sent,
            "upload_runs": [vars(r) for r in self.upload],
            "download_runs": [vars(r) for r in self.download],
        }


def measure_round(
    scenario: Scenario,
    result: ScenarioResult,
    client: netlab.Netns,
    seconds: int,
    label: str,
    ping_interval: float = PING_INTERVAL,
) -> None:
    """One round for one scenario: the pings, then one iperf3 run each way."""
    print(f"bench: {scenario.name}: {label}: ping x{PING_COUNT}", flush=True)
    result.ping.add(measure_ping(client, netlab.INTERNET_HOST, interval=ping_interval))
    pids = scenario.processes()
    for reverse, sink in ((False, result.upload), (True, result.download)):
        direction = "internet→client" if reverse else "client→internet"
        print(f"bench: {scenario.name}: {label}: iperf3 {direction} ({seconds} s)", flush=True)
        sink.append(iperf_once(client, netlab.INTERNET_HOST, seconds, reverse, pids))


def run_group(
    group: Group, runs: int, seconds: int, work: Path, ping_interval: float = PING_INTERVAL
) -> list[ScenarioResult]:
    names = ", ".join(s.name for s in group.scenarios)
    print(f"bench: {names}: building the lab", flush=True)
    # Alone, a scenario starts once; several take turns, each started afresh every round.
    take_turns = len(group.scenarios) > 1
    with netlab.Lab("bn") as lab:
        fixtures: list[Fixture] = []
        running: Scenario | None = None
        try:
            for fixture in group.fixtures:
                fixtures.append(fixture)
                fixture.start(lab, work)
            with iperf.server(lab.internet, netlab.INTERNET_HOST, IPERF_PORT):
                results = [ScenarioResult(s.name) for s in group.scenarios]
                pairs = list(zip(group.scenarios, results, strict=True))
                for i in range(runs):
                    # every other round in reverse: neither goes first (or last) every time
                    for scenario, result in pairs if i % 2 == 0 else pairs[::-1]:
                        if running is None:
                            print(f"bench: {scenario.name}: starting", flush=True)
                            running = scenario
                            scenario.start(lab, work)
                        label = f"{i + 1}/{runs}"
                        client = lab.clients[0]
                        measure_round(scenario, result, client, seconds, label, ping_interval)
                        if take_turns:
                            running = None
                            scenario.stop()
                return results
        finally:
            if running is not None:
                running.stop()
            for fixture in reversed(fixtures):
                fixture.stop()


# -- output -----------------------------------------------------------------------------------


def _fmt(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if "(ms)" in metric else f"{value:.1f}"


def _row_order(metric: str) -> tuple[int, bool]:
    """Ping rows, then up, then down (for a stable sort), each section's machine row last:
    scenarios with different processes still share one row order."""
    head = metric.strip()
    section = 0 if head.startswith("ping") else 1 if head.startswith(("TCP up", "up:")) else 2
    return section, MACHINE in metric


def table(results: list[ScenarioResult]) -> str:
    """Metric rows, one column per scenario, then each scenario's ratio to the last one."""
    metrics = [r.metrics() for r in results]
    names = sorted(dict.fromkeys(k for m in metrics for k in m), key=_row_order)
    header = ["metric", *(r.name for r in results)]
    ref = results[-1].name
    header += [f"{r.name}/{ref}" for r in results[:-1]]
    rows = [header]
    for name in names:
        values = [m.get(name) for m in metrics]
        row = [name, *(_fmt(name, v) for v in values)]
        for v in values[:-1]:
            base = values[-1]
            row.append(f"{v / base:.2f}" if v is not None and base else "-")
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


# The figures a comparison is about: throughput each way and the round-trip time.
HEADLINE = {
    "up": "TCP up: client→internet (Mbit/s)",
    "down": "TCP down: internet→client (Mbit/s)",
    "RTT": "ping median (ms)",
}


def headline_ratios(results: list[ScenarioResult]) -> dict[str, float | None]:
    """The first scenario's headline figures over the last one's."""
    first, last = results[0].metrics(), results[-1].metrics()
    out: dict[str, float | None] = {}
    for short, metric in HEADLINE.items():
        a, b = first.get(metric), last.get(metric)
        out[short] = a / b if a is not None and b else None
    return out


def _run_own_lab(mode: str, runs: int, seconds: int, *, data_thread: bool = False) -> int:
    """--mode flood, control or handshakes: each module builds and measures its own lab."""
    work = Path(tempfile.mkdtemp(prefix=f"trivpn-bench-{mode}-"))
    try:
        if mode == "flood":
            import bench_flood

            bench_flood.run(runs, seconds, work, data_thread=data_thread)
        elif mode == "control":
            import bench_control

            bench_control.run(runs, work)
        else:
            import bench_handshakes

            bench_handshakes.run(runs, seconds, work)
    except (BenchError, TimeoutError, subprocess.TimeoutExpired) as e:
        print(f"bench: {e}\nbench: logs kept in {work}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nbench: interrupted; namespaces removed", file=sys.stderr)
        return 130
    shutil.rmtree(work, ignore_errors=True)
    return 0


def _given(option: str) -> bool:
    """Whether ``option`` is on the command line (a mode whose default differs from iperf3's)."""
    return any(arg == option or arg.startswith(option + "=") for arg in sys.argv[1:])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__[__doc__.index("Modes") : __doc__.index("Usage")].rstrip(),
    )
    parser.add_argument(
        "--mode",
        default="toyvpn",
        help=f"comma-separated, from: {', '.join(MODES)}, all (default toyvpn); or scale, "
        "startup, wake, flood, control or handshakes alone",
    )
    parser.add_argument("--runs", type=int, default=3, help="iperf3 runs per direction (median)")
    parser.add_argument("--time", type=int, default=5, help="seconds per iperf3 run")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the numbers here")
    parser.add_argument(
        "--policy",
        action="store_true",
        help="wireguard mode: trivpn with a rate limit and a quota far above what the run "
        "uses, against trivpn without (instead of against wireguard-go)",
    )
    parser.add_argument(
        "--data-thread",
        action="store_true",
        help="toyvpn, wireguard and flood modes: also trivpn with its data path on trio "
        f"({DATA_THREAD_ENV}=0), after trivpn as usual (its data path on its own thread)",
    )
    parser.add_argument(
        "--ping-interval",
        type=float,
        default=PING_INTERVAL,
        metavar="SECONDS",
        help=f"toyvpn, baseline and wireguard modes: between pings (default {PING_INTERVAL}; "
        "a few ms keeps the machine's caches warm)",
    )
    args = parser.parse_args()
    if args.mode == "startup":  # no lab, no root: see tools/bench_startup.py
        import bench_startup

        return bench_startup.run(args.runs if _given("--runs") else 5)
    if args.mode == "wake":  # loopback only, no lab, no root: see tools/bench_wake.py
        import bench_wake

        return bench_wake.run(bench_wake.COUNT)
    if args.mode in (
        "flood",
        "control",
        "handshakes",
    ):  # labs of their own: tools/bench_flood.py, …
        if args.data_thread and args.mode != "flood":
            parser.error("--data-thread: only with --mode toyvpn, wireguard or flood")
        if os.geteuid() != 0:
            print("bench: run as root (it builds network namespaces)", file=sys.stderr)
            return 1
        return _run_own_lab(args.mode, args.runs, args.time, data_thread=args.data_thread)
    if args.mode == "scale":  # a lab of its own, no iperf3: see tools/bench_scale.py
        if os.geteuid() != 0:
            print("bench: run as root (it builds network namespaces)", file=sys.stderr)
            return 1
        import bench_scale

        return bench_scale.run()
    chosen = [m.strip() for m in args.mode.split(",") if m.strip()]
    modes = list(dict.fromkeys(m for c in chosen for m in (ALL_MODES if c == "all" else [c])))
    unknown = [m for m in modes if m not in MODES]
    if not modes or unknown:
        parser.error(
            f"--mode: {', '.join(unknown) or 'empty'} — choose from {', '.join(MODES)}, all"
        )
    if args.policy and modes != ["wireguard"]:
        parser.error("--policy: only with --mode wireguard")
    if args.data_thread and (args.policy or not set(modes) <= {"toyvpn", "wireguard"}):
        parser.error("--data-thread: only with --mode toyvpn and/or wireguard, no --policy")
    if args.runs < 1 or args.time < 1:
        parser.error("--runs and --time must be at least 1")
    if not 0.002 <= args.ping_interval <= 1:
        parser.error(f"--ping-interval: {args.ping_interval:g} — between 0.002 and 1 s")
    if os.geteuid() != 0:
        print("bench: run as root (it builds network namespaces)", file=sys.stderr)
        return 1

    work = Path(tempfile.mkdtemp(prefix="trivpn-bench-"))
    by_mode: dict[str, list[ScenarioResult]] = {}
    keep_logs = False
    try:
        for mode in modes:
            if args.data_thread:
                group = _data_thread_group(mode)
            else:
                group = _policy_group() if args.policy else MODES[mode]()
            by_mode[mode] = run_group(group, args.runs, args.time, work, args.ping_interval)
    except (BenchError, TimeoutError, subprocess.TimeoutExpired) as e:
        keep_logs = True  # the trivpn logs are what explains a failed start
        print(f"bench: {e}\nbench: logs kept in {work}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nbench: interrupted; namespaces removed", file=sys.stderr)
        return 130
    finally:
        if not keep_logs:
            shutil.rmtree(work, ignore_errors=True)

    results = [r for group in by_mode.values() for r in group]
    # Only the scenarios that took turns in one lab are compared head to head.
    compared = {mode: group for mode, group in by_mode.items() if len(group) > 1}
    ratios = {mode: headline_ratios(group) for mode, group in compared.items()}
    print(
        f"\nbench: {args.runs} x {args.time} s per iperf3 direction (median), "
        f"{args.runs} x {PING_COUNT} pings {args.ping_interval:g} s apart, "
        f"{os.cpu_count()} CPUs; CPU in % of one core\n"
    )
    print(table(results))
    for mode, group in compared.items():
        figures = ", ".join(
            f"{short} {'-' if value is None else f'{value:.2f}'}"
            for short, value in ratios[mode].items()
        )
        print(f"\nbench: {mode}: {group[0].name} / {group[-1].name}: {figures}")
        if len(group) > 2:  # --data-thread: also the thread's gain over the trio data path
            figures = ", ".join(
                f"{short} {'-' if value is None else f'{value:.2f}'}"
                for short, value in headline_ratios(group[:2]).items()
            )
            print(f"bench: {mode}: {group[0].name} / {group[1].name} (thread/trio): {figures}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "modes": modes,
                    "runs": args.runs,
                    "time": args.time,
                    "cpus": os.cpu_count(),
                    "ratios": {
                        mode: {"of": group[0].name, "to": group[-1].name, **ratios[mode]}
                        for mode, group in compared.items()
                    },
                    "scenarios": {
                        r.name: {"metrics": r.metrics(), "raw": r.raw()} for r in results
                    },
                },
                indent=2,
            )
            + "\n"
        )
        print(f"\nbench: numbers written to {args.json}")
    return 0


if __name__ == "__main__":
    # A second Ctrl-C must not cut the teardown short: the first one already unwinds it.
    def _interrupt_once(signum: int, frame: object) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, _interrupt_once)
    sys.modules["bench"] = sys.modules[__name__]  # one module for bench_flood & co. to import
    sys.exit(main())
