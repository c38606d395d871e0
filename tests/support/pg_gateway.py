"""A gateway's registry side on a real PostgreSQL, on the real trio clock (the database
thread and the listener's are real threads): a fake front (support.fakes) with its
`PeerSync`, `UsageKeeper` and `ChangeListener`, wired as trivpn.daemon.server wires them, but
with the poll slowed to ``POLL`` so that only the push can apply a change within a second.
And the config file of an operator's CLI (`trivpn peer …`) on such a registry: `cli_config`."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from pathlib import Path

import attrs
import trio

from support.fakes import make_front
from trivpn.config import StateConfig, WireGuardPeerConfig
from trivpn.dataplane.wireguard.front import WireGuardFront
from trivpn.dataplane.wireguard.policy import PendingUsage
from trivpn.registry.pg_listen import ChangeListener
from trivpn.registry.store import AddressPlan
from trivpn.registry.sync import PeerSync, registry_opener
from trivpn.registry.usage_sync import UsageKeeper

PLAN = AddressPlan(subnets=(ipaddress.IPv4Network("10.8.0.0/24"),))
POLL = 60.0  # s: longer than any test waits
FLUSH = 0.5  # s: the keepers' flush interval


@attrs.define
class Gateway:
    front: WireGuardFront
    sync: PeerSync
    keeper: UsageKeeper[PendingUsage]
    listener: ChangeListener

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """As the server: the keeper, then the sync and the listener; until cancelled."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.keeper.run)
            await nursery.start(self.sync.run)
            await nursery.start(self.listener.run)
            task_status.started()

    async def listening(self, seconds: float = 10.0) -> None:
        await until(lambda: self.listener.connections > 0, seconds)


def gateway(url: str, tmp: Path, node: str, *static: WireGuardPeerConfig) -> Gateway:
    state = StateConfig(dir=tmp, database=url, node=node)
    front = make_front(*static)
    sync = PeerSync(front, registry_opener(state), static, PLAN, poll_interval=POLL)
    keeper = UsageKeeper(front.policies, sync.with_registry, flush_interval=FLUSH)
    sync.on_foreign_commit = keeper.registry_changed
    listener = ChangeListener.of(state, peers_changed=sync.poke, usage_added=keeper.others_added)
    return Gateway(front, sync, keeper, listener)


def cli_config(tmp_path: Path, state: str) -> Path:
    """A config for `trivpn peer …` (no server runs on its interface) with ``state`` in its
    [state] section: `fleet_state` for a fleet's gateway."""
    path = tmp_path / "trivpn.toml"
    path.write_text(
        '[interface]\nname = "tvpgcli0"\naddress = ["10.8.0.1/24"]\n'
        '[wireguard]\nenabled = true\nprivate_key_file = "server.key"\n'
        'public_endpoint = "vpn.example.com:51820"\n'
        f'[state]\ndir = "state"\n{state}'
    )
    return path


def fleet_state(url: str, node: str = "gw1") -> str:
    """[state] lines of a gateway named ``node`` on the PostgreSQL registry at ``url``."""
    return f'database = "{url}"\nnode = "{node}"\n'


async def until(done: Callable[[], bool], seconds: float) -> float:
    """Wait (real time) until ``done()``; how long it took. Fails after ``seconds``."""
    start = time.monotonic()
    with trio.fail_after(seconds):
        while not done():
            await trio.sleep(0.01)
    return time.monotonic() - start
