"""The registry's PostgreSQL going away is not an outage of the gateway (issue 11): it keeps
serving the peers it knew and counting their usage, logs the outage once and its end once,
and catches up when the server is back; one that starts meanwhile serves its static peers,
then the registry's. A server of these tests' own, stopped and started (`pg_ctl stop -m
fast`) under gateways on the real trio clock."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from support import postgres
from support.pg_gateway import FLUSH, PLAN, Gateway, gateway, until

from trivpn.config import WireGuardPeerConfig
from trivpn.proto.periods import QuotaPeriod
from trivpn.proto.policy import PeerState, Policy, Quota
from trivpn.proto.usage import UsageDelta
from trivpn.proto.wireguard import crypto, keys
from trivpn.registry.pg_store import PgRegistry

pytestmark = pytest.mark.postgres

ALICE = crypto.public_key(keys.generate_private_key(lambda n: b"\x0d" * n))
BOB = crypto.public_key(keys.generate_private_key(lambda n: b"\x0e" * n))
SITE = crypto.public_key(keys.generate_private_key(lambda n: b"\x0f" * n))
STATIC = WireGuardPeerConfig(name="site", public_key=SITE, allowed_ips=())
MIB = 1 << 20
BACK = 5.0  # s: the bound on catching up once the server accepts connections again


@pytest.fixture(scope="module")
def own_server() -> Iterator[postgres.PostgresServer]:
    """Not the session's server: stopping that one would fail the other tests' connections."""
    yield from postgres.session_server()


@pytest.fixture
def url(own_server: postgres.PostgresServer) -> Iterator[str]:
    with own_server.database() as url:
        yield url


def outage_lines(caplog: pytest.LogCaptureFixture) -> tuple[list[str], list[str]]:
    """The warnings that an outage began, and the lines that it ended."""
    messages = [r.getMessage() for r in caplog.records if r.getMessage().startswith("registry:")]
    began = [m for m in messages if "serving the peers last known" in m]
    ended = [m for m in messages if "reachable again" in m]
    return began, ended


def stored_totals(url: str) -> dict[bytes, int]:
    with PgRegistry.open(url) as registry:
        return {key: record.total for key, record in registry.usage_records().items()}


def has(g: Gateway, key: bytes) -> bool:
    return key in g.front.device.peers


async def test_an_outage_keeps_peers_and_counted_bytes_and_catches_up_after_it(
    url: str, tmp_path: Path, own_server: postgres.PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trivpn")
    with PgRegistry.open(url) as registry:
        registry.add("alice", ALICE, None, PLAN)
    g = gateway(url, tmp_path, "gw1", STATIC)
    async with trio.open_nursery() as nursery:
        await nursery.start(g.run)
        await g.listening()
        assert has(g, ALICE) and has(g, SITE)
        g.front.device.peers[ALICE].rx_bytes += 1000
        await until(lambda: stored_totals(url) == {ALICE: 1000}, BACK)

        await trio.to_thread.run_sync(own_server.pause)
        for _ in range(4):  # traffic during the outage, across many failed flushes
            g.front.device.peers[ALICE].rx_bytes += 300_000
            g.front.device.peers[SITE].tx_bytes += 7
            await trio.sleep(4 * FLUSH)
        assert has(g, ALICE) and has(g, SITE)  # serving the peers it knew
        assert not g.front.device.peers[ALICE].blocked
        began, ended = outage_lines(caplog)
        assert len(began) == 1 and not ended  # once, not a line per poll or flush
        assert began[0].startswith("registry: unreachable (PostgreSQL database ")

        await trio.to_thread.run_sync(own_server.resume)
        # every byte counted lands once the server is back
        await until(lambda: stored_totals(url) == {ALICE: 1_201_000, SITE: 28}, BACK)
        # and a change committed from now on is applied (pushed: the listener is back)
        with PgRegistry.open(url) as registry:
            registry.add("bob", BOB, None, PLAN)
        await until(functools.partial(has, g, BOB), BACK)
        began, ended = outage_lines(caplog)
        assert len(began) == 1 and len(ended) == 1
        nursery.cancel_scope.cancel()
    assert stored_totals(url) == {ALICE: 1_201_000, SITE: 28}  # the last flush: nothing twice


async def test_a_gateway_started_during_an_outage_serves_its_static_peers_then_the_registrys(
    url: str, tmp_path: Path, own_server: postgres.PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trivpn")
    over = Policy(quota=Quota(4 * MIB, QuotaPeriod.TOTAL))
    with PgRegistry.open(url) as registry:
        registry.add("alice", ALICE, None, PLAN, policy=over)
        registry.add_usage([UsageDelta(ALICE, 5 * MIB, 0)], 1_796_126_400.0)
    await trio.to_thread.run_sync(own_server.pause)
    g = gateway(url, tmp_path, "gw1", STATIC)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(5.0):  # the database down does not hold the start
            await nursery.start(g.run)
        assert has(g, SITE) and not has(g, ALICE)  # the file's peers
        g.front.device.peers[SITE].rx_bytes += 1234
        await trio.sleep(4 * FLUSH)
        began, _ = outage_lines(caplog)
        assert len(began) == 1  # it says so, once

        await trio.to_thread.run_sync(own_server.resume)
        await until(functools.partial(has, g, ALICE), BACK)  # then the registry's
        # and its stored usage: over its quota from the first packet
        await until(lambda: g.front.peer_state(ALICE)[0] is PeerState.OVER_QUOTA, BACK)
        await until(lambda: stored_totals(url).get(SITE) == 1234, BACK)
        _, ended = outage_lines(caplog)
        assert len(ended) == 1
        nursery.cancel_scope.cancel()
