"""`tools/bench --mode control`: the control plane's calls under a junk flood, with the data
path on its own thread and on trio (issue 12: is the data thread's lock fair to trio?).

A wireguard-go client pings the internet host through `trivpn serve` (PEERS peers in its
config) every 10 ms while a probe in the server ns times `trivpn status`'s request on the
control socket, a metrics scrape and `wg show dump`, CALLS times each, first unflooded, then
while a flood ns sends one kind of junk (tools/bench_floodgen.py) at the server's port. The
two servers (TRIVPN_DATA_THREAD=1 and =0) take turns in one lab, round by round.
Everything lives in namespaces this tool creates and removes; no traffic leaves them.
"""

from __future__ import annotations

import ipaddress
import json
import statistics
import sys
import time
from pathlib import Path

import bench
import bench_flood
from support import netlab, wglab

PEERS = 1_000
CALLS = 5
METRICS = "127.0.0.1:9589"
FLOODS = (("none", 0), *((kind, bench_flood.FLOOD_RATE) for kind in bench_flood.FLOODS))
# plus one as fast as the generator can go: a socket that is (almost) always readable
FLOODS += (("garbage", 200_000),)
VARIANTS = (("thread", True), ("trio", False))  # the data path on its own thread or not
CLIENT_IP = "10.8.0.2"

PROBE = """
import json, subprocess, sys, time, urllib.request
from trivpn.control.status_client import query_status, socket_path
ifname, calls, metrics = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def status(): query_status(socket_path(ifname))
def scrape():
    with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=60) as r: r.read()
def wg_show(): subprocess.run(["wg", "show", ifname, "dump"], check=True, capture_output=True)
took = {"status": [], "scrape": [], "wg show": []}
for _ in range(calls):
    for name, call in (("status", status), ("scrape", scrape), ("wg show", wg_show)):
        t = time.perf_counter(); call(); took[name].append(time.perf_counter() - t)
print(json.dumps(took))
"""


def _peers(count: int) -> str:
    base = int(ipaddress.IPv4Address("10.8.128.0"))
    return "".join(
        wglab.peer_table(
            f"p{i}", wglab.ServerKeys.generate().public, f"{ipaddress.IPv4Address(base + i)}/32"
        )
        for i in range(1, count)
    )


def _measure(
    server: wglab.LabServer, client: netlab.Netns, flood_ns: netlab.Netns, kind: str, rate: int
) -> tuple[dict[str, list[float]], float, int, int]:
    """One probe (CALLS of each call) under ``kind`` at ``rate`` (none: unflooded): the
    seconds each call took, the worst ping RTT (ms), pings answered and sent."""
    generator = None
    if kind != "none":
        generator = bench_flood.start_flood(flood_ns, kind, wglab.WG_PORT, 60, rate=rate)
        time.sleep(0.5)  # the flood under way
    took: dict[str, list[float]] = {}

    def probe() -> None:
        done = server.ns.run(
            sys.executable, "-c", PROBE, server.ifname, str(CALLS), METRICS, timeout=300
        )
        took.update(json.loads(done.stdout))

    try:
        rtts, sent = netlab.ping_while(client, netlab.INTERNET_HOST, probe, wait=3)
    finally:
        if generator is not None:
            generator.kill()
            generator.communicate(timeout=10)
    return took, max(rtts, default=float("nan")), len(rtts), sent


def run(runs: int, work: Path) -> int:
    # (variant, flood label) -> call -> seconds of every call over the rounds
    times: dict[tuple[str, str], dict[str, list[float]]] = {}
    worst: dict[tuple[str, str], list[float]] = {}
    answered: dict[tuple[str, str], list[int]] = {}
    peers = _peers(PEERS)
    print("bench: control: building the lab", flush=True)
    with netlab.Lab("tvbc", clients=2) as lab:
        client, flood_ns = lab.clients
        wg = wglab.WireGuardGo(client, prefix="bcc")
        server = wglab.LabServer(lab.server, work, prefix="tvbc")
        try:
            wglab.connect_client(wg, server.keys.public, CLIENT_IP)
            server.write_config(
                wglab.peer_table("client", wg.public_key, f"{CLIENT_IP}/32"),
                peers,
                addresses=("10.8.0.1/16",),
                extra=f'\n[metrics]\nlisten = "{METRICS}"\n',
            )
            for i in range(runs):
                for variant, on in VARIANTS if i % 2 == 0 else VARIANTS[::-1]:
                    print(f"bench: control: {i + 1}/{runs}: {variant}: starting", flush=True)
                    with bench._data_thread(on):  # the server inherits it
                        server.start()
                    try:
                        wglab.wait_online(client)
                        for kind, rate in FLOODS:
                            label = kind if not rate else f"{kind} {rate // 1000} kpps"
                            print(f"bench: control: {variant}: {label}", flush=True)
                            took, rtt, got, sent = _measure(server, client, flood_ns, kind, rate)
                            key = (variant, label)
                            for name, seconds in took.items():
                                times.setdefault(key, {}).setdefault(name, []).extend(seconds)
                            worst.setdefault(key, []).append(rtt)
                            answered.setdefault(key, [0, 0])
                            answered[key][0] += got
                            answered[key][1] += sent
                    finally:
                        server.kill()
        finally:
            wg.stop()
    labels = list(dict.fromkeys(label for _variant, label in times))
    print(
        f"\nbench: control: {runs} rounds, {PEERS} peers, {CALLS} calls of each per round and "
        "flood; ms: median / max over all calls; ping every 10 ms: worst RTT, median of rounds"
    )
    rows = [["flood", "call", *(f"{v} med / max" for v, _ in VARIANTS), "thread/trio (med)"]]
    for label in labels:
        for name in ("status", "scrape", "wg show"):
            cells = []
            medians = []
            for variant, _ in VARIANTS:
                values = times[(variant, label)][name]
                medians.append(statistics.median(values))
                cells.append(f"{1000 * medians[-1]:.1f} / {1000 * max(values):.1f}")
            rows.append([label, name, *cells, f"{medians[0] / medians[1]:.2f}"])
        cells = []
        for variant, _ in VARIANTS:
            got, sent = answered[(variant, label)]
            cells.append(f"{statistics.median(worst[(variant, label)]):.1f} ({got}/{sent})")
        rows.append([label, "ping worst (answered)", *cells, ""])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    return 0
