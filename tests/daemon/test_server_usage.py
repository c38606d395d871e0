"""The server's usage wiring on a SIGHUP: what the peers counted is stored before the reload
replaces them, and a peer the file adds counts on from its stored usage (loaded at start-up
for every key). A real front, registry sync, usage keeper and SQLite file; no sockets."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import trio
import trio.testing
from support.fakes import make_front, virtual_wallclock

from trivpn.config import load_config
from trivpn.daemon.server import Server
from trivpn.proto.usage import UsageDelta
from trivpn.proto.wireguard import crypto, keys
from trivpn.registry.store import AddressPlan, Registry, registry_path
from trivpn.registry.sync import PeerSync, registry_opener
from trivpn.registry.usage_sync import UsageKeeper

SERVER_PRIVATE = crypto.clamp(bytes([1]) * 32)
ALICE, CAROL = (crypto.public_key(crypto.clamp(bytes([i]) * 32)) for i in (2, 4))
MIB = 1 << 20
T = TypeVar("T")


async def inline(fn: Callable[[], T], /) -> T:
    """The 'thread' work inline: deterministic under MockClock."""
    await trio.lowlevel.checkpoint()
    return fn()


def peer(name: str, key: bytes, address: str, extra: str = "") -> str:
    return f"""
[[wireguard.peers]]
name = "{name}"
public_key = "{keys.encode_key(key)}"
allowed_ips = ["{address}"]
{extra}
"""


def config_text(*peers: str) -> str:
    return f"""
[interface]
name = "tvtest0"
address = ["10.8.0.1/24"]

[state]
dir = "state"

[wireguard]
enabled = true
listen = "0.0.0.0:51820"
private_key = "{keys.encode_key(SERVER_PRIVATE)}"
""" + "".join(peers)


def totals(path: Path) -> dict[bytes, int]:
    with Registry.open(path, create=False) as registry:
        return {key: record.total for key, record in registry.usage_records().items()}


async def test_a_reload_stores_usage_before_and_reads_it_again_after(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    conf = tmp_path / "trivpn.toml"
    conf.write_text(config_text(peer("alice", ALICE, "10.8.0.2/32")))
    cfg = load_config(conf)
    db = registry_path(cfg.state.dir)
    with Registry.open(db) as registry:  # carol's usage from an earlier run
        registry.add_usage([UsageDelta(CAROL, 5 * MIB, 0)], virtual_wallclock())
    server = Server(cfg)
    front = server.wireguard = make_front(
        cfg=cfg.wireguard, private_key=SERVER_PRIVATE, wallclock=virtual_wallclock
    )

    sync = server.peersync = PeerSync(
        front,
        registry_opener(cfg.state),
        cfg.wireguard.peers,
        AddressPlan.from_config(cfg),
        run_sync=inline,
    )
    # no interval flush during the test (the reload's thread lets the mock clock jump)
    keeper = server.usage = UsageKeeper(
        front.policies, sync.with_registry, flush_interval=3600, wallclock=virtual_wallclock
    )
    sync.on_foreign_commit = keeper.registry_changed
    async with trio.open_nursery() as nursery:
        await nursery.start(keeper.run)
        await nursery.start(sync.run)
        await trio.sleep(1.0)
        front.device.peers[ALICE].rx_bytes += 1234
        conf.write_text(config_text(peer("carol", CAROL, "10.8.0.4/32", 'quota = "4MiB/total"')))
        await server._reload()
        assert ALICE not in front.device.peers
        assert totals(db)[ALICE] == 1234  # stored at the reload, not at the interval
        carol = front.device.peers[CAROL]
        with trio.fail_after(0.1):
            while not carol.blocked:  # its 5 MiB from the registry: over its quota at once
                await trio.sleep(0.001)
        nursery.cancel_scope.cancel()
    assert totals(db) == {ALICE: 1234, CAROL: 5 * MIB}
