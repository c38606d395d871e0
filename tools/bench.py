"""Benchmark trivpn in the namespace lab: ping RTT, iperf3 TCP throughput, CPU per process.

    client ns ──198.51.100.0/24── server ns ──203.0.113.0/24── internet ns (iperf3 -s)

Modes (each is a list of scenarios; every scenario gets a fresh lab and the same measurements):
  toyvpn    `trivpn serve` (ToyVPN on) and `trivpn toyvpn-connect` as the client
  baseline  no tunnel: the client routes via the server, which forwards and masquerades with a
            throwaway nft ruleset; the ceiling of the lab itself
Several modes in one run (`--mode toyvpn,baseline`) add ratio columns against the last one.
A WireGuard mode plugs in as two scenarios (wireguard-go client against trivpn, and against
wireguard-go as the server), so its table compares them side by side.

Usage: tools/bench [--mode toyvpn] [--runs 3] [--time 5] [--json FILE]
Everything lives in namespaces this tool creates and removes; no traffic leaves them.
"""

from __future__ import annotations

import argparse
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

import netlab

TOYVPN_PORT = 8000
IPERF_PORT = 5201
PING_COUNT = 50
PING_INTERVAL = "0.02"
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
    """One way of connecting the client ns to the internet ns, set up in a fresh lab."""

    name: str

    def start(self, lab: netlab.Lab, work: Path) -> None:
        """Build the path; return once the client reaches the internet host through it."""

    def processes(self) -> dict[str, int]:
        """Label → pid of the processes whose CPU use the benchmark reports."""

    def stop(self) -> None:
        """Release what start() began (bounded); the lab teardown removes the rest."""


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


class ToyVpnScenario:
    """`trivpn serve` in the server ns, `trivpn toyvpn-connect` in the client ns."""

    name = "toyvpn"

    def __init__(self) -> None:
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
        self.server = netlab.Trivpn(
            lab.server,
            ["--log-level", "warning", "serve", "-c", str(config)],
            work / "server.log",
        )
        _wait(
            lambda: self._alive(self.server) and _listening(lab.server, "u", TOYVPN_PORT),
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
            lambda: self._alive(self.client) and _pings(client_ns, netlab.INTERNET_HOST),
            15,
            "the client to reach the internet host through the tunnel",
        )

    @staticmethod
    def _alive(proc: netlab.Trivpn | None) -> bool:
        assert proc is not None
        if proc.proc.poll() is not None:
            raise BenchError(f"trivpn exited ({proc.proc.returncode}):\n{proc.log()}")
        return True

    def processes(self) -> dict[str, int]:
        assert self.server is not None and self.client is not None
        return {"trivpn server": self.server.proc.pid, "trivpn client": self.client.proc.pid}

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


MODES: dict[str, Callable[[], list[Scenario]]] = {
    "toyvpn": lambda: [ToyVpnScenario()],
    "baseline": lambda: [BaselineScenario()],
}


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
    rtts_ms: list[float]
    sent: int

    @property
    def loss_pct(self) -> float:
        return 100.0 * (self.sent - len(self.rtts_ms)) / self.sent


def measure_ping(client: netlab.Netns, target: str, count: int = PING_COUNT) -> PingResult:
    out = client.run(
        "ping",
        "-n",
        "-c",
        str(count),
        "-i",
        PING_INTERVAL,
        "-W",
        "2",
        target,
        check=False,
        timeout=count * 0.02 + 30,
    ).stdout
    return PingResult([float(m) for m in re.findall(r"time=([\d.]+)", out)], count)


@dataclass
class IperfRun:
    bits_per_second: float
    cpu: dict[str, float]


