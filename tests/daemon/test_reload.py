"""trivpn.daemon.reload: SIGHUP re-reads the config file and applies what can change live."""

from __future__ import annotations

import ast
import datetime
import ipaddress
import logging
from pathlib import Path
from typing import cast

import attrs
import pytest
from support.fakes import fake_udp, make_front

from trivpn.config import Config, load_config
from trivpn.daemon import reload as reload_module
from trivpn.daemon.reload import changed_keys, plan_reload, reload_config
from trivpn.dataplane.wireguard.front import WireGuardFront
from trivpn.proto import toyvpn, uapi
from trivpn.proto.policy import PeerState, Policy
from trivpn.proto.wireguard import crypto, keys
from trivpn.registry.store import AddressPlan
from trivpn.registry.sync import PeerSync

net = ipaddress.ip_network
SERVER_PRIVATE = crypto.clamp(bytes([1]) * 32)
ALICE, BOB, CAROL = (crypto.public_key(crypto.clamp(bytes([i]) * 32)) for i in (2, 3, 4))


def peer(name: str, key: bytes, address: str) -> str:
    return f"""
[[wireguard.peers]]
name = "{name}"
public_key = "{keys.encode_key(key)}"
allowed_ips = ["{address}"]
"""


def config_text(
    *peers: str,
    address: str = "10.8.0.1/24",
    port: int = 51820,
    private_key: bytes = SERVER_PRIVATE,
    keepalive: float = 15.0,
) -> str:
    return f"""
[interface]
name = "tvtest0"
address = ["{address}"]

[toyvpn]
enabled = true
secret = "lab-secret-1234"
pool = "10.8.0.128/25"
keepalive = {keepalive}

[wireguard]
enabled = true
listen = "0.0.0.0:{port}"
private_key = "{keys.encode_key(private_key)}"
""" + "".join(peers)


@attrs.define
class Target:
    """Stands in for trivpn.daemon.server.Server."""

    cfg: Config
    wireguard: WireGuardFront | None
    toyvpn: toyvpn.ToyVpnServer | None
    peersync: PeerSync | None = None


def start(path: Path, text: str) -> Target:
    path.write_text(text)
    cfg = load_config(path)
    front = make_front(cfg=cfg.wireguard, private_key=SERVER_PRIVATE)
    toy = toyvpn.ToyVpnServer(
        secret=cfg.toyvpn.secret,
        pool=cfg.toyvpn.pool,
        mtu=1420,
        keepalive=cfg.toyvpn.keepalive,
        idle_timeout=cfg.toyvpn.idle_timeout,
    )
    return Target(cfg, front, toy)


