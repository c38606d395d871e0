"""Processes for test_net_offload_tun.py, each started inside a namespace with ``ip netns exec``.

python offload_tun_child.py relay TUN_NAME DST [DST...]
    Opens TUN_NAME with IFF_VNET_HDR and TSO/CSUM offloads, prints ``ready`` and then
    relays: every frame read is cut up by offload.segment(), every packet checked with
    an independent checksum, the packets to a DST coalesced again by offload.coalesce()
    and written back into the same TUN. A line on stdin stops it; it then prints its
    counters as one JSON line.
python offload_tun_child.py tcp-sink ADDR PORT      -> prints ``listening``, then the
    byte count of each connection (and sends it back to the sender)
python offload_tun_child.py tcp-send SRC DST PORT NBYTES -> prints the count the sink saw
python offload_tun_child.py udp-send SRC DST PORT SIZE...
python offload_tun_child.py udp-sink ADDR PORT COUNT -> prints the sizes received
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import socket
import struct
import sys
from collections import Counter
from ipaddress import ip_address

from trivpn.net import offload

_TUNSETIFF = 0x400454CA
_IFF_TUN = 0x0001
_IFF_NO_PI = 0x1000
# TSO for reads, which trivpn does not enable, so that segment() gets real GSO frames. No
# TUN_F_USO4/6: segment() refuses UDP_L4 frames, so the kernel must not send them.
_TUNSETOFFLOAD = 0x400454D0  # _IOW('T', 208, unsigned int)
_TUN_F_CSUM, _TUN_F_TSO4, _TUN_F_TSO6 = 0x01, 0x02, 0x04
_TUN_OFFLOADS = _TUN_F_CSUM | _TUN_F_TSO4 | _TUN_F_TSO6


def open_vnet_tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    flags = _IFF_TUN | _IFF_NO_PI | offload.IFF_VNET_HDR
    fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH22x", name.encode(), flags))
    fcntl.ioctl(fd, offload.TUNSETVNETHDRSZ, struct.pack("i", offload.VNET_HDR_LEN))
    fcntl.ioctl(fd, _TUNSETOFFLOAD, _TUN_OFFLOADS)
    return fd


def word_sum_checksum(data: bytes) -> int:
    """RFC 1071 with struct and a carry loop: independent of offload.checksum."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def transport_checksum_ok(packet: bytes) -> bool:
    """Whether a TCP or UDP packet's checksum (and an IPv4 header's) verifies."""
    if packet[0] >> 4 == 4:
        ip_len = (packet[0] & 0x0F) * 4
        proto = packet[9]
        pseudo = packet[12:20] + struct.pack("!xBH", proto, len(packet) - ip_len)
        if word_sum_checksum(packet[:ip_len]) != 0:
            return False
    else:
        ip_len, proto = 40, packet[6]
        pseudo = packet[8:40] + struct.pack("!IxxxB", len(packet) - 40, proto)
    return word_sum_checksum(pseudo + packet[ip_len:]) == 0


def destination(packet: bytes) -> bytes:
    return packet[16:20] if packet[0] >> 4 == 4 else packet[24:40]


def relay(name: str, destinations: list[str]) -> None:
    fd = open_vnet_tun(name)
    wanted = {ip_address(d).packed for d in destinations}
    stats: Counter[str] = Counter()
    print("ready", flush=True)
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    poller.register(sys.stdin.fileno(), select.POLLIN)
    while True:
        events = dict(poller.poll(30_000))
        if sys.stdin.fileno() in events or not events:
            break
        batch: list[bytes] = []
        while len(batch) < 64:
            try:
                frame = os.read(fd, offload.VNET_HDR_LEN + 65535)
            except BlockingIOError:
                break
            flags, gso_type = frame[0], frame[1]
            stats["frames_in"] += 1
            if gso_type != offload.VIRTIO_NET_HDR_GSO_NONE:
                stats["gso_frames_in"] += 1
            elif flags & offload.VIRTIO_NET_HDR_F_NEEDS_CSUM:
                stats["partial_csum_in"] += 1
            packets = offload.segment(frame)
            if not packets:
                stats["dropped_frames"] += 1
            for packet in packets:
                stats["packets_in"] += 1
                if destination(packet) not in wanted:
                    continue  # the kernel's own chatter (IPv6 router solicitations...)
                proto = packet[9] if packet[0] >> 4 == 4 else packet[6]
                if proto in (6, 17) and not transport_checksum_ok(packet):
                    stats["bad_checksums"] += 1
                batch.append(packet)
        for iov in offload.coalesce(batch):
            if iov[0] != offload.ZERO_HDR:
                stats["gso_frames_out"] += 1
                stats["segments_in_gso_frames_out"] += len(iov) - 2
            try:
                os.writev(fd, iov)
                stats["writes"] += 1
            except OSError as exc:
                stats[f"write_error_{exc.errno}"] += 1
    os.close(fd)
    print(json.dumps(dict(stats)), flush=True)


def family(addr: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def tcp_sink(addr: str, port: int) -> None:
    server = socket.socket(family(addr), socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((addr, port))
    server.listen(4)
    print("listening", flush=True)
    while True:
        conn, _peer = server.accept()
        received = 0
        while chunk := conn.recv(1 << 16):
            received += len(chunk)
        conn.sendall(b"%d" % received)
        conn.close()
        print(received, flush=True)


def tcp_send(src: str, dst: str, port: int, nbytes: int) -> None:
    conn = socket.socket(family(dst), socket.SOCK_STREAM)
    conn.settimeout(20)
    conn.bind((src, 0))
    conn.connect((dst, port))
    block = bytes(range(256)) * 256
    left = nbytes
    while left:
        left -= conn.send(block[: min(left, len(block))])
    conn.shutdown(socket.SHUT_WR)
    print(conn.recv(100).decode(), flush=True)


def udp_send(src: str, dst: str, port: int, sizes: list[int]) -> None:
    sock = socket.socket(family(dst), socket.SOCK_DGRAM)
    sock.bind((src, 0))
    for size in sizes:
        sock.sendto(bytes(i & 0xFF for i in range(size)), (dst, port))


def udp_sink(addr: str, port: int, count: int) -> None:
    sock = socket.socket(family(addr), socket.SOCK_DGRAM)
    sock.bind((addr, port))
    sock.settimeout(20)
    print("listening", flush=True)
    sizes = []
    for _ in range(count):
        data = sock.recv(65535)
        assert data == bytes(i & 0xFF for i in range(len(data)))
        sizes.append(len(data))
    print(json.dumps(sizes), flush=True)


def main() -> None:
    command, *args = sys.argv[1:]
    if command == "relay":
        relay(args[0], args[1:])
    elif command == "tcp-sink":
        tcp_sink(args[0], int(args[1]))
    elif command == "tcp-send":
        tcp_send(args[0], args[1], int(args[2]), int(args[3]))
    elif command == "udp-send":
        udp_send(args[0], args[1], int(args[2]), [int(a) for a in args[3:]])
    elif command == "udp-sink":
        udp_sink(args[0], int(args[1]), int(args[2]))
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main()
