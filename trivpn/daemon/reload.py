"""SIGHUP: re-read the config file and apply in place what can change without a restart.

An invalid file changes nothing: every problem is logged and the running config stays. A
valid one is compared with the running config key by key (`plan_reload`); the keys in
`LIVE_KEYS` are applied (`apply_reload`), every other changed key is logged as "needs a
restart" and keeps its running value, so that the server's config stays what it runs.

Static peers are applied as they changed in the file: one whose entry is as before is left as
it runs, `wg set` changes and all (those last until a restart, as on wireguard-go); one whose
entry changed is made to match it, and one the file no longer has is removed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Final, Protocol

import attrs
import trio

from trivpn.config import Config, ConfigError, WireGuardPeerConfig, load_config
from trivpn.dataplane.wireguard.front import WireGuardFront
from trivpn.dataplane.wireguard.interface import InterfaceSettingError
from trivpn.dataplane.wireguard.peers import peer_config
from trivpn.proto import toyvpn
from trivpn.proto.wireguard.crypto import clamp
from trivpn.registry.store import AddressPlan
from trivpn.registry.sync import PeerSync

log = logging.getLogger("trivpn")

# "section.key" of what a reload applies; ToyVPN's apply to sessions that start afterwards.
# The wireguard client_* keys and public_endpoint are read only by `trivpn peer add`.
LIVE_KEYS: Final = frozenset(
    {
        "wireguard.peers",
        "wireguard.public_endpoint",
        "wireguard.client_dns",
        "wireguard.client_allowed_ips",
        "wireguard.fwmark",
        "toyvpn.keepalive",
        "toyvpn.idle_timeout",
        "toyvpn.dns",
        "toyvpn.routes",
        "toyvpn.search_domain",
    }
)
PRIVATE_KEY: Final = "wireguard.private_key"


@attrs.frozen
class ReloadPlan:
    live: tuple[str, ...]  # changed keys that apply now
    needs_restart: tuple[str, ...]  # changed keys that keep their running value
    config: Config  # the running config with the live keys' new values


def changed_keys(old: Config, new: Config, running_private_key: bytes | None = None) -> list[str]:
    """Every "section.key" whose value differs. The private key is compared with the one
    the server runs with (`running_private_key`), which it may have made itself."""
    changed: list[str] = []
    for section in attrs.fields(Config):
        before, after = getattr(old, section.name), getattr(new, section.name)
        if not attrs.has(type(before)):
            continue  # `source`: where the file is, not a setting
        for field in attrs.fields(type(before)):
            key = f"{section.name}.{field.name}"
            was, now = getattr(before, field.name), getattr(after, field.name)
            if key == PRIVATE_KEY:
                was = running_private_key if running_private_key is not None else was
                was, now = _clamped(was), _clamped(now)
            if was != now:
                changed.append(key)
    return changed


def _clamped(key: bytes | None) -> bytes | None:
    return None if key is None else clamp(key)


def plan_reload(old: Config, new: Config, running_private_key: bytes | None = None) -> ReloadPlan:
    changed = changed_keys(old, new, running_private_key)
    live = tuple(k for k in changed if k in LIVE_KEYS)
    sections: dict[str, dict[str, Any]] = {}
    for key in live:
        section, name = key.split(".")
        sections.setdefault(section, {})[name] = getattr(getattr(new, section), name)
    config = attrs.evolve(
        old,
        **{s: attrs.evolve(getattr(old, s), **values) for s, values in sections.items()},
    )
    return ReloadPlan(live, tuple(k for k in changed if k not in LIVE_KEYS), config)


def apply_static_peers(
    front: WireGuardFront,
    old: Sequence[WireGuardPeerConfig],
    new: Sequence[WireGuardPeerConfig],
    peersync: PeerSync | None,
    plan: AddressPlan,
) -> list[str]:
    """Apply what changed from the static peers ``old`` to ``new``; one line per peer changed.
    Order: removed ones go first, then registry peers that now clash leave (static wins), then
    new and changed static peers are applied. An unchanged entry leaves its peer alone."""
    done: list[str] = []
    before = {p.public_key: p for p in old}
    kept = {p.public_key for p in new}
    for peer in old:
        if peer.public_key not in kept and front.discard_peer(peer.public_key):
            done.append(f"static peer {peer.name!r} removed")
    if peersync is not None:
        peersync.set_static(new, plan)
    own_key = front.device.public_key  # the running one: `wg set` may have changed it
    for peer in new:
        if before.get(peer.public_key) == peer:
            continue
        if peer.public_key == own_key:
            done.append(f"static peer {peer.name!r} skipped: it has the server's own public key")
            continue
        result = front.apply_peer_config(peer_config(peer), policy=peer.policy)
        if result is not None:
            done.append(f"static peer {peer.name!r} {result}")
    return done


def _apply_fwmark(front: WireGuardFront, plan: ReloadPlan, running: int) -> ReloadPlan:
    """The file's fwmark on the socket; if the kernel refuses, the running one stays."""
    mark = plan.config.wireguard.fwmark
    try:
        front.set_fwmark(mark, from_config=True)
    except InterfaceSettingError as e:
        log.error("reload: wireguard.fwmark: %s; the running value stays", e)
        wireguard = attrs.evolve(plan.config.wireguard, fwmark=running)
        live = tuple(k for k in plan.live if k != "wireguard.fwmark")
        return attrs.evolve(plan, live=live, config=attrs.evolve(plan.config, wireguard=wireguard))
    return plan