def iperf_once(
    client: netlab.Netns, target: str, seconds: int, reverse: bool, pids: dict[str, int]
) -> IperfRun:
    argv = ["iperf3", "-c", target, "-p", str(IPERF_PORT), "-t", str(seconds), "-J"]
    if reverse:
        argv.append("-R")
    for attempt in range(3):
        with cpu_sampler(pids) as cpu:
            result = client.run(*argv, check=False, timeout=seconds + 30)
        try:
            report: dict[str, Any] = json.loads(result.stdout)
        except json.JSONDecodeError as e:
            raise BenchError(f"iperf3 gave no JSON: {result.stderr.strip()}") from e
        error = report.get("error")
        if error is None:
            end = report["end"]
            # iperf3 measures its own two ends (getrusage over wall time: % of one core).
            cpu["iperf3 client"] = float(end["cpu_utilization_percent"]["host_total"])
            cpu["iperf3 server"] = float(end["cpu_utilization_percent"]["remote_total"])
            return IperfRun(float(end["sum_received"]["bits_per_second"]), cpu)
        # The server takes a moment to accept the next test after one ends.
        if "busy" not in str(error) or attempt == 2:
            raise BenchError(f"iperf3: {error}")
        time.sleep(0.5)
    raise AssertionError("unreachable")


@dataclass
class ScenarioResult:
    name: str
    ping: PingResult
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


def run_scenario(scenario: Scenario, runs: int, seconds: int, work: Path) -> ScenarioResult:
    print(f"bench: {scenario.name}: building the lab", flush=True)
    with netlab.Lab("bn") as lab:
        iperf_server = None
        try:
            scenario.start(lab, work)
            iperf_server = lab.internet.popen(
                ["iperf3", "-s", "-B", netlab.INTERNET_HOST, "-p", str(IPERF_PORT)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            _wait(lambda: _listening(lab.internet, "t", IPERF_PORT), 10, "iperf3 -s")
            client = lab.clients[0]
            print(f"bench: {scenario.name}: ping x{PING_COUNT}", flush=True)
            result = ScenarioResult(scenario.name, measure_ping(client, netlab.INTERNET_HOST))
            pids = scenario.processes()
            for reverse, sink in ((False, result.upload), (True, result.download)):
                for i in range(runs):
                    direction = "internet→client" if reverse else "client→internet"
                    print(
                        f"bench: {scenario.name}: iperf3 {direction} run {i + 1}/{runs} "
                        f"({seconds} s)",
                        flush=True,
                    )
                    sink.append(iperf_once(client, netlab.INTERNET_HOST, seconds, reverse, pids))
            return result
        finally:
            if iperf_server is not None:
                iperf_server.kill()
                iperf_server.wait(10)
            scenario.stop()


# -- output -----------------------------------------------------------------------------------


def _fmt(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if "(ms)" in metric else f"{value:.1f}"


def table(results: list[ScenarioResult]) -> str:
    """Metric rows, one column per scenario, then each scenario's ratio to the last one."""
    metrics = [r.metrics() for r in results]
    names = list(dict.fromkeys(k for m in metrics for k in m))
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


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[4:11]),
    )
    parser.add_argument(
        "--mode",
        default="toyvpn",
        help=f"comma-separated, from: {', '.join(MODES)} (default toyvpn)",
    )
    parser.add_argument("--runs", type=int, default=3, help="iperf3 runs per direction (median)")
    parser.add_argument("--time", type=int, default=5, help="seconds per iperf3 run")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the numbers here")
    args = parser.parse_args()
    modes = [m.strip() for m in args.mode.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if not modes or unknown:
        parser.error(f"--mode: {', '.join(unknown) or 'empty'} — choose from {', '.join(MODES)}")
    if args.runs < 1 or args.time < 1:
        parser.error("--runs and --time must be at least 1")
    if os.geteuid() != 0:
        print("bench: run as root (it builds network namespaces)", file=sys.stderr)
        return 1

    work = Path(tempfile.mkdtemp(prefix="trivpn-bench-"))
    results: list[ScenarioResult] = []
    keep_logs = False
    try:
        for mode in modes:
            for scenario in MODES[mode]():
                results.append(run_scenario(scenario, args.runs, args.time, work))
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

    print(
        f"\nbench: {args.runs} x {args.time} s per iperf3 direction (median), "
        f"{PING_COUNT} pings, {os.cpu_count()} CPUs; CPU in % of one core\n"
    )
    print(table(results))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "modes": modes,
                    "runs": args.runs,
                    "time": args.time,
                    "cpus": os.cpu_count(),
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
    sys.exit(main())