async def test_an_invalid_file_keeps_the_running_config_and_lists_every_problem(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "trivpn.toml"
    target = start(path, config_text(peer("alice", ALICE, "10.8.0.2/32")))
    running = target.cfg
    path.write_text(
        config_text(peer("alice", ALICE, "10.8.0.2/32"), port=70000).replace(
            'name = "tvtest0"', 'name = "a name far too long for linux"'
        )
    )
    caplog.set_level(logging.INFO)
    assert await reload_config(target) is False
    assert target.cfg is running
    assert target.wireguard is not None and ALICE in target.wireguard.device.peers
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors[0] == f"reload: {path} is invalid; the running config stays:"
    assert any("interface.name" in e for e in errors[1:])
    assert any("wireguard.listen" in e for e in errors[1:])

    path.unlink()
    assert await reload_config(target) is False  # a missing file: the same
    assert target.cfg is running


async def test_a_valid_file_applies_static_peer_changes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "trivpn.toml"
    target = start(
        path, config_text(peer("alice", ALICE, "10.8.0.2/32"), peer("bob", BOB, "10.8.0.3/32"))
    )
    front = target.wireguard
    assert front is not None
    alice = front.device.peers[ALICE]
    front.uapi_apply([uapi.RemovePeer(BOB)])  # through wg: stays while the file has bob as is
    path.write_text(
        config_text(
            peer("alice", ALICE, "10.8.0.12/32"),
            peer("bob", BOB, "10.8.0.3/32"),
            peer("carol", CAROL, "10.8.0.4/32"),
            keepalive=25.0,
        ).replace("[wireguard]", 'dns = ["192.0.2.53"]\n\n[wireguard]')
    )
    caplog.set_level(logging.INFO)
    assert await reload_config(target) is True
    assert front.device.peers[ALICE] is alice  # changed in place: its sessions go on
    assert alice.allowed_ips == (net("10.8.0.12/32"),)
    assert BOB not in front.device.peers
    assert front.device.peers[CAROL].allowed_ips == (net("10.8.0.4/32"),)
    assert front.router.lookup_bytes(ipaddress.ip_address("10.8.0.2").packed) is None
    assert target.toyvpn is not None and target.toyvpn.keepalive == 25.0
    assert target.toyvpn._template.dns == (ipaddress.ip_address("192.0.2.53"),)
    assert [p.name for p in target.cfg.wireguard.peers] == ["alice", "bob", "carol"]
    assert "'bob'" not in caplog.text
    for line in (
        "reload: static peer 'alice' changed",
        "reload: static peer 'carol' added",
        "reload: applied toyvpn.dns, toyvpn.keepalive",
    ):
        assert line in caplog.text

    path.write_text(config_text(peer("carol", CAROL, "10.8.0.4/32")))
    assert await reload_config(target) is True
    assert set(front.device.peers) == {CAROL}
    assert alice.removed
    assert "reload: static peer 'alice' removed" in caplog.text

    caplog.clear()
    assert await reload_config(target) is True
    assert "reload: nothing changed" in caplog.text

    # bob's entry changed in the file: now the file's bob is applied
    path.write_text(
        config_text(peer("carol", CAROL, "10.8.0.4/32"), peer("bob", BOB, "10.8.0.5/32"))
    )
    assert await reload_config(target) is True
    assert front.device.peers[BOB].allowed_ips == (net("10.8.0.5/32"),)
    assert "reload: static peer 'bob' added" in caplog.text


async def test_wg_set_changes_to_a_static_peer_survive_a_reload_that_leaves_it_alone(
    tmp_path: Path,
) -> None:
    path = tmp_path / "trivpn.toml"
    text = config_text(peer("alice", ALICE, "10.8.0.2/32"), peer("bob", BOB, "10.8.0.3/32"))
    target = start(path, text)
    front = target.wireguard
    assert front is not None
    front.uapi_apply(
        [uapi.ConfigurePeer(ALICE, allowed_ips=(net("10.66.0.0/24"),), persistent_keepalive=25)]
    )
    path.write_text(text.replace("10.8.0.3/32", "10.8.0.7/32"))  # bob changes, alice not
    assert await reload_config(target) is True
    alice = front.device.peers[ALICE]
    assert alice.allowed_ips == (net("10.8.0.2/32"), net("10.66.0.0/24"))
    assert alice.persistent_keepalive == 25
    assert front.device.peers[BOB].allowed_ips == (net("10.8.0.7/32"),)


async def test_keys_that_need_a_restart_are_reported_and_keep_their_value(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "trivpn.toml"
    target = start(path, config_text(peer("alice", ALICE, "10.8.0.2/32")))
    running = target.cfg
    path.write_text(
        config_text(
            peer("alice", ALICE, "10.8.0.2/32"),
            address="10.9.0.1/24",
            port=51821,
            private_key=crypto.clamp(bytes([9]) * 32),
        ).replace('pool = "10.8.0.128/25"', 'pool = "10.9.0.128/25"')
    )
    caplog.set_level(logging.INFO)
    assert await reload_config(target) is True
    warning = next(r.getMessage() for r in caplog.records if "needs a restart" in r.getMessage())
    for key in (
        "interface.address",
        "toyvpn.pool",
        "wireguard.listen",
        "wireguard.private_key",
    ):
        assert key in warning
    assert target.cfg.interface.address == running.interface.address
    assert target.cfg.wireguard.listen == running.wireguard.listen
    assert target.cfg.wireguard.private_key == running.wireguard.private_key
    assert keys.encode_key(crypto.clamp(bytes([9]) * 32)) not in caplog.text  # never a key


def test_the_private_key_is_compared_with_the_running_one(tmp_path: Path) -> None:
    path = tmp_path / "trivpn.toml"
    path.write_text(config_text())
    from_file = load_config(path)
    made_by_server = attrs.evolve(
        from_file, wireguard=attrs.evolve(from_file.wireguard, private_key=None)
    )
    # The server made the key file itself: the config it started with had no key.
    assert changed_keys(made_by_server, from_file, SERVER_PRIVATE) == []
    assert changed_keys(made_by_server, from_file) == ["wireguard.private_key"]
    plan = plan_reload(from_file, from_file, SERVER_PRIVATE)
    assert (plan.live, plan.needs_restart, plan.config) == ((), (), from_file)


async def test_a_reload_hands_the_new_static_peers_to_the_registry_sync(
    tmp_path: Path,
) -> None:
    path = tmp_path / "trivpn.toml"
    target = start(path, config_text())
    assert target.wireguard is not None
    seen: list[tuple[bytes, ...]] = []

    class Sync:
        def set_static(self, static: object, plan: AddressPlan) -> None:
            seen.append(tuple(p.public_key for p in static))  # type: ignore[attr-defined]
            assert net("10.8.0.2/32") in plan.reserved

    target.peersync = cast(PeerSync, Sync())
    path.write_text(config_text(peer("alice", ALICE, "10.8.0.2/32")))
    assert await reload_config(target) is True
    assert seen == [(ALICE,)]


async def test_a_static_peer_with_the_running_key_is_skipped_after_a_runtime_key_change(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # `wg set private-key` gave the server carol's key; the file then gains a peer carol
    path = tmp_path / "trivpn.toml"
    target = start(path, config_text(peer("alice", ALICE, "10.8.0.2/32")))
    front = target.wireguard
    assert front is not None
    assert front.set_private_key(crypto.clamp(bytes([4]) * 32))
    path.write_text(
        config_text(peer("alice", ALICE, "10.8.0.2/32"), peer("carol", CAROL, "10.8.0.4/32"))
    )
    caplog.set_level(logging.INFO)
    assert await reload_config(target) is True
    assert set(front.device.peers) == {ALICE}
    assert "reload: static peer 'carol' skipped: it has the server's own public key" in caplog.text


async def test_a_new_fwmark_applies_and_a_refused_one_keeps_the_running_value(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "trivpn.toml"
    text = config_text(peer("alice", ALICE, "10.8.0.2/32"))
    target = start(path, text)
    front = target.wireguard
    assert front is not None
    sock = fake_udp(front)
    caplog.set_level(logging.INFO)
    path.write_text(text.replace("[wireguard]\n", "[wireguard]\nfwmark = 0x51\n"))
    assert await reload_config(target) is True
    assert sock.fwmark == 0x51 == target.cfg.wireguard.fwmark
    assert "reload: applied wireguard.fwmark" in caplog.text

    sock.refuse_mark = True  # as the kernel does without CAP_NET_ADMIN
    path.write_text(text.replace("[wireguard]\n", "[wireguard]\nfwmark = 0x52\n"))
    assert await reload_config(target) is True  # the rest of the file still applies
    assert sock.fwmark == 0x51 == target.cfg.wireguard.fwmark
    assert "reload: wireguard.fwmark: cannot set the fwmark: Operation not permitted" in (
        caplog.text
    )


def test_reload_knows_the_domain_error_not_the_uapi() -> None:
    names: set[str] = set()  # modules and names imported by trivpn.daemon.reload
    for node in ast.walk(ast.parse(Path(reload_module.__file__).read_text())):
        if isinstance(node, ast.ImportFrom):
            names.add(node.module or "")
        if isinstance(node, ast.Import | ast.ImportFrom):
            names.update(alias.name for alias in node.names)
    assert "InterfaceSettingError" in names
    assert not [name for name in names if "uapi" in name], names


async def test_a_reload_blocks_and_unblocks_a_static_peer_in_place(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "trivpn.toml"
    alice = peer("alice", ALICE, "10.8.0.2/32")
    target = start(path, config_text(alice))
    front = target.wireguard
    assert front is not None
    before = front.device.peers[ALICE]
    assert front.peer_state(ALICE)[0] is PeerState.ACTIVE
    caplog.set_level(logging.INFO)

    path.write_text(config_text(alice + "enabled = false\n"))
    assert await reload_config(target) is True
    assert front.peer_state(ALICE) == (PeerState.DISABLED, Policy(enabled=False))
    assert front.device.peers[ALICE] is before and before.blocked
    assert "reload: static peer 'alice' changed" in caplog.text
    assert "wireguard: peer alice blocked: disabled" in caplog.text

    path.write_text(config_text(alice + "expires = 2020-01-01\n"))
    assert await reload_config(target) is True
    expired = datetime.datetime(2020, 1, 2, tzinfo=datetime.UTC)
    assert front.peer_state(ALICE) == (PeerState.EXPIRED, Policy(expires=expired))

    path.write_text(config_text(alice))
    assert await reload_config(target) is True
    assert front.peer_state(ALICE)[0] is PeerState.ACTIVE and not before.blocked
    assert "wireguard: peer alice active again (was expired)" in caplog.text
