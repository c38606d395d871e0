"""A bare ToyVPN relay for the benchmark: the floor that trivpn's structure is compared with.

One client, no trio, no checks, no NAT of its own (the bench sets that up): plain epoll over a
TUN and a UDP socket, about what the original blog post's server did. Not for use.

Usage (root, inside the bench's server namespace): bare_relay.py TUN ADDRESS/PREFIX PORT SECRET_FILE
"""

from __future__ import annotations

import fcntl
import os
import select
import socket
import struct
import subprocess
import sys

TUNSETIFF, IFF_TUN, IFF_NO_PI = 0x400454CA, 0x0001, 0x1000


def main() -> None:
    name, address, port, secret_file = sys.argv[1:5]
    secret = open(secret_file, "rb").read().strip()  # noqa: SIM115
    tun = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(tun, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI))
    subprocess.run(["ip", "addr", "add", address, "dev", name], check=True)
    subprocess.run(["ip", "link", "set", name, "mtu", "1420", "up"], check=True)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", int(port)))
    sock.setblocking(False)
    params = (b"\x00 m,1420 a,10.8.0.2,32 r,0.0.0.0,0").ljust(1024, b" ")
    client = None
    poller = select.epoll()
    poller.register(tun, select.EPOLLIN)
    poller.register(sock.fileno(), select.EPOLLIN)
    print("relay ready", flush=True)
    while True:
        for fd, _ in poller.poll():
            try:
                if fd == tun:
                    while True:
                        packet = os.read(tun, 65535)
                        if client is not None:
                            sock.sendto(packet, client)
                else:
                    while True:
                        data, addr = sock.recvfrom(65535)
                        if data[0] != 0:
                            os.write(tun, data)
                        elif data[1:] == secret:
                            client = addr
                            for _ in range(3):
                                sock.sendto(params, addr)
            except (BlockingIOError, ConnectionRefusedError):
                pass


if __name__ == "__main__":
    main()
