"""Two gateways, one PostgreSQL registry, one wireguard-go client (tests/support/fleetlab.py):
one identity, any gateway, and failover in about a second instead of the client's ~15 s.

Both gateways share the server's key; `peer add` on gateway 1 makes a config the client uses
through gateway 2. Moving the client's endpoint to gateway 1 mid-ping, or moving a floating
address from a SIGKILLed gateway to the other, the pings resume after one handshake that the
new gateway starts itself (it knows the client's endpoint from the fleet's sessions). A
`peer disable` on one gateway cuts the client off on the other within a second, and a quota
crossed by the sum of what both counted blocks the peer on both."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import iperf, netlab, postgres, wglab
from support.fleetlab import FLOATING, GATEWAY_LAN, FleetLab

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.wireguard_go, pytest.mark.postgres]

FAILOVER_BOUND = 2.0  # s: the target for a floating address moved
PING_INTERVAL = 0.05
ANSWER = re.compile(r"^\[([\d.]+)\] \d+ bytes from")
DISABLE_BOUND = 1.0  # s: the bound from `peer disable` on one gateway to the cut
MIB = 1024 * 1024
QUOTA = 4 * MIB
FIRST_PART = 3 * MIB  # bytes through gw1 (on the wire): most of the quota, not all of it
CHUNK = "256K"  # iperf3 -n: a short run (at most ~0.3 MiB on the wire)
# s: a block on one gateway reaches the other: its flush (5 s), a NOTIFY, the reload (<= 2 s)
FLEET_BLOCK_BOUND = 10.0


@pytest.fixture(scope="module")
def pg_server() -> Iterator[postgres.PostgresServer]:
    yield from postgres.session_server()


@pytest.fixture
def fleet_lab() -> Iterator[FleetLab]:
    with FleetLab("tvf") as lab:
        yield lab


@pytest.fixture
def gateways(
    fleet_lab: FleetLab, pg_server: postgres.PostgresServer, tmp_path: Path
) -> Iterator[list[wglab.LabServer]]:
    """gw1 and gw2 serving (one key, one database), killed at teardown."""
    servers: list[wglab.LabServer] = []
    with pg_server.database() as url:
        try:
            keys = wglab.ServerKeys.generate()
            for i, ns in enumerate(fleet_lab.gateways, 1):
                work = tmp_path / f"gw{i}"
                work.mkdir()
                srv = wglab.LabServer(ns, work, prefix="tvf")
                srv.keys = keys  # one identity, any gateway
                srv.write_config(
                    wireguard={"public_endpoint": f"{GATEWAY_LAN[i - 1]}:{wglab.WG_PORT}"},
                    state={"database": url, "node": f"gw{i}"},
                )
                servers.append(srv)
                srv.start(srv.uapi_ready)
            yield servers
        finally:
            for srv in servers:
                srv.kill()


@pytest.fixture
def alice(
    fleet_lab: FleetLab, gateways: list[wglab.LabServer], tmp_path: Path
) -> Iterator[Callable[..., wglab.WireGuardGo]]:
    """wireguard-go in the client ns with the config `peer add alice` printed on gw1, its
    endpoint the one given (the address a DNS name or a floating address would give)."""
    started: list[wglab.WireGuardGo] = []

    def connect(endpoint: str, *options: str) -> wglab.WireGuardGo:
        printed = gateways[0].trivpn("peer", "add", "alice", *options)
        gw1_endpoint = f"Endpoint = {GATEWAY_LAN[0]}:{wglab.WG_PORT}\n"
        assert gw1_endpoint in printed
        wg = wglab.WireGuardGo(fleet_lab.client, log_path=tmp_path / "wireguard-go.log")
        started.append(wg)
        text = printed.replace(gw1_endpoint, f"Endpoint = {endpoint}\n")
        wg.public_key = wglab.apply_client_config(wg, text)  # the printed config's key
        return wg

    yield connect
    for wg in started:
        wg.stop()


class Pinger:
    """`ping -D` every `interval` from a namespace; the times its answers arrived, read as
    they come (`next_answer` waits for one)."""

    def __init__(self, ns: netlab.Netns, interval: float = PING_INTERVAL) -> None:
        self.proc = ns.popen(
            ["ping", "-D", "-i", str(interval), "-W", "1", netlab.INTERNET_HOST],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._answers: list[float] = []
        self._answered = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if m := ANSWER.match(line):
                with self._answered:
                    self._answers.append(float(m[1]))
                    self._answered.notify_all()

    def next_answer(self, timeout: float = 5.0) -> None:
        """Return as soon as the next answer arrives (no request of ours is then in flight
        for most of an interval)."""
        with self._answered:
            seen = len(self._answers)
            assert self._answered.wait_for(lambda: len(self._answers) > seen, timeout)

    def answers(self) -> list[float]:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=10)
        self._reader.join(timeout=10)
        with self._answered:
            return list(self._answers)


def outage(answers: list[float], since: float) -> float:
    """Seconds from ``since`` to the first answer after it that was followed by steady
    answers (the last answer before ``since`` may be in flight)."""
    after = [t for t in answers if t > since]
    assert len(after) > 10, f"the pings did not resume: {len(after)} answers after"
    return after[0] - since


def test_a_client_moved_to_the_other_gateway_goes_on_after_one_handshake(
    fleet_lab: FleetLab,
    gateways: list[wglab.LabServer],
    alice: Callable[..., wglab.WireGuardGo],
) -> None:
    gw1, gw2 = gateways
    wg = alice(f"{GATEWAY_LAN[1]}:{wglab.WG_PORT}")  # gw1's config, through gw2
    server_key = gw1.keys.public
    netlab.wait_for(
        lambda: wglab.reaches_internet(fleet_lab.client), 15, what="alice online via gw2"
    )
    assert wg.peer(server_key).endpoint == f"{GATEWAY_LAN[1]}:{wglab.WG_PORT}"
    assert gw2.dump().peers[wg.public_key].latest_handshake > 0
    time.sleep(2.5)  # gw2 has stored alice's endpoint; gw1 has read it

    # slower pings, the move made right after an answer: a reply still in flight from gw2
    # would (rightly) roam the client back to gw2
    pinger = Pinger(fleet_lab.client, interval=0.2)
    time.sleep(1.0)
    pinger.next_answer()
    moved = time.time()
    wg.add_peer(server_key, endpoint=f"{GATEWAY_LAN[0]}:{wglab.WG_PORT}")
    time.sleep(5.0)  # > 10 answers after the move even if it took the bound
    gap = outage(pinger.answers(), moved)
    print(f"endpoint moved to gw1: pings resumed after {gap:.3f} s")
    assert gap < FAILOVER_BOUND
    assert wg.peer(server_key).endpoint == f"{GATEWAY_LAN[0]}:{wglab.WG_PORT}"
    status = gw1.dump().peers[wg.public_key]
    assert status.latest_handshake >= int(moved)


def test_a_floating_address_moved_from_a_killed_gateway_resumes_within_2s(
    fleet_lab: FleetLab,
    gateways: list[wglab.LabServer],
    alice: Callable[..., wglab.WireGuardGo],
) -> None:
    gw1, gw2 = gateways
    fleet_lab.take_floating(fleet_lab.gateways[0])
    wg = alice(f"{FLOATING}:{wglab.WG_PORT}")
    server_key = gw1.keys.public
    netlab.wait_for(
        lambda: wglab.reaches_internet(fleet_lab.client), 15, what="alice online via gw1"
    )
    time.sleep(2.5)  # gw1 has stored alice's endpoint; gw2 has read it

    pinger = Pinger(fleet_lab.client)
    time.sleep(1.0)
    killed = time.time()
    gw1.kill()  # SIGKILL
    fleet_lab.drop_floating(fleet_lab.gateways[0])
    fleet_lab.take_floating(fleet_lab.gateways[1])
    time.sleep(3.0)
    gap = outage(pinger.answers(), killed)
    print(f"floating address moved to gw2: pings resumed after {gap:.3f} s")
    assert gap < FAILOVER_BOUND
    assert wg.peer(server_key).endpoint == f"{FLOATING}:{wglab.WG_PORT}"  # no change there
    status = gw2.dump().peers[wg.public_key]
    assert status.latest_handshake >= int(killed)


def state(server: wglab.LabServer, name: str) -> str:
    return str(server.peer_json(name)["state"])


def status_node(server: wglab.LabServer) -> tuple[str, str | None]:
    """`trivpn status --json`: the gateway's node, and the one alice's live session is on."""
    doc = json.loads(server.trivpn("status", "--json"))
    (alice,) = (p for p in doc["wireguard"]["peers"] if p["name"] == "alice")
    return doc["node"], alice["node"]


def test_disable_on_one_gateway_cuts_the_client_off_on_the_other_within_a_second(
    fleet_lab: FleetLab,
    gateways: list[wglab.LabServer],
    alice: Callable[..., wglab.WireGuardGo],
) -> None:
    gw1, gw2 = gateways
    alice(f"{GATEWAY_LAN[0]}:{wglab.WG_PORT}")
    netlab.wait_for(
        lambda: wglab.reaches_internet(fleet_lab.client), 15, what="alice online via gw1"
    )
    # `trivpn status` on either gateway: alice's live session is on gw1
    assert status_node(gw1) == ("gw1", "gw1")
    netlab.wait_for(lambda: status_node(gw2) == ("gw2", "gw1"), 5, what="gw2 knows it")
    pinger = Pinger(fleet_lab.client)
    time.sleep(1.0)
    started = time.time()
    gw2.trivpn("peer", "disable", "alice")  # the operator's CLI, on the other gateway
    returned = time.time()
    time.sleep(2.0)
    answers = pinger.answers()
    assert [t for t in answers if started - 0.5 < t < started], "not answered before"
    # the first probe left unanswered went out at most one interval after the last answer
    cut = max(answers) + PING_INTERVAL - returned
    print(
        f"peer disable on gw2: the CLI took {returned - started:.3f} s; gw1 cut alice off "
        f"{cut:+.3f} s from its return"
    )
    assert cut < DISABLE_BOUND
    assert state(gw1, "alice") == "disabled"

    gw2.trivpn("peer", "enable", "alice")
    enabled = time.time()
    netlab.wait_for(
        lambda: wglab.reaches_internet(fleet_lab.client),
        wglab.RECONNECT_WAIT,
        what="alice back via gw1",
    )
    print(f"peer enable on gw2: alice back through gw1 after {time.time() - enabled:.1f} s")
    assert state(gw1, "alice") == "active"


def send_until(gateway: wglab.LabServer, ns: netlab.Netns, usage: int) -> int:
    """Short uploads from ``ns`` (iperf3 -n: the sender ends before all of it arrives) until
    the peer's usage on ``gateway`` reaches ``usage``; the usage then."""
    for _ in range(100):
        used = int(gateway.peer_json("alice")["usage_bytes"])
        if used >= usage:
            return used
        # a run the server refused as busy is followed by the next
        argv = ["iperf3", "-c", netlab.INTERNET_HOST, "-p", str(iperf.PORT), "-n", CHUNK]
        ns.run(*argv, check=False, timeout=30)
        time.sleep(0.2)
    raise AssertionError(f"usage {used} B after 100 uploads")


