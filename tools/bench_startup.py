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

With ``--against PYTHON`` (another install's interpreter, e.g. /work/main/.venv/bin/python)
each command runs alternately with this install and that one, run by run, so that both meet
the same load: an A/B on a shared machine.

Needs no root; nothing leaves the process tree.

Usage: .venv/bin/python tools/bench_startup.py [--runs 5] [--against PYTHON]
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
from collections.abc import Callable, Iterator, Sequence
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


Stats = tuple[float, float, float, float]


def _stats(times: Sequence[tuple[float, float]]) -> Stats:
    walls = [1000 * wall for wall, _ in times]
    cpu = 1000 * statistics.median(c for _, c in times)
    return statistics.median(walls), min(walls), max(walls), cpu


def median_ms(
    argvs_of_run: Sequence[Callable[[], Sequence[str]]], env: dict[str, str], runs: int
) -> list[Stats]:
    """For each of `argvs_of_run` (one per install, run in turn, run by run): the median,
    minimum and maximum wall time and the median CPU time, in ms, of `runs` runs, after one
    warm-up run (which writes the bytecode cache, if any, and fills the page cache). Each
    is asked once per run: `peer add` needs a new name each time."""
    for argv_of_run in argvs_of_run:
        run_time(argv_of_run(), env)
    times: list[list[tuple[float, float]]] = [[] for _ in argvs_of_run]
    for _ in range(runs):
        for argv_of_run, install_times in zip(argvs_of_run, times, strict=True):
            install_times.append(run_time(argv_of_run(), env))
    return [_stats(install_times) for install_times in times]


def _trivpn(python: Path) -> list[str]:
    script = python.parent / "trivpn"  # the console script operators run
    return [str(script)] if script.exists() else [str(python), "-m", "trivpn"]


def _commands(
    python: Path, conf: Path, added: Iterator[int]
) -> dict[str, Callable[[], Sequence[str]]]:
    trivpn = _trivpn(python)
    return {
        "python -c pass": lambda: [str(python), "-c", "pass"],
        "trivpn genkey": lambda: [*trivpn, "genkey"],
        "trivpn peer add": lambda: [*trivpn, "peer", "add", f"p{next(added)}", "-c", str(conf)],
        "trivpn peer list": lambda: [*trivpn, "peer", "list", "-c", str(conf)],
    }


def run(runs: int = 5, against: Path | None = None) -> int:
    pythons = {"": Path(sys.executable)} | ({} if against is None else {" (against)": against})
    with tempfile.TemporaryDirectory(prefix="trivpn-bench-startup-") as work:
        base = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        settings = {
            "cached": {**base, "PYTHONPYCACHEPREFIX": str(Path(work) / "pycache")},
            "compiled": {**base, "PYTHONDONTWRITEBYTECODE": "1"},
        }
        added = iter(range(1, 1_000_000))
        commands: dict[str, list[Callable[[], Sequence[str]]]] = {}
        for i, python in enumerate(pythons.values()):
            conf = Path(work) / f"install{i}" / "trivpn.toml"  # a registry each
            conf.parent.mkdir()
            conf.write_text(CONFIG)
            for name, argv_of in _commands(python, conf, added).items():
                commands.setdefault(name, []).append(argv_of)
        print(f"bench: start-up in ms, median (min-max) of {runs} runs; {os.cpu_count()} CPUs")
        if against is not None:
            print(f"bench: against {against}, run by run in turn with {sys.executable}")
        print(f"{'command':<28} " + " ".join(f"{name:>16}" for name in settings) + "  cached cpu")
        for name, argvs_of in commands.items():
            results = {setting: median_ms(argvs_of, env, runs) for setting, env in settings.items()}
            for i, install in enumerate(pythons):
                cells = [f"{r[i][0]:6.0f} ({r[i][1]:.0f}-{r[i][2]:.0f})" for r in results.values()]
                cpu = results["cached"][i][3]
                row = f"{name + install:<28} " + " ".join(f"{c:>16}" for c in cells)
                print(row + f"  {cpu:10.0f}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per command (median)")
    parser.add_argument(
        "--against",
        type=Path,
        metavar="PYTHON",
        help="another install's python (e.g. /work/main/.venv/bin/python): run in turn",
    )
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return run(args.runs, args.against)


if __name__ == "__main__":
    sys.exit(main())
