"""Network namespace lab shared by the tests, the demo and the benchmark.

Everything lives in namespaces created here with unique names; nothing is configured in the
machine's own namespace. Topology (TEST-NET addresses only)::

    client ns  eth0 198.51.100.2/24 ── 198.51.100.1/24 wan0  server ns
    server ns  inet0 203.0.113.1/24 ── 203.0.113.2/24 eth0   internet ns
    server default route via 203.0.113.2 (so egress "auto" resolves to inet0);
    the client has no default route: only the tunnel can take it to 203.0.113.0/24.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Self

_counter = itertools.count()

SERVER_WAN = "198.51.100.1"
SERVER_EGRESS = "203.0.113.1"
INTERNET_HOST = "203.0.113.2"


def unique_name(prefix: str) -> str:
    """A namespace name no parallel run will pick: prefix, pid, a counter."""
    return f"{prefix}-{os.getpid()}-{next(_counter)}"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class Netns:
    """One network namespace, created on construction, deleted by ``delete()``."""

    def __init__(self, name: str) -> None:
        self.name = name
        _ip("netns", "add", name)
        self.run("ip", "link", "set", "lo", "up")

    def argv(self, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *args]

    def run(
        self, *args: str, check: bool = True, timeout: float = 60, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*args),
            check=check,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
        )

    def popen(self, args: Sequence[str], **kwargs: object) -> subprocess.Popen[str]:
        return subprocess.Popen(self.argv(*args), text=True, **kwargs)  # type: ignore[call-overload, no-any-return]

    def pids(self) -> list[int]:
        out = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def delete(self) -> None:
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        subprocess.run(["ip", "netns", "delete", self.name], capture_output=True)


def veth(a: Netns, a_name: str, b: Netns, b_name: str) -> None:
    """A veth pair created directly inside the two namespaces (never in the root one)."""
    _ip(
        "-n", a.name, "link", "add", a_name, "type", "veth", "peer", "name", b_name, "netns", b.name
    )
    a.run("ip", "link", "set", a_name, "up")
    b.run("ip", "link", "set", b_name, "up")


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until it returns something truthy; bounded, for e2e waits."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def ping_while(
    ns: Netns, target: str, work: Callable[[], None], *, wait: float = 2.0
) -> tuple[list[float], int]:
    """Ping ``target`` every 10 ms from ``ns`` while ``work()`` runs (with 0.3 s of idle
    pings either side): the RTTs (ms) of the answers and the number of requests sent."""
    ping = subprocess.Popen(
        ns.argv("ping", "-i", "0.01", "-W", str(wait), target),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        time.sleep(0.3)
        work()
        time.sleep(0.3)
    finally:
        ping.send_signal(signal.SIGINT)
        output, _ = ping.communicate(timeout=10)
    sent = re.search(r"(\d+) packets transmitted", output)
    if sent is None:
        raise RuntimeError(f"ping from {ns.name} said no count:\n{output}")
    return [float(ms) for ms in re.findall(r"time=([\d.]+) ms", output)], int(sent.group(1))


class Namespaces:
    """The namespaces a lab made, removed in reverse order when it closes."""

    def __init__(self) -> None:
        self.namespaces: list[Netns] = []

    def _ns(self, prefix: str) -> Netns:
        ns = Netns(unique_name(prefix))
        self.namespaces.append(ns)
        return ns

    def close(self) -> None:
        for ns in reversed(self.namespaces):
            ns.delete()
        self.namespaces.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Lab(Namespaces):
    """client, server and internet namespaces joined by veth pairs (see module docstring)."""

    def __init__(self, prefix: str = "tv", clients: int = 1) -> None:
        super().__init__()
        try:
            self.server = self._ns(prefix + "s")
            self.internet = self._ns(prefix + "i")
            veth(self.server, "inet0", self.internet, "eth0")
            self.server.run("ip", "addr", "add", f"{SERVER_EGRESS}/24", "dev", "inet0")
            self.internet.run("ip", "addr", "add", f"{INTERNET_HOST}/24", "dev", "eth0")
            self.server.run("ip", "route", "add", "default", "via", INTERNET_HOST)
            self.clients: list[Netns] = []
            for _i in range(clients):
                self.add_client(prefix)
        except BaseException:
            self.close()
            raise

    def add_client(self, prefix: str = "tv") -> Netns:
        """Another client namespace on its own link to the server (198.51.100.0/24 is the
        first; later clients get 198.51.100.(4i)/30-style links inside 198.51.100.0/24)."""
        i = len(self.clients)
        client = self._ns(prefix + "c")
        wan = f"wan{i}"
        veth(self.server, wan, client, "eth0")
        if i == 0:
            server_ip, client_ip, plen = SERVER_WAN, "198.51.100.2", 24
        else:
            server_ip, client_ip, plen = f"192.0.2.{4 * i + 1}", f"192.0.2.{4 * i + 2}", 30
        self.server.run("ip", "addr", "add", f"{server_ip}/{plen}", "dev", wan)
        client.run("ip", "addr", "add", f"{client_ip}/{plen}", "dev", "eth0")
        client.server_ip = server_ip  # type: ignore[attr-defined]
        client.client_ip = client_ip  # type: ignore[attr-defined]
        self.clients.append(client)
        return client


def venv_python() -> str:
    """The interpreter that runs trivpn in the lab (this one, which has it installed)."""
    import sys

    return sys.executable


REPO = Path(__file__).resolve().parents[2]


# -- trivpn processes in the lab --------------------------------------------------------------

TCP_SINK = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(8)
print("listening", flush=True)
while True:
    c, peer = s.accept(); n = 0
    while True:
        b = c.recv(65536)
        if not b: break
        n += len(b)
    c.sendall(b"%d" % n); c.close()
    print("PEER", peer[0], n, flush=True)
"""

