"""A peer's policy while `trivpn serve` runs: `peer disable` stops a ping within 2 s, `peer
enable` brings it back within 20 s (the client's own handshake retry), and `peer set --expires`
a few seconds ahead stops it at that moment (± 1 s).

client ns (wireguard-go, configured from what `trivpn peer add` printed) ── server ns (trivpn
serve, NAT) ── internet ns. A ping every 0.1 s with -D stamps each reply with the wall clock.
"""

from __future__ import annotations

import datetime
import json
import math
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from support import netlab, wglab

pytestmark = [pytest.mark.root, pytest.mark.wireguard_go, pytest.mark.lab("tvq", clients=1)]

STOP_BOUND = 2.0  # s: disable -> no more replies (the registry is polled every 0.5 s)
BACK_BOUND = wglab.RECONNECT_WAIT  # s: enable -> replies again
EXPIRY_SLACK = 1.0  # s: the last reply around the expiry
_REPLY = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from ")


class Pinger:
    """`ping -D -i 0.1` from ``ns`` to the internet host (line-buffered through stdbuf); the
    wall-clock time of each reply."""

    def __init__(self, ns: netlab.Netns) -> None:
        self.replies: list[float] = []
        self.proc = ns.popen(
            ["stdbuf", "-oL", "ping", "-D", "-n", "-i", "0.1", "-W", "1", netlab.INTERNET_HOST],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            found = _REPLY.match(line)
            if found:
                self.replies.append(float(found[1]))

    def replied_after(self, moment: float) -> bool:
        return any(t > moment for t in self.replies)

    def last_before(self, moment: float) -> float:
        return max((t for t in self.replies if t < moment), default=-math.inf)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self._reader.join(10)


@pytest.fixture
def pinger_for() -> Iterator[Callable[[netlab.Netns], Pinger]]:
    made: list[Pinger] = []

    def make(ns: netlab.Netns) -> Pinger:
        made.append(Pinger(ns))
        return made[-1]

    yield make
    for pinger in made:
        pinger.stop()


def state(server: wglab.LabServer, name: str) -> str:
    return str(server.peer_json(name)["state"])


def test_disable_enable_and_expiry_of_a_running_peer(
    lab: netlab.Lab,
    server: wglab.LabServer,
    wireguard_go: Callable[..., wglab.WireGuardGo],
    pinger_for: Callable[[netlab.Netns], Pinger],
) -> None:
    (ns,) = lab.clients
    server.write_config(wireguard=wglab.ROUTE_ALL)
    proc = server.start(server.uapi_ready)
    printed = server.trivpn("peer", "add", "bob")
    bob = wireguard_go(ns)
    wglab.apply_client_config(bob, printed)
    wglab.wait_online(ns)
    pinger = pinger_for(ns)
    pinging = time.time()
    netlab.wait_for(lambda: pinger.replied_after(pinging), 5, what="ping replies")

    # disable: no reply from 2 s after the command on
    started = time.time()
    server.trivpn("peer", "disable", "bob")
    done = time.time()
    time.sleep(STOP_BOUND + 2)
    assert pinger.last_before(started) > started - 1  # it was answered up to the command
    assert pinger.last_before(math.inf) <= done + STOP_BOUND, (done, pinger.replies[-5:])
    proc.wait_log("wireguard: peer bob blocked: disabled; its sessions end")
    assert state(server, "bob") == "disabled"
    status = server.trivpn("status")
    assert re.search(r"^bob +disabled ", status, re.M), status

    # enable: the client's own retry reconnects within 20 s
    server.trivpn("peer", "enable", "bob")
    enabled = time.time()
    netlab.wait_for(lambda: pinger.replied_after(enabled), BACK_BOUND, what="ping back")
    proc.wait_log("wireguard: peer bob active again (was disabled)")

    # an expiry 4 s ahead (at a whole second): replies stop at that moment, ± 1 s
    deadline = math.ceil(time.time()) + 4
    moment = datetime.datetime.fromtimestamp(deadline, datetime.UTC)
    server.trivpn("peer", "set", "bob", "--expires", moment.isoformat())
    time.sleep(max(0.0, deadline - time.time()) + STOP_BOUND)
    last = pinger.last_before(math.inf)
    assert deadline - EXPIRY_SLACK <= last <= deadline + EXPIRY_SLACK, (deadline, last)
    proc.wait_log("wireguard: peer bob blocked: expired at")
    assert state(server, "bob") == "expired"
    metrics_doc = json.loads(server.trivpn("peer", "list", "--json"))
    assert [(r["name"], r["state"]) for r in metrics_doc] == [("bob", "expired")]

    assert proc.stop() == 0, proc.log()
    assert "Traceback" not in proc.log()
