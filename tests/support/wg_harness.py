"""An in-memory network of two sans-IO devices, driven by an explicit virtual clock.

``A`` is the client: it knows B's endpoint and initiates. ``B`` is the server: it learns
A's endpoint from A's packets. Every datagram that crosses is logged (time, sender, bytes)
and may be dropped by a filter, so tests can assert what went over the wire and when.
"""

from __future__ import annotations

import ipaddress
import random
import struct
from collections import Counter
from collections.abc import Callable

import attrs

from trivpn.proto.wireguard import Device, Event, Output, Peer, PeerConfig, crypto

A_ADDR = ("198.51.100.2", 40000)
B_ADDR = ("198.51.100.1", 51820)
A_TUN = "10.0.0.1"
B_TUN = "10.0.0.2"
A_TUN6 = "fd00::1"
WALL_EPOCH = 1_700_000_000.0


def ip4(src: str, dst: str, payload: bytes = b"ping") -> bytes:
    """A minimal IPv4/UDP-ish packet (protocol 17, checksums not needed here)."""
    return struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, 64, 17, 0,
        ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed,
    ) + payload  # fmt: skip


def ip6(src: str, dst: str, payload: bytes = b"ping6") -> bytes:
    return struct.pack(
        "!IHBB16s16s", 6 << 28, len(payload), 17, 64,
        ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed,
    ) + payload  # fmt: skip


@attrs.define
class Wire:
    time: float
    sender: str  # "A" or "B"
    data: bytes

    @property
    def kind(self) -> int:
        return self.data[0]


class Net:
    def __init__(
        self,
        *,
        seed: int = 1,
        a_keepalive: int | None = None,
        b_under_load_rate: float = 500.0,
        a_psk: bytes | None = None,
        b_psk: bytes | None = None,
        mtu: int | None = None,
    ) -> None:
        rnd = random.Random(seed)
        self.now = 0.0
        self.wall_offset = 0.0
        self.a = Device(rnd.randbytes(32), rng=rnd.randbytes, wallclock=self.wallclock, mtu=mtu)
        self.b = Device(
            rnd.randbytes(32), rng=rnd.randbytes, wallclock=self.wallclock,
            under_load_rate=b_under_load_rate, mtu=mtu,
        )  # fmt: skip
        self.a_peer: Peer = self.a.add_peer(
            PeerConfig(
                public_key=self.b.public_key,
                preshared_key=a_psk,
                allowed_ips=(ipaddress.ip_network(f"{B_TUN}/32"),),
                endpoint=B_ADDR,
                persistent_keepalive=a_keepalive,
                name="B",
            )
        )
        self.b_peer: Peer = self.b.add_peer(
            PeerConfig(
                public_key=self.a.public_key,
                preshared_key=b_psk,
                allowed_ips=(
                    ipaddress.ip_network(f"{A_TUN}/32"),
                    ipaddress.ip_network(f"{A_TUN6}/128"),
                ),
                name="A",
            )
        )
        self.a_addr = A_ADDR
        self.log: list[Wire] = []
        self.received: dict[str, list[bytes]] = {"A": [], "B": []}
        self.events: dict[str, list[Event]] = {"A": [], "B": []}
        self.drop: Callable[[Wire], bool] = lambda wire: False
        self._in_flight: list[Wire] = []

    def wallclock(self) -> float:
        return WALL_EPOCH + self.now + self.wall_offset

    def device(self, side: str) -> Device:
        return self.a if side == "A" else self.b

    @property
    def counters(self) -> dict[str, Counter[str]]:
        return {"A": self.a.counters, "B": self.b.counters}

    def _collect(self, side: str, out: Output) -> None:
        self.received[side].extend(out.packets)
        self.events[side].extend(out.events)
        for data, addr in out.datagrams:
            expected = B_ADDR if side == "A" else self.a_addr
            assert addr == expected, (side, addr)
            self._in_flight.append(Wire(self.now, side, data))

    def flush(self) -> None:
        while self._in_flight:
            wire = self._in_flight.pop(0)
            self.log.append(wire)
            if self.drop(wire):
                continue
            if wire.sender == "A":
                out = self.b.receive(wire.data, self.a_addr, self.now)
                self._collect("B", out)
            else:
                out = self.a.receive(wire.data, B_ADDR, self.now)
                self._collect("A", out)

    def send(self, side: str, packet: bytes) -> None:
        peer = self.a_peer if side == "A" else self.b_peer
        self._collect(side, self.device(side).send(peer, packet, self.now))
        self.flush()

    def inject(self, side: str, data: bytes, addr: tuple[str, int]) -> Output:
        """Deliver a crafted datagram to ``side`` (not logged, nothing forwarded)."""
        return self.device(side).receive(data, addr, self.now)

    def advance(self, until: float) -> None:
        """Run both devices' timers (and the traffic they cause) up to ``until``."""
        while True:
            pending = (self.a.next_deadline(), self.b.next_deadline())
            deadlines = [d for d in pending if d is not None]
            if not deadlines or min(deadlines) > until:
                break
            self.now = max(self.now, min(deadlines))
            self._collect("A", self.a.tick(self.now))
            self._collect("B", self.b.tick(self.now))
            self.flush()
        self.now = max(self.now, until)

    def handshake(self) -> None:
        """Complete a session by sending one packet A -> B."""
        self.send("A", ip4(A_TUN, B_TUN, b"first"))
        assert self.received["B"][-1] == ip4(A_TUN, B_TUN, b"first")

    def wires(
        self, sender: str, kind: int | None = None, since: float = float("-inf")
    ) -> list[Wire]:
        return [
            w for w in self.log
            if w.sender == sender and (kind is None or w.kind == kind) and w.time >= since
        ]  # fmt: skip


def event_types(events: list[Event]) -> list[str]:
    return [type(e).__name__ for e in events]


__all__ = ["A_ADDR", "B_ADDR", "Net", "Wire", "crypto", "event_types", "ip4", "ip6"]