def apply_toyvpn(server: toyvpn.ToyVpnServer, cfg: Config) -> None:
    """The ToyVPN parameters for sessions that start from now on."""
    toy = cfg.toyvpn
    server.keepalive = toy.keepalive
    server.idle_timeout = toy.idle_timeout
    server.set_client_parameters(toy.dns, toy.routes, toy.search_domain)


class ReloadTarget(Protocol):
    """What a reload changes: the Server (trivpn.daemon.server), or a test's stand-in."""

    cfg: Config
    wireguard: WireGuardFront | None
    toyvpn: toyvpn.ToyVpnServer | None
    peersync: PeerSync | None


def apply_reload(target: ReloadTarget, new: Config) -> ReloadPlan:
    """Apply a valid new config to the running server (no blocking I/O); logs what it did."""
    front = target.wireguard
    running_key = front.device.identity.private_key if front is not None else None
    plan = plan_reload(target.cfg, new, running_key)
    done: list[str] = []
    if front is not None:
        public_key = front.device.public_key
        address_plan = AddressPlan.from_config(plan.config, public_key)
        done += apply_static_peers(
            front,
            target.cfg.wireguard.peers,
            plan.config.wireguard.peers,
            target.peersync,
            address_plan,
        )
        if "wireguard.fwmark" in plan.live:
            plan = _apply_fwmark(front, plan, target.cfg.wireguard.fwmark)
    if target.toyvpn is not None:
        apply_toyvpn(target.toyvpn, plan.config)
    target.cfg = plan.config
    for line in done:
        log.info("reload: %s", line)
    others = [k for k in plan.live if k != "wireguard.peers"]
    if others:
        log.info("reload: applied %s", ", ".join(others))
    if plan.needs_restart:
        log.warning(
            "reload: needs a restart (the running value stays until then): %s",
            ", ".join(plan.needs_restart),
        )
    if not (done or others or plan.needs_restart):
        log.info("reload: nothing changed")
    return plan


async def reload_config(target: ReloadTarget) -> bool:
    """SIGHUP: read the config file again (in a thread) and apply it. Whether it was valid;
    never raises (a failed reload must not stop the server)."""
    path = target.cfg.source
    log.info("reload: reading %s", path)
    try:
        new = await trio.to_thread.run_sync(load_config, path)
    except ConfigError as e:
        log.error("reload: %s is invalid; the running config stays:", path)
        for problem in e.problems:
            log.error("reload:   %s", problem)
        return False
    try:
        apply_reload(target, new)
    except Exception:
        log.exception("reload: applying %s failed part way", path)
        return False
    return True