def test_a_quota_split_across_the_gateways_blocks_the_peer_on_both(
    fleet_lab: FleetLab,
    gateways: list[wglab.LabServer],
    alice: Callable[..., wglab.WireGuardGo],
) -> None:
    gw1, gw2 = gateways
    wg = alice(f"{GATEWAY_LAN[0]}:{wglab.WG_PORT}", "--quota", "4MiB/total")
    server_key = gw1.keys.public
    target = netlab.INTERNET_HOST
    with iperf.server(fleet_lab.internet, target):
        netlab.wait_for(
            lambda: wglab.reaches_internet(fleet_lab.client), 15, what="alice online via gw1"
        )
        first = send_until(gw1, fleet_lab.client, FIRST_PART)
        assert first < QUOTA - MIB // 2, first
        # gw1 stores its count (every 5 s); gw2 reads the fleet's sum when told
        netlab.wait_for(
            lambda: int(gw2.peer_json("alice")["usage_bytes"]) >= first,
            15,
            what="gw2 knows gw1's count",
        )

        wg.add_peer(server_key, endpoint=f"{GATEWAY_LAN[1]}:{wglab.WG_PORT}")
        moved = time.time()
        with iperf.sustained(fleet_lab.client, target):
            netlab.wait_for(
                lambda: state(gw2, "alice") == "over_quota", 20, what="over quota on gw2"
            )
            blocked_gw2 = time.time()
            netlab.wait_for(
                lambda: state(gw1, "alice") == "over_quota",
                FLEET_BLOCK_BOUND,
                what="over quota on gw1",
            )
            blocked_gw1 = time.time()
    assert gw2.dump().peers[wg.public_key].latest_handshake >= int(moved)  # it went via gw2
    print(
        f"quota split: gw1 counted {first} B; blocked on gw2 {blocked_gw2 - moved:.1f} s "
        f"after the move, on gw1 {blocked_gw1 - blocked_gw2:.1f} s after that"
    )
    assert int(gw1.peer_json("alice")["usage_bytes"]) >= QUOTA  # the fleet's sum

    wg.add_peer(server_key, endpoint=f"{GATEWAY_LAN[0]}:{wglab.WG_PORT}")  # back to gw1
    assert not wglab.reaches_internet(fleet_lab.client, count=5)
    assert state(gw1, "alice") == state(gw2, "alice") == "over_quota"
