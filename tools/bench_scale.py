"""`tools/bench --mode scale`: trivpn with 10,000 peers, half in the config file and half in
the peer registry, in the namespace lab (a wireguard-go client at 10.8.0.2 as one of them).

Measured: 10,000 `Registry.add` calls in a scratch file (total, and the mean of the first and
the last hundred; each commit is synchronous=FULL, so the disk's flush is most of it),
the server's RSS and its time to serving and to every registry peer applied, the time of
`trivpn status --json`, a metrics scrape and `wg show dump`, and the worst ping RTT through
the tunnel (a ping every 10 ms) while those run, against the worst while idle.
Everything lives in namespaces this tool creates and removes; no traffic leaves them.
"""

from __future__ import annotations

import ipaddress
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support import netlab, wglab

from trivpn.proto.wireguard import crypto, encode_key
from trivpn.registry.store import AddressPlan, Registry, registry_path

PEERS = 10_000
METRICS = "127.0.0.1:9588"
SUBNET = ipaddress.IPv4Network("10.8.0.0/16")
STATIC = ipaddress.IPv4Network("10.8.128.0/17")  # the config's peers; the registry's below
SCRAPE = f"""
import urllib.request
with urllib.request.urlopen("http://{METRICS}/metrics", timeout=60) as r:
    r.read()
"""


def key(i: int) -> bytes:
    return crypto.public_key(crypto.clamp(i.to_bytes(4, "little") * 8))


def registry_adds(path: Path, count: int, first: int) -> tuple[float, float, float]:
    """``count`` adds through the registry API: total seconds, ms per add of the first and
    the last hundred."""
    plan = AddressPlan(subnets=(SUBNET,), reserved=(ipaddress.ip_network("10.8.0.0/24"), STATIC))
    times: list[float] = []
    with Registry.open(path) as registry:
        start = time.perf_counter()
        for i in range(first, first + count):
            t = time.perf_counter()
            registry.add(f"r{i}", key(i), None, plan)
            times.append(time.perf_counter() - t)
        total = time.perf_counter() - start
    return total, 1000 * sum(times[:100]) / 100, 1000 * sum(times[-100:]) / 100


def static_peers(count: int) -> str:
    """``count`` config peers in STATIC (the registry's come from 10.8.1.0 up)."""
    base = int(STATIC.network_address)
    return "".join(
        wglab.peer_table(f"s{i}", encode_key(key(i)), f"{ipaddress.IPv4Address(base + i)}/32")
        for i in range(1, count + 1)
    )


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    return int(match.group(1)) / 1024 if match else float("nan")


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def ping_while(ns: netlab.Netns, work: Callable[[], None]) -> tuple[float, int, int]:
    """The worst RTT (ms) of a ping every 10 ms while ``work()`` runs; answers, requests."""
    rtts, sent = netlab.ping_while(ns, netlab.INTERNET_HOST, work, wait=3)
    return max(rtts, default=float("nan")), len(rtts), sent


def run(peers: int = PEERS) -> int:
    rows: list[tuple[str, str]] = []
    work = Path(tempfile.mkdtemp(prefix="trivpn-bench-scale-"))
    state = work / "state"
    in_config, in_registry = peers // 2, peers - peers // 2
    total, first, last = registry_adds(work / "scratch" / "peers.db", peers, 100_000)
    rows.append((f"registry: {peers} adds (a scratch file)", f"{total:.1f} s"))
    rows.append(("registry: ms per add, first / last 100", f"{first:.2f} / {last:.2f}"))
    registry_adds(registry_path(state), in_registry, 100_000)  # the server's

    with netlab.Lab("tvbs") as lab:
        (client_ns,) = lab.clients
        server = wglab.LabServer(lab.server, work, prefix="tvbs")
        wg = wglab.WireGuardGo(client_ns, prefix="bsc")
        try:
            wglab.connect_client(wg, server.keys.public, "10.8.0.2")
            server.write_config(
                wglab.peer_table("client", wg.public_key, "10.8.0.2/32"),
                static_peers(in_config - 1),
                addresses=("10.8.0.1/16",),
                extra=f'\n[metrics]\nlisten = "{METRICS}"\n',
            )
            start = time.perf_counter()
            proc = server.start()
            rows.append(("server: time to serving", f"{time.perf_counter() - start:.2f} s"))
            netlab.wait_for(
                lambda: server.wg("show", server.ifname, "peers").count("\n") >= peers,
                120,
                what="every registry peer applied",
            )
            rows.append(("server: time to all peers", f"{time.perf_counter() - start:.2f} s"))
            wglab.wait_online(client_ns)
            rows.append(("server: RSS", f"{rss_mb(proc.proc.pid):.0f} MB"))
            idle, idle_got, idle_sent = ping_while(client_ns, lambda: time.sleep(2))
            took: dict[str, float] = {}

            def control() -> None:
                took["status"] = timed(lambda: server.trivpn("status", "--json", timeout=120))
                took["scrape"] = timed(
                    lambda: server.ns.run(sys.executable, "-c", SCRAPE, timeout=120)
                )
                took["wg show"] = timed(lambda: server.wg("show", server.ifname, "dump"))

            busy, busy_got, busy_sent = ping_while(client_ns, control)
            for name, seconds in took.items():
                rows.append((f"time: {name}", f"{seconds * 1000:.0f} ms"))
            rows.append(("ping every 10 ms: worst RTT idle", f"{idle:.1f} ms"))
            rows.append(("ping: worst RTT during status, scrape, wg show", f"{busy:.1f} ms"))
            rows.append(
                ("ping: answered idle / busy", f"{idle_got}/{idle_sent}, {busy_got}/{busy_sent}")
            )
        finally:
            server.kill()
            wg.stop()
    width = max(len(name) for name, _ in rows)
    print(
        f"\nbench scale: {peers} peers ({in_config} in the config, {in_registry} in the registry)"
    )
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    return 0
