"""The front's peers: adding, removing and the one update that the registry sync, the UAPI
(`wg set`) and a reload all go through."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Literal

import attrs

from trivpn.config import WireGuardPeerConfig
from trivpn.dataplane.wireguard.output import OutputSink
from trivpn.dataplane.wireguard.policy import PeerPolicies
from trivpn.dataplane.wireguard.routes import PeerRoute, PeerRoutes
from trivpn.proto.ip import IPNetwork
from trivpn.proto.policy import ACTIVE_POLICY, Policy
from trivpn.proto.wireguard import Device, Peer, PeerConfig

Address = tuple[str, int]
Outcome = Literal["added", "changed"] | None  # None: the peer looked like that already


class Keep(enum.Enum):
    """A setting a PeerUpdate leaves as it is (where None is a value: "no preshared key")."""

    KEEP = enum.auto()


KEEP = Keep.KEEP


@attrs.frozen
class PeerUpdate:
    """What one peer is to look like; a peer missing is added. The defaults keep a
    setting as the peer has it."""

    public_key: bytes
    name: str = ""  # "": keep
    preshared_key: bytes | Keep | None = attrs.field(default=KEEP, repr=False)
    endpoint: Address | None = None  # None: keep (the endpoint it roamed to)
    persistent_keepalive: int | None = None  # None: keep; 0: off
    allowed_ips: tuple[IPNetwork, ...] | None = None  # None: keep
    policy: Policy | None = None  # None: keep


@attrs.frozen
class UpdateResult:
    outcome: Outcome
    took_from: tuple[bytes, ...] = ()  # the keys of peers that lost a network to it


def peer_config(cfg: WireGuardPeerConfig) -> PeerConfig:
    """A static (TOML) or registry peer as the device takes it."""
    return PeerConfig(
        public_key=cfg.public_key,
        preshared_key=cfg.preshared_key,
        allowed_ips=cfg.allowed_ips,
        endpoint=(cfg.endpoint.host, cfg.endpoint.port) if cfg.endpoint else None,
        persistent_keepalive=cfg.persistent_keepalive,
        name=cfg.name,
    )


def _settings(peer: Peer) -> tuple[object, ...]:
    """What an update may change, but the name."""
    return (peer.preshared_key, peer.endpoint, peer.persistent_keepalive, peer.allowed_ips)


class PeerSet:
    """The device's peers with their routes; the one place a peer is added, changed or
    removed."""

    def __init__(
        self, device: Device, routes: PeerRoutes, sink: OutputSink, policies: PeerPolicies
    ) -> None:
        self.device = device
        self.routes = routes
        self._sink = sink
        self.policies = policies

    def add(self, config: PeerConfig, policy: Policy = ACTIVE_POLICY) -> tuple[Peer, list[Peer]]:
        """Add a peer (at runtime too) and route its allowed_ips to it; also returns the
        peers it took a network from. A policy that blocks it blocks it before any packet."""
        # The route table holds the networks; the device's copy of the config does not.
        peer = self.device.add_peer(attrs.evolve(config, allowed_ips=()))
        self.policies.attach(peer)
        self.policies.set(peer, policy)
        self.routes.attach(PeerRoute(peer, self.device, self._sink))
        losers = self.set_allowed_ips(peer, config.allowed_ips)
        self._sink.wake_timers()
        return peer, losers

    def remove(self, public_key: bytes) -> None:
        """Forget a peer: its routes go at once, its sessions end (keys erased)."""
        peer = self.device.peers[public_key]
        self.routes.detach(peer)
        self.device.remove_peer(public_key)
        self.policies.forget(peer)
        self._sink.routes_changed()

    def discard(self, public_key: bytes) -> bool:
        """Remove the peer if there is one; whether there was."""
        if public_key not in self.device.peers:
            return False
        self.remove(public_key)
        return True

    def rename(self, public_key: bytes, name: str) -> None:
        peer = self.device.peers.get(public_key)
        if peer is not None:
            peer.name = name

    def set_allowed_ips(self, peer: Peer, networks: Iterable[IPNetwork]) -> list[Peer]:
        """Route exactly ``networks`` to ``peer``; returns the peers that lost one to it."""
        losers = self.routes.assign(peer, networks)
        self._sink.routes_changed()
        return losers

    def update(self, update: PeerUpdate) -> UpdateResult:
        """Make the peer of ``update.public_key`` look like ``update`` (add it if missing).
        A new preshared key ends its sessions (in place: its counters go on); new
        allowed_ips, endpoint or keepalive leave them running."""
        peer = self.device.peers.get(update.public_key)
        if peer is None:
            psk = update.preshared_key
            peer, took_from = self.add(
                PeerConfig(
                    public_key=update.public_key,
                    preshared_key=None if psk is KEEP else psk,
                    allowed_ips=update.allowed_ips or (),
                    endpoint=update.endpoint,
                    persistent_keepalive=update.persistent_keepalive,
                    name=update.name,
                ),
                update.policy or ACTIVE_POLICY,
            )
            return UpdateResult("added", _keys(took_from))
        before = _settings(peer)
        if update.preshared_key is not KEEP:
            self.device.set_preshared_key(peer, update.preshared_key)
        if update.endpoint is not None and update.endpoint != peer.endpoint:
            peer.endpoint = update.endpoint
            self._sink.routes_changed()  # a route may hold the new endpoint
        keepalive = update.persistent_keepalive
        if keepalive is not None and (keepalive or None) != peer.persistent_keepalive:
            # turning it on sends a keepalive at once, as wg(8) does
            self.device.set_persistent_keepalive(peer, keepalive)
        losers: list[Peer] = []
        if update.allowed_ips is not None:
            wanted = tuple(dict.fromkeys(update.allowed_ips))
            if wanted != peer.allowed_ips:
                losers = self.set_allowed_ips(peer, wanted)
        renamed = bool(update.name) and update.name != peer.name
        if renamed:
            peer.name = update.name
        policy_changed = update.policy is not None and self.policies.set(peer, update.policy)
        self._sink.wake_timers()
        changed = renamed or policy_changed or _settings(peer) != before
        return UpdateResult("changed" if changed else None, _keys(losers))


def _keys(peers: list[Peer]) -> tuple[bytes, ...]:
    return tuple(p.public_key for p in peers)
