"""IP for every layer: the address and network types, and minimal, allocation-light views of
packet headers (just what the data path checks)."""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Packet = bytes | bytearray | memoryview


def source_v4(packet: Packet) -> bytes | None:
    """The IPv4 source address (4 bytes) of a plausible IPv4 packet, else None."""
    if len(packet) < 20 or packet[0] >> 4 != 4 or (packet[0] & 0x0F) < 5:
        return None
    return bytes(packet[12:16])
