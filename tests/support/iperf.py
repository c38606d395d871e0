"""iperf3 in a netlab namespace: a server, and TCP runs against it read from its JSON report.

Shared by the end-to-end tests and tools/bench.py. One server answers one test at a time
(run several servers on several ports for runs side by side); right after a test it says
"busy" for a moment, which ``run`` retries.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

from support.netlab import Netns, wait_for

PORT = 5201
BUSY_RETRIES = 10
BUSY_WAIT = 1.0  # s: the server takes a moment to accept the next test


class IperfError(RuntimeError):
    """iperf3 refused, failed or printed no report; the message says which."""


def _listening(ns: Netns, port: int) -> bool:
    out = ns.run("ss", "-H", "-tln", f"sport = :{port}", check=False, timeout=5)
    return bool(out.stdout.strip())


@contextlib.contextmanager
def server(ns: Netns, address: str, port: int = PORT) -> Iterator[subprocess.Popen[str]]:
    """`iperf3 -s` on ``address``:``port`` in ``ns`` while the block runs; killed after."""
    proc = ns.popen(
        # A test cut short must not leave the server busy for the next one: neither waiting
        # for data (--rcv-timeout) nor sending toward a client gone (--snd-timeout, -R runs).
        ["iperf3", "-s", "-B", address, "-p", str(port), "--rcv-timeout", "3000",
         "--snd-timeout", "3000", "--idle-timeout", "5"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(lambda: _listening(ns, port), 10, what=f"iperf3 -s on port {port}")
        yield proc
    finally:
        proc.kill()
        proc.wait(10)


def client_argv(
    target: str,
    seconds: float,
    *,
    reverse: bool = False,
    port: int = PORT,
    bitrate: str | None = None,
) -> list[str]:
    """`iperf3 -c`: one TCP run of ``seconds`` to ``target`` (``reverse``: toward the client;
    ``bitrate``: the sender paces itself to it, e.g. "18M")."""
    argv = ["iperf3", "-c", target, "-p", str(port), "-t", f"{seconds:g}", "-J"]
    if bitrate is not None:
        argv += ["-b", bitrate]
    return [*argv, "-R"] if reverse else argv


def report_of(result: subprocess.CompletedProcess[str]) -> dict[str, Any] | None:
    """The JSON report of a finished `iperf3 -c`; None when the server was busy (try again
    in a moment); IperfError for any other failure."""
    try:
        report: dict[str, Any] = json.loads(result.stdout)
    except json.JSONDecodeError as e:
        raise IperfError(f"iperf3 gave no JSON: {result.stderr.strip()}") from e
    error = report.get("error")
    if error is None:
        return report
    if "busy" in str(error):
        return None
    raise IperfError(f"iperf3: {error}")


def run(
    ns: Netns,
    target: str,
    seconds: float,
    *,
    reverse: bool = False,
    port: int = PORT,
    bitrate: str | None = None,
) -> dict[str, Any]:
    """One TCP run from ``ns`` (client_argv); its JSON report, a busy server retried."""
    argv = client_argv(target, seconds, reverse=reverse, port=port, bitrate=bitrate)
    for _ in range(BUSY_RETRIES):
        report = report_of(ns.run(*argv, check=False, timeout=seconds + 30))
        if report is not None:
            return report
        time.sleep(BUSY_WAIT)
    raise IperfError(f"iperf3: the server on port {port} stayed busy")


def received_bps(report: dict[str, Any]) -> float:
    """What the receiving end counted, in bits per second."""
    return float(report["end"]["sum_received"]["bits_per_second"])


@contextlib.contextmanager
def sustained(ns: Netns, target: str, *, port: int = PORT) -> Iterator[None]:
    """TCP from ``ns`` to ``target`` for as long as the block runs: one iperf3 run after
    another (a run the server refused as busy, or one a blocked tunnel ended, is followed by
    the next), all ended when the block ends."""
    lock = threading.Lock()
    stopped = False
    current: subprocess.Popen[str] | None = None

    def keep_going() -> None:
        nonlocal current
        while True:
            with lock:
                if stopped:
                    return
                current = ns.popen(
                    client_argv(target, 60, port=port),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            current.wait()
            time.sleep(BUSY_WAIT / 2)

    thread = threading.Thread(target=keep_going, daemon=True)
    thread.start()
    try:
        yield
    finally:
        with lock:
            stopped = True
            if current is not None:
                current.kill()
        thread.join(10)
        if current is not None:
            current.wait(10)
