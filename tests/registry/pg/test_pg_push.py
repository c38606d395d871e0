"""Changes pushed and usage summed across a fleet (issue 11): gateways on one real PostgreSQL,
their polls slowed to a minute, so a change applied within a second was pushed (NOTIFY), and
a quota crossed by the fleet's sum blocks the peer on every gateway."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
from support.pg_gateway import PLAN, Gateway, gateway, until

from trivpn.proto.periods import QuotaPeriod
from trivpn.proto.policy import PeerState, Policy, Quota
from trivpn.proto.wireguard import crypto, keys
from trivpn.registry.pg_store import PgRegistry

pytestmark = pytest.mark.postgres

KEY = crypto.public_key(keys.generate_private_key(lambda n: b"\x0c" * n))
MIB = 1 << 20
PUSHED = 1.0  # s: the bound on a change reaching every gateway


async def other_machine(url: str, change: Callable[[PgRegistry], object]) -> None:
    """A `trivpn peer …` somewhere else: its own connection, committed."""

    def run() -> None:
        with PgRegistry.open(url) as registry:
            change(registry)

    await trio.to_thread.run_sync(run)


def state(g: Gateway) -> PeerState | None:
    return g.front.peer_state(KEY)[0] if KEY in g.front.device.peers else None


async def test_peer_add_disable_remove_reach_every_gateway_within_a_second(
    pg_url: str, tmp_path: Path
) -> None:
    gateways = [gateway(pg_url, tmp_path / f"gw{i}", f"gw{i}") for i in (1, 2)]
    async with trio.open_nursery() as nursery:
        for g in gateways:
            await nursery.start(g.run)
            await g.listening()

        async def applied(
            change: Callable[[PgRegistry], object], wanted: PeerState | None
        ) -> float:
            """Seconds from the commit's start until every gateway has it."""
            start = time.monotonic()
            await other_machine(pg_url, change)
            for g in gateways:
                await until(functools.partial(lambda g: state(g) is wanted, g), 10.0)
            return time.monotonic() - start

        assert await applied(lambda r: r.add("alice", KEY, None, PLAN), PeerState.ACTIVE) < PUSHED
        disable = Policy(enabled=False)
        assert (
            await applied(lambda r: r.update_policy("alice", lambda p: disable), PeerState.DISABLED)
            < PUSHED
        )
        assert all(g.front.device.peers[KEY].blocked for g in gateways)
        assert await applied(lambda r: r.remove("alice"), None) < PUSHED
        nursery.cancel_scope.cancel()


async def test_a_quota_crossed_by_the_fleets_sum_blocks_the_peer_on_every_gateway(
    pg_url: str, tmp_path: Path
) -> None:
    quota = Policy(quota=Quota(4 * MIB, QuotaPeriod.TOTAL))
    await other_machine(pg_url, lambda r: r.add("alice", KEY, None, PLAN, policy=quota))
    one, two, idle = gateways = [gateway(pg_url, tmp_path / f"gw{i}", f"gw{i}") for i in (1, 2, 3)]
    async with trio.open_nursery() as nursery:
        for g in gateways:
            await nursery.start(g.run)
            await g.listening()
            await until(functools.partial(lambda g: state(g) is PeerState.ACTIVE, g), 10.0)
        one.front.device.peers[KEY].rx_bytes += 3 * MIB // 2  # what the data path counts
        two.front.device.peers[KEY].tx_bytes += 3 * MIB // 2
        await trio.sleep(3.0)  # several flushes: 3 MiB in all, under the quota
        assert all(state(g) is PeerState.ACTIVE for g in gateways)
        assert idle.front.policies.usage(KEY).total == 3 * MIB  # counted nothing, knows the sum
        # 3.5 MiB on each gateway's own count, 4 MiB (the quota) in the fleet's sum
        one.front.device.peers[KEY].rx_bytes += MIB // 2
        two.front.device.peers[KEY].tx_bytes += MIB // 2
        for g in gateways:  # within a flush and a reload (FLUSH + OTHERS_RELOAD_INTERVAL)
            await until(functools.partial(lambda g: state(g) is PeerState.OVER_QUOTA, g), 4.0)
            assert g.front.device.peers[KEY].blocked
        nursery.cancel_scope.cancel()
    with PgRegistry.open(pg_url) as registry:
        assert registry.usage_records()[KEY].total == 4 * MIB
