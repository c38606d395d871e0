"""`tools/bench --mode flood`: TCP throughput kept, and pings lost, under paced junk floods.

The wireguard-go client in the client ns runs iperf3 each way through the server while a
second client ns (the flood ns, its own link to the server) sends FLOOD_RATE datagrams a
second of one kind of junk (tools/bench_floodgen.py) at the server's port, and the client
pings the internet host every PING_INTERVAL s. trivpn and wireguard-go as the server take
turns in one lab, as in --mode wireguard (with --data-thread, trivpn with its data path
on trio too). Each round measures both directions unflooded,
then under each flood; "kept" is a flooded run over the unflooded run of the same round.
The unflooded rows are the bulk transfer alone. UdpRcvbufErrors (of the client's and the
server's namespace, /proc/net/snmp) count the datagrams a full socket buffer dropped: where
the pings are lost.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import bench
from support import iperf, netlab

FLOOD_RATE = 20_000
FLOODS = ("bad-mac1", "garbage", "unknown-index")
PING_INTERVAL = 0.1
GENERATOR = str(Path(__file__).resolve().parent / "bench_floodgen.py")
DIRECTIONS = (("up", False), ("down", True))


@dataclass
class FloodResult:
    name: str
    # (flood or "none", "up"/"down") -> Mbit/s of each round
    mbps: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    # (flood or "none", "up"/"down") -> (pings lost, pings sent), summed over rounds
    pings: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    # (ns "client"/"server", flood or "none", "up"/"down") -> that ns's UDP RcvbufErrors
    # in each round's run
    rcvbuf_errors: dict[tuple[str, str, str], list[int]] = field(default_factory=dict)

    def kept(self, flood: str, direction: str) -> list[float]:
        """Per round: % of the same round's unflooded throughput."""
        base = self.mbps[("none", direction)]
        flooded = self.mbps[(flood, direction)]
        return [100.0 * f / b for f, b in zip(flooded, base, strict=True) if b]


def _port(scenario: object) -> int:
    return (
        bench.WG_GO_PORT
        if scenario.__class__.__name__ == "WireGuardGoScenario"
        else (bench.WG_TRIVPN_PORT)
    )


