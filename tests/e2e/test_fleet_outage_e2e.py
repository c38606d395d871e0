"""The registry's PostgreSQL stopped for 20 s under a running gateway (issue 11): a
wireguard-go client's pings through it go on without a loss, the outage is logged once and
its end once, and afterwards the usage in the database is what the gateway counted.

client ns (wireguard-go, configured from what `trivpn peer add` printed) ── server ns (trivpn
serve, [state] database on a PostgreSQL of this test's own, over its unix socket) ── internet.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest
from support import netlab, postgres, wglab

from trivpn.proto.wireguard import keys
from trivpn.registry.pg_store import PgRegistry
from trivpn.registry.usage_sync import FLUSH_INTERVAL

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.wireguard_go,
    pytest.mark.postgres,
    pytest.mark.lab("tvo", clients=1),
]

OUTAGE = 20.0  # s: the database stopped
PING_INTERVAL = 0.1  # s
PINGS = int((OUTAGE + 10.0) / PING_INTERVAL)  # 5 s before the outage, 5 s after
_SUMMARY = re.compile(r"(\d+) packets transmitted, (\d+) received")


@pytest.fixture
def database() -> Iterator[tuple[postgres.PostgresServer, str]]:
    """A server of this test's own (it is stopped), and its database's URI."""
    for server in postgres.session_server():
        yield server, server.url(server.new_database())


def test_the_database_stopped_for_20_s_loses_no_ping_and_no_counted_byte(
    lab: netlab.Lab,
    server: wglab.LabServer,
    wireguard_go: Callable[..., wglab.WireGuardGo],
    database: tuple[postgres.PostgresServer, str],
) -> None:
    pg, url = database
    (ns,) = lab.clients
    server.write_config(wireguard=wglab.ROUTE_ALL, state={"database": url})
    proc = server.start(server.uapi_ready)
    printed = server.trivpn("peer", "add", "bob")
    bob = wireguard_go(ns)
    bob_key = wglab.apply_client_config(bob, printed)
    wglab.wait_online(ns)

    ping = ns.popen(
        ["ping", "-n", "-c", str(PINGS), "-i", str(PING_INTERVAL), "-W", "1",
         netlab.INTERNET_HOST],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        time.sleep(5.0)
        pg.pause()
        time.sleep(OUTAGE)
        proc.wait_log("registry: unreachable (")
        pg.resume()
        out, _ = ping.communicate(timeout=PINGS * PING_INTERVAL + 30)
    finally:
        if ping.poll() is None:
            ping.kill()
            ping.wait(10)
    found = _SUMMARY.search(out)
    assert found is not None, out
    assert found[1] == found[2] == str(PINGS), out  # not one lost to the outage
    proc.wait_log("registry: reachable again after", timeout=FLUSH_INTERVAL * 2)

    # the traffic has stopped: what the gateway counted reaches the database at its next flush
    def counted() -> tuple[int, int]:
        row = server.peer_json("bob")  # live from the server
        return int(row["lifetime_rx_bytes"]), int(row["lifetime_tx_bytes"])

    def stored() -> tuple[int, int]:
        with PgRegistry.open(url) as registry:
            record = registry.usage_records([keys.parse_key(bob_key)]).get(keys.parse_key(bob_key))
        return (0, 0) if record is None else (record.lifetime_rx, record.lifetime_tx)

    netlab.wait_for(
        lambda: stored() == counted() and stored()[0] > PINGS * 84,
        FLUSH_INTERVAL * 3,
        what="the usage counted stored",
    )
    log = proc.log()
    assert log.count("registry: unreachable (") == 1, log
    assert log.count("registry: reachable again after") == 1, log
    assert proc.stop() == 0, log
    assert "Traceback" not in proc.log()
