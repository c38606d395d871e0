"""Minimal, allocation-light views of IP packet headers (just what the data path checks)."""

from __future__ import annotations

Packet = bytes | bytearray | memoryview


def source_v4(packet: Packet) -> bytes | None:
    """The IPv4 source address (4 bytes) of a plausible IPv4 packet, else None."""
    if len(packet) < 20 or packet[0] >> 4 != 4 or (packet[0] & 0x0F) < 5:
        return None
    return bytes(packet[12:16])


def source_address(packet: Packet) -> bytes | None:
    """The source address (4 or 16 bytes) of a plausible IPv4/IPv6 packet, else None."""
    n = len(packet)
    if n < 20:
        return None
    version = packet[0] >> 4
    if version == 4:
        return bytes(packet[12:16]) if (packet[0] & 0x0F) >= 5 else None
    if version == 6 and n >= 40:
        return bytes(packet[8:24])
    return None
