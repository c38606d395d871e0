"""Cryptokey routing on the server's one route table: each WireGuard peer's networks are
routes to its PeerRoute, and a decrypted packet's source must route back to that same owner
(trivpn.proto.wireguard.AllowedIps, as the reference implementations check it)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, TypeGuard

from trivpn.dataplane.router import RouteOwner, Router
from trivpn.dataplane.wireguard.output import OutputSink
from trivpn.proto.ip import IPNetwork
from trivpn.proto.wireguard import Device, Peer

# Datagrams sealed to one peer before they are sent: a client's socket (wireguard-go's keeps
# the kernel's default 208 KiB) overflows on a TUN batch of 128 sent at once, losing pings
# under bulk; sent as they are sealed, the client drains one burst while the next is sealed.
BURST: Final = 32


class PeerRoute:
    """The route owner of one WireGuard peer: packets routed to it are encrypted to it."""

    __slots__ = ("_flush", "_out", "_send", "peer")

    def __init__(self, peer: Peer, device: Device, sink: OutputSink) -> None:
        self.peer = peer
        # bound once: this is the TUN reader's path for every packet to the peer
        self._send = device.send
        self._out = sink.out
        self._flush = sink.flush

    def __repr__(self) -> str:
        return f"WireGuard peer {self.peer.label}"

    def send(self, packets: list[bytes], now: float) -> None:
        out, send, peer = self._out, self._send, self.peer
        for start in range(0, len(packets), BURST):
            out.clear()
            for packet in packets[start : start + BURST]:
                send(peer, packet, now, out)
            self._flush(out)


class PeerRoutes:
    """The WireGuard peers' part of the route table; the device's AllowedIps."""

    def __init__(self, router: Router[RouteOwner]) -> None:
        self.router = router
        self._lookup_bytes = router.lookup_bytes  # the source check's, for every packet in
        self._owners: dict[Peer, PeerRoute] = {}

    # -- AllowedIps (asked by the device) --

    def allows(self, peer: Peer, source: bytes) -> bool:
        owner = self._owners.get(peer)
        return owner is not None and self._lookup_bytes(source) is owner

    def networks_of(self, peer: Peer) -> tuple[IPNetwork, ...]:
        owner = self._owners.get(peer)
        return () if owner is None else self.router.networks_of(owner)

    # -- changes --

    def attach(self, owner: PeerRoute) -> None:
        self._owners[owner.peer] = owner

    def detach(self, peer: Peer) -> None:
        """The peer's routes go with it."""
        owner = self._owners.pop(peer, None)
        if owner is not None:
            self.router.remove_owner(owner)

    def assign(self, peer: Peer, networks: Iterable[IPNetwork]) -> list[Peer]:
        """Route exactly ``networks`` to ``peer``, taking them from any other owner (as in
        wireguard-go); returns the peers that lost one."""
        taken = self.router.set_networks(self._owners[peer], networks)
        losers = [o.peer for o in taken.values() if self._is_ours(o)]
        return list(dict.fromkeys(losers))

    def foreign_owner(self, network: IPNetwork) -> RouteOwner | None:
        """The owner of exactly ``network`` if it is not one of our peers (a ToyVPN session)."""
        owner = self.router.owner_of(network)
        return None if owner is None or self._is_ours(owner) else owner

    def _is_ours(self, owner: RouteOwner) -> TypeGuard[PeerRoute]:
        return isinstance(owner, PeerRoute) and self._owners.get(owner.peer) is owner

    def routed_networks(self) -> frozenset[IPNetwork]:
        """Every network routed to one of our peers."""
        networks_of = self.router.networks_of
        return frozenset(n for owner in self._owners.values() for n in networks_of(owner))