def start_flood(
    ns: netlab.Netns,
    kind: str,
    port: int,
    seconds: float,
    key: str | None = None,
    *,
    rate: int = FLOOD_RATE,
) -> subprocess.Popen[str]:
    """bench_floodgen.py in ``ns`` toward the server's address on that ns's link, ``rate``
    datagrams a second."""
    host = ns.server_ip  # type: ignore[attr-defined]
    args = [sys.executable, GENERATOR, kind, host, str(port), str(rate), str(seconds)]
    return ns.popen(
        [*args, *([key] if key else [])], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def _start_ping(ns: netlab.Netns, seconds: float) -> subprocess.Popen[str]:
    count = str(int(seconds / PING_INTERVAL))
    args = ["ping", "-n", "-q", "-c", count, "-i", str(PING_INTERVAL), "-W", "1"]
    return ns.popen([*args, netlab.INTERNET_HOST], stdout=subprocess.PIPE)


def _ping_counts(proc: subprocess.Popen[str]) -> tuple[int, int]:
    out, _ = proc.communicate(timeout=30)
    for line in out.splitlines():
        if "packets transmitted" in line:
            sent, received = (int(part.split()[0]) for part in line.split(",")[:2])
            return sent - received, sent
    raise bench.BenchError(f"ping printed no summary: {out.strip()}")


def udp_rcvbuf_errors(ns: netlab.Netns) -> int:
    """The namespace's count of UDP datagrams dropped because a socket's buffer was full."""
    lines = [line.split() for line in ns.run("cat", "/proc/net/snmp").stdout.splitlines()]
    header, values = (line for line in lines if line and line[0] == "Udp:")
    return int(values[header.index("RcvbufErrors")])


def measure(
    scenario: bench.Scenario, result: FloodResult, lab: netlab.Lab, seconds: int, label: str
) -> None:
    client, flood_ns = lab.clients[0], lab.clients[1]
    pids = scenario.processes()
    for flood in ("none", *FLOODS):
        for direction, reverse in DIRECTIONS:
            print(f"bench: {scenario.name}: {label}: {flood}: iperf3 {direction}", flush=True)
            generator = None
            if flood != "none":
                generator = start_flood(flood_ns, flood, _port(scenario), seconds + 1.5)
            ping = _start_ping(client, seconds)
            sides = {"client": client, "server": lab.server}
            overflows = {side: udp_rcvbuf_errors(ns) for side, ns in sides.items()}
            try:
                run = bench.iperf_once(client, netlab.INTERNET_HOST, seconds, reverse, pids)
            finally:
                lost, sent = _ping_counts(ping)
                if generator is not None:
                    _out, err = generator.communicate(timeout=30)
                    if generator.returncode != 0:
                        raise bench.BenchError(f"the {flood} flood failed: {err.strip()}")
            for side, ns in sides.items():
                key = (side, flood, direction)
                errors = udp_rcvbuf_errors(ns) - overflows[side]
                result.rcvbuf_errors.setdefault(key, []).append(errors)
            result.mbps.setdefault((flood, direction), []).append(run.bits_per_second / 1e6)
            counts = result.pings.setdefault((flood, direction), [0, 0])
            counts[0] += lost
            counts[1] += sent


def _fmt_runs(values: list[float], fmt: str) -> str:
    return f"{format(statistics.median(values), fmt)} [{', '.join(format(v, fmt) for v in values)}]"


def table(results: list[FloodResult]) -> str:
    rows = [["measure", *(r.name for r in results)]]
    for direction, _ in DIRECTIONS:
        rows.append(
            [f"TCP {direction} unflooded (Mbit/s)"]
            + [_fmt_runs(r.mbps[("none", direction)], ".0f") for r in results]
        )
    for flood in FLOODS:
        for direction, _ in DIRECTIONS:
            rows.append(
                [f"kept {direction} under {FLOOD_RATE // 1000} kpps {flood} (%)"]
                + [_fmt_runs(r.kept(flood, direction), ".0f") for r in results]
            )
    for side in ("client", "server"):
        for flood in ("none", *FLOODS):
            for direction, _ in DIRECTIONS:
                key = (side, flood, direction)
                rows.append(
                    [f"{side} UdpRcvbufErrors, {direction}, {flood}"]
                    + [_fmt_runs([float(v) for v in r.rcvbuf_errors[key]], ".0f") for r in results]
                )
    for flood in ("none", *FLOODS):
        for direction, _ in DIRECTIONS:
            rows.append(
                [f"pings lost, bulk {direction}{' alone' if flood == 'none' else ', ' + flood}"]
                + ["{} of {}".format(*r.pings[(flood, direction)]) for r in results]
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def run(runs: int, seconds: int, work: Path, *, data_thread: bool = False) -> list[FloodResult]:
    """``data_thread`` (--data-thread): trivpn with its data path on trio too."""
    client = bench.WireGuardClient()
    scenarios: list[bench.Scenario] = [
        bench.WireGuardTrivpnScenario(client),
        *([bench.WireGuardTrivpnScenario(client, data_thread=False)] if data_thread else []),
        bench.WireGuardGoScenario(client),
    ]
    results = [FloodResult(s.name) for s in scenarios]
    pairs = list(zip(scenarios, results, strict=True))
    print("bench: flood: building the lab", flush=True)
    with netlab.Lab("bf", clients=2) as lab:
        client.start(lab, work)
        try:
            with iperf.server(lab.internet, netlab.INTERNET_HOST, bench.IPERF_PORT):
                for i in range(runs):
                    for scenario, result in pairs if i % 2 == 0 else pairs[::-1]:
                        print(f"bench: {scenario.name}: starting", flush=True)
                        scenario.start(lab, work)
                        try:
                            measure(scenario, result, lab, seconds, f"{i + 1}/{runs}")
                        finally:
                            scenario.stop()
        finally:
            client.stop()
    print(
        f"\nbench: flood: {runs} rounds x {seconds} s per iperf3 run; median [each round]; "
        f"kept = flooded / unflooded in the same round; a ping every {PING_INTERVAL} s\n"
    )
    print(table(results))
    return results
