"""A tiny blocking UDP loop around the sans-IO Device, for the interop test only.

Run inside a test namespace: ``python wg_driver.py PRIVATE_HEX PEER_PUB_HEX LISTEN_PORT
PEER_PORT OUR_TUNNEL_IP PEER_TUNNEL_IP [--initiate]``. It answers ICMP echo requests sent
to OUR_TUNNEL_IP through the tunnel, and with --initiate first sends one UDP datagram
"hello from trivpn" from OUR_TUNNEL_IP to PEER_TUNNEL_IP:9999 (which makes us the
handshake initiator). It prints one line per event and exits after 30 s.
"""

from __future__ import annotations

import ipaddress
import os
import select
import socket
import struct
import sys
import time

from trivpn.net.offload import checksum
from trivpn.proto.wireguard import Device, Output, PeerConfig


def ipv4(src: str, dst: str, proto: int, payload: bytes) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0x4000, 64, proto, 0,
        ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed,
    )  # fmt: skip
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + payload


def udp(src: str, dst: str, sport: int, dport: int, data: bytes) -> bytes:
    return ipv4(src, dst, 17, struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data)


def echo_reply(packet: bytes) -> bytes | None:
    """The ICMP echo reply to an IPv4 echo request, or None for anything else."""
    ihl = (packet[0] & 15) * 4
    if packet[9] != 1 or packet[ihl] != 8:
        return None
    icmp = bytearray(packet[ihl:])
    icmp[0] = 0
    icmp[2:4] = b"\0\0"
    icmp[2:4] = struct.pack("!H", checksum(bytes(icmp)))
    src = str(ipaddress.ip_address(packet[12:16]))
    dst = str(ipaddress.ip_address(packet[16:20]))
    return ipv4(dst, src, 1, bytes(icmp))


def main() -> None:
    private, peer_public = bytes.fromhex(sys.argv[1]), bytes.fromhex(sys.argv[2])
    listen_port, peer_port = int(sys.argv[3]), int(sys.argv[4])
    our_ip, peer_ip = sys.argv[5], sys.argv[6]
    initiate = "--initiate" in sys.argv

    device = Device(private, rng=os.urandom, wallclock=time.time)
    peer = device.add_peer(
        PeerConfig(
            public_key=peer_public,
            allowed_ips=(ipaddress.ip_network(f"{peer_ip}/32"),),
            endpoint=("127.0.0.1", peer_port),
        )
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", listen_port))
    sock.setblocking(False)
    print("ready", flush=True)

    out = Output()
    if initiate:
        device.send(
            peer, udp(our_ip, peer_ip, 40000, 9999, b"hello from trivpn"), time.monotonic(), out
        )

    stop = time.monotonic() + 30
    while time.monotonic() < stop:
        for data, addr in out.datagrams:
            sock.sendto(data, addr)
        for event in out.events:
            print(type(event).__name__, flush=True)
        replies = [r for r in map(echo_reply, out.packets) if r is not None]
        for packet in out.packets:
            print("packet", len(packet), flush=True)
        out.clear()
        now = time.monotonic()
        for reply in replies:
            device.send(peer, reply, now, out)
        if not out.is_empty():
            continue
        deadline = device.next_deadline()
        timeout = 0.5 if deadline is None else max(0.0, min(0.5, deadline - now))
        readable, _, _ = select.select([sock], [], [], timeout)
        now = time.monotonic()
        if readable:
            data, addr = sock.recvfrom(65535)
            device.receive(data, addr, now, out)
        device.tick(now, out)
        if device.counters:
            print("counters", dict(device.counters), flush=True)
            device.counters.clear()


if __name__ == "__main__":
    main()
