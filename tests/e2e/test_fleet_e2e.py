"""Two gateways, one PostgreSQL registry, one wireguard-go client (tests/support/fleetlab.py):
one identity, any gateway, and failover in about a second instead of the client's ~15 s.

Both gateways share the server's key; `peer add` on gateway 1 makes a config the client uses
through gateway 2. Moving the client's endpoint to gateway 1 mid-ping, or moving a floating
address from a SIGKILLed gateway to the other, the pings resume after one handshake that the
new gateway starts itself (it knows the client's endpoint from the fleet's sessions)."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import netlab, postgres, wglab
from support.fleetlab import FLOATING, GATEWAY_LAN, FleetLab

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.wireguard_go, pytest.mark.postgres]

FAILOVER_BOUND = 2.0  # s: the target for a floating address moved
PING_INTERVAL = 0.05


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
    name = pg_server.new_database()
    servers: list[wglab.LabServer] = []
    try:
        keys = wglab.ServerKeys.generate()
        for i, ns in enumerate(fleet_lab.gateways, 1):
            work = tmp_path / f"gw{i}"
            work.mkdir()
            srv = wglab.LabServer(ns, work, prefix="tvf")
            srv.keys = keys  # one identity, any gateway
            srv.write_config(wireguard={"public_endpoint": f"{GATEWAY_LAN[i - 1]}:{wglab.WG_PORT}"})
            text = srv.config.read_text().replace(
                "[state]\n",
                f'[state]\ndatabase = "{pg_server.url(name)}"\nnode = "gw{i}"\n',
                1,
            )
            srv.config.write_text(text)
            servers.append(srv)
            srv.start(srv.uapi_ready)
        yield servers
    finally:
        for srv in servers:
            srv.kill()
        pg_server.drop_database(name)


@pytest.fixture
def alice(
    fleet_lab: FleetLab, gateways: list[wglab.LabServer], tmp_path: Path
) -> Iterator[Callable[[str], wglab.WireGuardGo]]:
    """wireguard-go in the client ns with the config `peer add alice` printed on gw1, its
    endpoint the one given (the address a DNS name or a floating address would give)."""
    started: list[wglab.WireGuardGo] = []

    def connect(endpoint: str) -> wglab.WireGuardGo:
        printed = gateways[0].trivpn("peer", "add", "alice")
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
    """`ping -D` every PING_INTERVAL from a namespace; the times its answers arrived."""

    def __init__(self, ns: netlab.Netns) -> None:
        self.proc = ns.popen(
            ["ping", "-D", "-i", str(PING_INTERVAL), "-W", "1", netlab.INTERNET_HOST],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

    def answers(self) -> list[float]:
        self.proc.send_signal(signal.SIGINT)
        output, _ = self.proc.communicate(timeout=10)
        return [float(t) for t in re.findall(r"^\[([\d.]+)\] \d+ bytes from", output, re.M)]


def outage(answers: list[float], since: float) -> float:
    """Seconds from ``since`` to the first answer after it that was followed by steady
    answers (the last answer before ``since`` may be in flight)."""
    after = [t for t in answers if t > since]
    assert len(after) > 10, f"the pings did not resume: {len(after)} answers after"
    return after[0] - since


def test_a_client_moved_to_the_other_gateway_goes_on_after_one_handshake(
    fleet_lab: FleetLab,
    gateways: list[wglab.LabServer],
    alice: Callable[[str], wglab.WireGuardGo],
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

    pinger = Pinger(fleet_lab.client)
    time.sleep(1.0)
    moved = time.time()
    wg.add_peer(server_key, endpoint=f"{GATEWAY_LAN[0]}:{wglab.WG_PORT}")
    time.sleep(3.0)
    gap = outage(pinger.answers(), moved)
    print(f"endpoint moved to gw1: pings resumed after {gap:.3f} s")
    assert gap < FAILOVER_BOUND
    assert wg.peer(server_key).endpoint == f"{GATEWAY_LAN[0]}:{wglab.WG_PORT}"
    status = gw1.dump().peers[wg.public_key]
    assert status.latest_handshake >= int(moved)


def test_a_floating_address_moved_from_a_killed_gateway_resumes_within_2s(
    fleet_lab: FleetLab,
    gateways: list[wglab.LabServer],
    alice: Callable[[str], wglab.WireGuardGo],
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
