"""A paced flood of junk WireGuard datagrams, run by `tools/bench` inside a lab namespace.

    python tools/bench_floodgen.py KIND HOST PORT RATE SECONDS [SERVER_PUBLIC_KEY]

KIND is one of FLOODS: initiations with a bad mac1, random garbage, transport data to
unknown receiver indices, or (with the server's base64 public key) initiations with a valid
mac1 that no peer sent, which a server under load answers with cookie replies. The datagrams
come from a pool made before the clock starts, so pacing costs only the sends. It prints the
datagrams sent and the seconds it took.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import sys
import time
from collections.abc import Callable

from trivpn.proto.wireguard import parse_key
from trivpn.proto.wireguard.cookie import mac1_key
from trivpn.proto.wireguard.crypto import mac

POOL = 1024
TICK = 0.0005  # seconds between bursts: 10 datagrams a burst at 20 kpps


def bad_mac1(_key: bytes | None) -> bytes:
    return struct.pack("<I", 1) + os.urandom(144)


def garbage(_key: bytes | None) -> bytes:
    data = os.urandom(32 + int.from_bytes(os.urandom(2), "little") % 1400)
    return bytes([data[0] | 0x10]) + data[1:]  # never a type the device knows


def unknown_index(_key: bytes | None) -> bytes:
    return struct.pack("<I", 4) + os.urandom(4) + struct.pack("<Q", 0) + os.urandom(112)


def valid_mac1(key: bytes | None) -> bytes:
    if key is None:
        raise SystemExit("valid-mac1 needs the server's public key")
    body = struct.pack("<I", 1) + os.urandom(112)
    return body + mac(mac1_key(key), body) + bytes(16)


FLOODS: dict[str, Callable[[bytes | None], bytes]] = {
    "bad-mac1": bad_mac1,
    "garbage": garbage,
    "unknown-index": unknown_index,
    "valid-mac1": valid_mac1,
}


def flood(
    make: Callable[[bytes | None], bytes],
    target: tuple[str, int],
    rate: float,
    seconds: float,
    key: bytes | None,
) -> int:
    pool = [make(key) for _ in range(POOL)]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sendto = sock.sendto
    sent = 0
    start = time.monotonic()
    end = start + seconds
    while (now := time.monotonic()) < end:
        due = int((now - start) * rate)
        while sent < due:
            # counted as sent when the kernel refuses it: the pace is what matters
            with contextlib.suppress(BlockingIOError, ConnectionRefusedError):
                sendto(pool[sent % POOL], target)
            sent += 1
        time.sleep(TICK)
    return sent


def main(argv: list[str]) -> int:
    kind, host, port, rate, seconds, *rest = argv
    key = parse_key(rest[0]) if rest else None
    start = time.monotonic()
    sent = flood(FLOODS[kind], (host, int(port)), float(rate), float(seconds), key)
    print(f"{sent} {time.monotonic() - start:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
