"""The server's one route table: destination network → owner, by longest-prefix match.

Every network a client may be reached at lives here once, with its owner: a WireGuard peer's
(trivpn.dataplane.wireguard.routes) or a ToyVPN session's (trivpn.dataplane.toyvpn). The TUN
reader asks it for every packet, and the WireGuard front asks it whether a decrypted packet's
source is its peer's, so lookups work on the raw address bytes and cost one dict probe per
distinct prefix length in use (usually one: /32 or /128 host routes). Each owner's networks
are indexed too, so that taking an owner's routes or listing them never walks the table.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Generic, Protocol, TypeVar

from trivpn.proto.ip import IPAddress, IPNetwork

T = TypeVar("T")  # owners: compared and hashed by identity, or values in tests


class RouteOwner(Protocol):
    """What a route leads to: ``send`` takes a run of IP packets for it, in order. Its
    ``repr`` names it (a peer, a session) in logs and refusals."""

    def send(self, packets: list[bytes], now: float) -> None: ...


class _Table(Generic[T]):
    """One address family: prefix length → {network as int → owner}."""

    def __init__(self, bits: int) -> None:
        self.bits = bits
        self.by_len: dict[int, dict[int, T]] = {}
        # (prefix length, mask) from the longest prefix down: the lookup order.
        self.order: list[tuple[int, int]] = []

    def _reorder(self) -> None:
        full = (1 << self.bits) - 1
        self.order = [(plen, full ^ (full >> plen)) for plen in sorted(self.by_len, reverse=True)]

    def add(self, plen: int, net: int, owner: T) -> None:
        if plen not in self.by_len:
            self.by_len[plen] = {}
            self.by_len[plen][net] = owner
            self._reorder()
        else:
            self.by_len[plen][net] = owner

    def get(self, plen: int, net: int) -> T | None:
        entries = self.by_len.get(plen)
        return None if entries is None else entries.get(net)

    def remove(self, plen: int, net: int) -> T | None:
        entries = self.by_len.get(plen)
        if entries is None:
            return None
        owner = entries.pop(net, None)
        if not entries:
            del self.by_len[plen]
            self._reorder()
        return owner

    def lookup(self, addr: int) -> T | None:
        by_len = self.by_len
        for plen, mask in self.order:
            owner = by_len[plen].get(addr & mask)
            if owner is not None:
                return owner
        return None


class Router(Generic[T]):
    """Longest-prefix routing table mapping networks to owners (sessions, peers).

    A network has one owner; networks may nest (the longest prefix wins)."""

    def __init__(self) -> None:
        self._v4: _Table[T] = _Table(32)
        self._v6: _Table[T] = _Table(128)
        # owner → its networks, in the order they were given (a dict as an ordered set)
        self._by_owner: dict[T, dict[IPNetwork, None]] = {}

    def _table(self, network: IPNetwork) -> _Table[T]:
        return self._v4 if network.version == 4 else self._v6

    def add(self, network: IPNetwork, owner: T) -> T | None:
        """Route ``network`` to ``owner``; returns the owner it is taken from, if another."""
        table, plen, net = self._table(network), network.prefixlen, int(network.network_address)
        previous = table.get(plen, net)
        if previous == owner:
            return None
        if previous is not None:
            self._forget(previous, network)
        table.add(plen, net, owner)
        self._by_owner.setdefault(owner, {})[network] = None
        return previous

    def remove(self, network: IPNetwork) -> T | None:
        """Forget exactly ``network``; returns its owner, or None if it was not routed."""
        owner = self._table(network).remove(network.prefixlen, int(network.network_address))
        if owner is not None:
            self._forget(owner, network)
        return owner

    def _forget(self, owner: T, network: IPNetwork) -> None:
        networks = self._by_owner[owner]
        del networks[network]
        if not networks:
            del self._by_owner[owner]

    def remove_owner(self, owner: T) -> list[IPNetwork]:
        """Forget every network routed to ``owner``; returns them."""
        removed = list(self._by_owner.get(owner, ()))
        for network in removed:
            self.remove(network)
        return removed

    def set_networks(self, owner: T, networks: Iterable[IPNetwork]) -> dict[IPNetwork, T]:
        """Route exactly ``networks`` (duplicates once) to ``owner``, in that order: its
        others go, and those another owner had are taken from it. Returns the taken ones
        with their previous owner."""
        wanted = dict.fromkeys(networks)
        for network in list(self._by_owner.get(owner, ())):
            if network not in wanted:
                self.remove(network)
        taken: dict[IPNetwork, T] = {}
        for network in wanted:
            previous = self.add(network, owner)
            if previous is not None:
                taken[network] = previous
        if wanted:
            self._by_owner[owner] = wanted  # the order given, whatever it held before
        return taken

    def networks_of(self, owner: T) -> tuple[IPNetwork, ...]:
        """The networks routed to ``owner``, in the order they were given."""
        return tuple(self._by_owner.get(owner, ()))

    def owner_of(self, network: IPNetwork) -> T | None:
        """The owner of exactly ``network`` (not of a network holding it)."""
        return self._table(network).get(network.prefixlen, int(network.network_address))

    def lookup(self, address: IPAddress) -> T | None:
        table = self._v4 if address.version == 4 else self._v6
        return table.lookup(int(address))

    def lookup_bytes(self, address: bytes) -> T | None:
        """The owner of a packed address (4 or 16 bytes)."""
        table = self._v4 if len(address) == 4 else self._v6
        return table.lookup(int.from_bytes(address, "big"))

    def lookup_packet(self, packet: bytes | bytearray | memoryview) -> T | None:
        """The owner of an IP packet's destination; None for unrouted or malformed packets."""
        n = len(packet)
        if n < 20:
            return None
        version = packet[0] >> 4
        if version == 4:
            return self._v4.lookup(int.from_bytes(packet[16:20], "big"))
        if version == 6 and n >= 40:
            return self._v6.lookup(int.from_bytes(packet[24:40], "big"))
        return None

    def __len__(self) -> int:
        return sum(len(e) for t in (self._v4, self._v6) for e in t.by_len.values())
