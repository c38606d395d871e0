"""Destination IP → owner, by longest-prefix match (IPv4 and IPv6).

The TUN reader asks this for every packet, so lookups work on the raw packet bytes and cost
one dict probe per distinct prefix length in use (usually one: /32 or /128 host routes).
"""

from __future__ import annotations

import ipaddress
from typing import Generic, TypeVar

T = TypeVar("T")
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


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
    """Longest-prefix routing table mapping networks to owners (sessions, peers)."""

    def __init__(self) -> None:
        self._v4: _Table[T] = _Table(32)
        self._v6: _Table[T] = _Table(128)

    def _table(self, network: IPNetwork) -> _Table[T]:
        return self._v4 if network.version == 4 else self._v6

    def add(self, network: IPNetwork, owner: T) -> None:
        """Route ``network`` to ``owner``, replacing any owner of exactly that network."""
        self._table(network).add(network.prefixlen, int(network.network_address), owner)

    def remove(self, network: IPNetwork) -> T | None:
        """Forget exactly ``network``; returns its owner, or None if it was not routed."""
        return self._table(network).remove(network.prefixlen, int(network.network_address))

    def remove_owner(self, owner: T) -> list[IPNetwork]:
        """Forget every network routed to ``owner``; returns them."""
        removed: list[IPNetwork] = []
        for table, factory in (
            (self._v4, ipaddress.IPv4Network),
            (self._v6, ipaddress.IPv6Network),
        ):
            for plen, entries in list(table.by_len.items()):
                for net, o in list(entries.items()):
                    if o is owner:
                        table.remove(plen, net)
                        removed.append(factory((net, plen)))
        return removed

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