TCP_SEND = r"""
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)
c.sendall(b"x" * int(sys.argv[3])); c.shutdown(socket.SHUT_WR)
print(c.recv(100).decode())
"""


def tcp_transfer(lab: Lab, client: Netns, nbytes: int, port: int = 5001) -> str:
    """Send ``nbytes`` over TCP from ``client`` to the internet host, checking that every
    byte arrived; returns the source address the internet host saw."""
    import sys

    sink = lab.internet.popen(
        [sys.executable, "-c", TCP_SINK, str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert sink.stdout is not None
        if sink.stdout.readline().strip() != "listening":
            raise RuntimeError("the TCP sink did not start")
        sent = client.run(sys.executable, "-c", TCP_SEND, INTERNET_HOST, str(port), str(nbytes))
        if sent.stdout.strip() != str(nbytes):
            raise RuntimeError(f"TCP transfer incomplete: {sent.stdout!r} {sent.stderr!r}")
        line = sink.stdout.readline().split()
        if line[:1] != ["PEER"] or int(line[2]) != nbytes:
            raise RuntimeError(f"the sink received something else: {line}")
        return line[1]
    finally:
        sink.kill()
        sink.wait()


class Trivpn:
    """A `python -m trivpn ARGS` process in a namespace, logging to a file."""

    def __init__(self, ns: Netns, args: Sequence[str], log_path: Path) -> None:
        import sys

        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 - lives as long as the process
        self.proc = ns.popen(
            [sys.executable, "-m", "trivpn", *args], stdout=self._log, stderr=subprocess.STDOUT
        )

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_log(self, text: str, timeout: float = 15.0) -> None:
        def seen() -> bool:
            if self.proc.poll() is not None and text not in self.log():
                raise RuntimeError(f"trivpn exited ({self.proc.returncode}):\n{self.log()}")
            return text in self.log()

        wait_for(seen, timeout, what=f"{text!r} in {self.log_path}")

    def stop(self, sig: int = 15, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()
