"""`tools/bench --mode startup`: how long a CLI command takes from exec to exit (issue 13).

Each command runs as a new process, as an operator runs it: `python -c pass` (the
interpreter's own floor), `trivpn genkey`, `trivpn peer add` (a new name each run, into a
scratch state dir) and `trivpn peer list` (of those peers, no server running). Printed: the
median, minimum and maximum wall time of --runs runs each (default 5), in two settings, and
the median CPU time (user + system) of the cached runs: on a loaded machine a run's wall time
includes its wait for a CPU, its CPU time does not:

  cached     bytecode cached (in a scratch PYTHONPYCACHEPREFIX, written by a warm-up run), as
             an installed trivpn runs: pip compiles its modules at install
  compiled   PYTHONDONTWRITEBYTECODE=1, as a checkout without __pycache__ runs: trivpn's own
             modules are compiled from source every run (the standard library's are cached)

Needs no root; nothing leaves the process tree.

Usage: .venv/bin/python tools/bench_startup.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

CONFIG = """\
[wireguard]
enabled = true
private_key_file = "server.key"
public_endpoint = "vpn.example.com:51820"
[state]
dir = "state"
"""


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_time(argv: Sequence[str], env: dict[str, str]) -> tuple[float, float]:
    """Seconds from the start of ``argv`` to its exit, and the CPU seconds it used; it must
    succeed."""
    cpu, start = _children_cpu(), time.perf_counter()
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - start, _children_cpu() - cpu


def median_ms(
    argv_of_run: Callable[[], Sequence[str]], env: dict[str, str], runs: int
) -> tuple[float, float, float, float]:
    """Median, minimum and maximum wall time and the median CPU time, in ms, of `runs` runs,
    after one warm-up run (which writes the bytecode cache, if any, and fills the page cache).
    `argv_of_run` is asked once per run: `peer add` needs a new name each time."""
    run_time(argv_of_run(), env)
    walls, cpus = zip(*(run_time(argv_of_run(), env) for _ in range(runs)), strict=True)
    times = [1000 * t for t in walls]
    return statistics.median(times), min(times), max(times), 1000 * statistics.median(cpus)


def run(runs: int = 5) -> int:
    script = Path(sys.executable).parent / "trivpn"  # the console script operators run
    trivpn = [str(script)] if script.exists() else [sys.executable, "-m", "trivpn"]
    with tempfile.TemporaryDirectory(prefix="trivpn-bench-startup-") as work:
        conf = Path(work) / "trivpn.toml"
        conf.write_text(CONFIG)
        base = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        settings = {
            "cached": {**base, "PYTHONPYCACHEPREFIX": str(Path(work) / "pycache")},
            "compiled": {**base, "PYTHONDONTWRITEBYTECODE": "1"},
        }
        added = iter(range(1, 1_000_000))
        commands: dict[str, Callable[[], Sequence[str]]] = {
            "python -c pass": lambda: [sys.executable, "-c", "pass"],
            "trivpn genkey": lambda: [*trivpn, "genkey"],
            "trivpn peer add": lambda: [*trivpn, "peer", "add", f"p{next(added)}", "-c", str(conf)],
            "trivpn peer list": lambda: [*trivpn, "peer", "list", "-c", str(conf)],
        }
        print(f"bench: start-up in ms, median (min-max) of {runs} runs; {os.cpu_count()} CPUs")
        print(f"{'command':<18} " + " ".join(f"{name:>16}" for name in settings) + "  cached cpu")
        for name, argv_of in commands.items():
            results = {setting: median_ms(argv_of, env, runs) for setting, env in settings.items()}
            cells = [f"{med:6.0f} ({low:.0f}-{high:.0f})" for med, low, high, _ in results.values()]
            cpu = results["cached"][3]
            print(f"{name:<18} " + " ".join(f"{c:>16}" for c in cells) + f"  {cpu:10.0f}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per command (median)")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return run(args.runs)


if __name__ == "__main__":
    sys.exit(main())
