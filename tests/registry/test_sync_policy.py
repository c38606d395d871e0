"""The registry sync carries each peer's policy to the front within a second: `peer disable`,
`peer enable` and `peer set --expires` (other connections' commits), on a real SQLite file
and a real PostgreSQL database (tests/registry/conftest.py)."""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
from collections.abc import Callable
from typing import TypeVar

import trio
import trio.testing
from support.fakes import make_front

from trivpn.proto.policy import PeerState, Policy
from trivpn.proto.wireguard import crypto, keys
from trivpn.registry.api import RegistryStore
from trivpn.registry.store import AddressPlan
from trivpn.registry.sync import PeerSync

T = TypeVar("T")
PLAN = AddressPlan(subnets=(ipaddress.IPv4Network("10.8.0.0/24"),))
KEY = crypto.public_key(keys.generate_private_key(lambda n: b"\x09" * n))


async def inline(fn: Callable[[], T], /) -> T:
    await trio.lowlevel.checkpoint()
    return fn()


async def test_disable_enable_and_expiry_reach_the_front_within_a_second(
    open_store: Callable[[], RegistryStore], autojump_clock: trio.testing.MockClock
) -> None:
    cli = open_store()  # what `trivpn peer …` commits through
    cli.add("alice", KEY, None, PLAN)
    front = make_front()
    sync = PeerSync(front, lambda create: open_store(), (), PLAN, run_sync=inline)

    async def applied(wanted: PeerState) -> float:
        committed = trio.current_time()
        while front.peer_state(KEY)[0] is not wanted:
            await trio.sleep(0.01)
        return trio.current_time() - committed

    async with trio.open_nursery() as nursery:
        await nursery.start(sync.run)
        peer = front.device.peers[KEY]
        assert not peer.blocked
        cli.update_policy("alice", lambda p: dataclasses.replace(p, enabled=False))
        assert await applied(PeerState.DISABLED) <= 1.0
        assert peer.blocked and front.device.peers[KEY] is peer  # the same peer, blocked

        cli.update_policy("alice", lambda p: dataclasses.replace(p, enabled=True))
        assert await applied(PeerState.ACTIVE) <= 1.0
        assert not peer.blocked

        past = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
        cli.update_policy("alice", lambda p: dataclasses.replace(p, expires=past))
        assert await applied(PeerState.EXPIRED) <= 1.0
        assert front.peer_state(KEY)[1] == Policy(expires=past)
        nursery.cancel_scope.cancel()
    cli.close()
