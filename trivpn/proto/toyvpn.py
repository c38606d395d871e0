"""The ToyVPN protocol of Android's ToyVpn sample, sans-IO (bytes and ``now`` in, results out).

Wire format (cleartext, UDP):
- handshake, client → server: ``0x00`` + shared secret (the client sends it three times);
- parameters, server → client: ``0x00`` + `` m,MTU a,ADDR,32 d,DNS r,NET,PREFIX [s,DOMAIN]``
  padded with spaces to 1024 bytes, sent three times;
- data: a datagram whose first byte is not 0 is an IP packet (IP's version nibble is never 0);
- control: first byte 0 otherwise; a lone ``0x00`` is a keepalive.
"""

from __future__ import annotations

import collections
import hmac
import ipaddress
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from trivpn.proto.ip import IPAddress, IPNetwork, source_v4

PARAMETERS_SIZE = 1024
REPLY_COPIES = 3
KEEPALIVE = b"\x00"

Addr = tuple[Any, ...]  # a UDP endpoint as the socket reports it


@attrs.frozen
class Parameters:
    mtu: int
    address: ipaddress.IPv4Address
    dns: tuple[IPAddress, ...] = ()
    routes: tuple[IPNetwork, ...] = ()
    search_domain: str = ""

    def encode(self) -> bytes:
        parts = [f"m,{self.mtu}", f"a,{self.address},32"]
        parts += [f"d,{d}" for d in self.dns]
        parts += [f"r,{r.network_address},{r.prefixlen}" for r in self.routes]
        if self.search_domain:
            parts.append(f"s,{self.search_domain}")
        text = ("".join(" " + p for p in parts)).encode("ascii")
        if len(text) + 1 > PARAMETERS_SIZE:
            raise ValueError("ToyVPN parameters do not fit in 1024 bytes")
        return b"\x00" + text.ljust(PARAMETERS_SIZE - 1, b" ")

    @classmethod
    def decode(cls, datagram: bytes) -> Parameters:
        """Parse a parameters datagram; ValueError names what is wrong."""
        if not datagram or datagram[0] != 0:
            raise ValueError("not a control message")
        try:
            text = datagram[1:].decode("ascii")
        except UnicodeDecodeError as e:
            raise ValueError("parameters are not ASCII") from e
        mtu: int | None = None
        address: ipaddress.IPv4Address | None = None
        dns: list[IPAddress] = []
        routes: list[IPNetwork] = []
        search = ""
        for field in text.split():
            kind, _, rest = field.partition(",")
            try:
                if kind == "m":
                    mtu = int(rest)
                elif kind == "a":
                    addr, _, plen = rest.partition(",")
                    address = ipaddress.IPv4Address(addr)
                elif kind == "d":
                    dns.append(ipaddress.ip_address(rest))
                elif kind == "r":
                    net, _, plen = rest.partition(",")
                    routes.append(ipaddress.ip_network(f"{net}/{plen}"))
                elif kind == "s":
                    search = rest
            except ValueError as e:
                raise ValueError(f"bad parameter {field!r}: {e}") from e
        if mtu is None or address is None:
            raise ValueError("parameters lack the MTU or the address")
        if not 68 <= mtu <= 65535:
            raise ValueError(f"bad MTU {mtu}")
        return cls(mtu, address, tuple(dns), tuple(routes), search)


@attrs.frozen
class ParameterTemplate:
    """What the server tells every new session; each gets its own address added."""

    mtu: int
    dns: tuple[IPAddress, ...]
    routes: tuple[IPNetwork, ...]
    search_domain: str

    def for_address(self, address: ipaddress.IPv4Address) -> Parameters:
        return Parameters(self.mtu, address, self.dns, self.routes, self.search_domain)


@attrs.define(eq=False)
class Session:
    """One ToyVPN client: its UDP endpoint, its tunnel address and its timers."""

    addr: Addr
    address: ipaddress.IPv4Address
    last_recv: float
    last_send: float
    keepalive: float
    idle_timeout: float
    address_bytes: bytes = attrs.field(init=False)
    closed: bool = False
    rx_packets: int = 0
    rx_bytes: int = 0
    tx_packets: int = 0
    tx_bytes: int = 0

    def __attrs_post_init__(self) -> None:
        self.address_bytes = self.address.packed

    def next_deadline(self) -> float:
        return min(self.last_send + self.keepalive, self.last_recv + self.idle_timeout)

    def encapsulate(self, packet: bytes, now: float) -> bytes:
        """The datagram that carries ``packet`` to the client (ToyVPN data is the packet)."""
        self.last_send = now
        self.tx_packets += 1
        self.tx_bytes += len(packet)
        return packet


@attrs.frozen
class Handshake:
    """A valid handshake: send ``replies`` to ``session.addr``; ``new`` if the session is new."""

    session: Session
    replies: list[bytes]
    new: bool


@attrs.frozen
class Refused:
    """A datagram dropped on purpose; ``reason`` is the counter it was counted under."""

    reason: str


TICK_KEEPALIVE = "keepalive"
TICK_EXPIRED = "expired"


class AddressPool:
    """Free addresses of an IPv4 pool, handed out lowest first, returned on release."""

    def __init__(self, pool: ipaddress.IPv4Network, reserved: Iterable[IPAddress] = ()) -> None:
        taken = {a for a in reserved if a.version == 4}
        hosts = pool.hosts() if pool.prefixlen < 31 else iter(pool)
        self._free = [a for a in hosts if a not in taken]
        self._free.sort(reverse=True)  # pop() from the end gives the lowest
        self.size = len(self._free)

    def take(self) -> ipaddress.IPv4Address | None:
        return self._free.pop() if self._free else None

    def release(self, address: ipaddress.IPv4Address) -> None:
        self._free.append(address)
        self._free.sort(reverse=True)

    @property
    def in_use(self) -> int:
        return self.size - len(self._free)


class ToyVpnServer:
    """Server side of ToyVPN for many clients at once, keyed by UDP endpoint."""

    def __init__(
        self,
        *,
        secret: bytes,
        pool: ipaddress.IPv4Network,
        mtu: int,
        dns: Sequence[IPAddress] = (),
        routes: Sequence[IPNetwork] = (),
        search_domain: str = "",
        keepalive: float = 15.0,
        idle_timeout: float = 60.0,
        reserved: Iterable[IPAddress] = (),
    ) -> None:
        self._handshake = b"\x00" + secret
        self._pool = AddressPool(pool, reserved)
        self._template = ParameterTemplate(mtu, tuple(dns), tuple(routes), search_domain)
        self.keepalive = keepalive
        self.idle_timeout = idle_timeout
        self.sessions: dict[Addr, Session] = {}
        self.counters: collections.Counter[str] = collections.Counter()

    def set_client_parameters(
        self, dns: Sequence[IPAddress], routes: Sequence[IPNetwork], search_domain: str
    ) -> None:
        """What sessions that start from now on are told (the MTU stays: it is the TUN's)."""
        self._template = attrs.evolve(
            self._template, dns=tuple(dns), routes=tuple(routes), search_domain=search_domain
        )

    @property
    def pool(self) -> AddressPool:
        return self._pool

    def receive(
        self, datagram: bytes, addr: Addr, now: float
    ) -> bytes | Handshake | Refused | None:
        """Handle one datagram from ``addr``.

        Returns the IP packet to write to the TUN, a Handshake to answer, a Refused drop, or
        None for a control message that needs nothing.
        """
        session = self.sessions.get(addr)
        if datagram and datagram[0] != 0:
            if session is None:
                self.counters["unknown_endpoint"] += 1
                return Refused("unknown_endpoint")
            if datagram[0] >> 4 != 4:  # ToyVPN carries IPv4 only (a client's IPv6 chatter)
                self.counters["not_ipv4"] += 1
                return Refused("not_ipv4")
            if source_v4(datagram) != session.address_bytes:
                self.counters["spoofed_source"] += 1
                return Refused("spoofed_source")
            session.last_recv = now
            session.rx_packets += 1
            session.rx_bytes += len(datagram)
            return datagram
        if not datagram:
            self.counters["malformed"] += 1
            return Refused("malformed")
        if len(datagram) > 1 and hmac.compare_digest(datagram, self._handshake):
            return self._accept(session, addr, now)
        if session is None:
            self.counters["bad_secret"] += 1
            return Refused("bad_secret")
        session.last_recv = now  # a keepalive or another control message
        self.counters["control"] += 1
        return None

    def _accept(self, session: Session | None, addr: Addr, now: float) -> Handshake | Refused:
        new = session is None
        if session is None:
            address = self._pool.take()
            if address is None:
                self.counters["pool_full"] += 1
                return Refused("pool_full")
            session = Session(addr, address, now, now, self.keepalive, self.idle_timeout)
            self.sessions[addr] = session
            self.counters["handshakes"] += 1
        session.last_recv = now
        session.last_send = now
        reply = self._template.for_address(session.address).encode()
        return Handshake(session, [reply] * REPLY_COPIES, new)

    def tick(self, session: Session, now: float) -> str | None:
        """Run a session's timers: TICK_KEEPALIVE (send KEEPALIVE), TICK_EXPIRED, or None."""
        if session.closed:
            return TICK_EXPIRED
        if now >= session.last_recv + session.idle_timeout:
            self.close(session)
            self.counters["expired"] += 1
            return TICK_EXPIRED
        if now >= session.last_send + session.keepalive:
            session.last_send = now
            return TICK_KEEPALIVE
        return None

    def close(self, session: Session) -> None:
        """End a session and return its address to the pool (idempotent)."""
        if session.closed:
            return
        session.closed = True
        if self.sessions.get(session.addr) is session:
            del self.sessions[session.addr]
        self._pool.release(session.address)


class ToyVpnClient:
    """Client side: the handshake, then data and keepalives; notices a quiet server."""

    def __init__(self, secret: bytes, *, keepalive: float = 15.0, quiet_timeout: float = 60.0):
        self._handshake = b"\x00" + secret
        self.keepalive = keepalive
        self.quiet_timeout = quiet_timeout
        self.parameters: Parameters | None = None
        self.last_recv = 0.0
        self.last_send = 0.0
        self.counters: collections.Counter[str] = collections.Counter()

    def handshake(self, now: float) -> list[bytes]:
        """Datagrams to (re)start a session; forgets the previous parameters."""
        self.parameters = None
        self.last_send = now
        return [self._handshake] * REPLY_COPIES

    def receive(self, datagram: bytes, now: float) -> bytes | Parameters | None:
        """An IP packet for the TUN, the session's Parameters (first time), or None."""
        if not datagram:
            self.counters["malformed"] += 1
            return None
        if datagram[0] != 0:
            if self.parameters is None:
                self.counters["before_handshake"] += 1
                return None
            self.last_recv = now
            return datagram
        self.last_recv = now
        if self.parameters is None and len(datagram) > 1:
            try:
                self.parameters = Parameters.decode(datagram)
            except ValueError:
                self.counters["malformed"] += 1
                return None
            return self.parameters
        return None

    def outgoing(self, packets: Sequence[bytes], now: float) -> list[bytes]:
        """The datagrams for packets read from the TUN: IPv4 only, as the protocol carries
        (the kernel's IPv6 chatter on the TUN, router solicitations and the like, is dropped
        and counted here rather than refused by the server)."""
        datagrams = [p for p in packets if p and p[0] >> 4 == 4]
        if len(datagrams) != len(packets):
            self.counters["not_ipv4"] += len(packets) - len(datagrams)
        if datagrams:
            self.last_send = now
        return datagrams

    def next_deadline(self) -> float:
        return min(self.last_send + self.keepalive, self.last_recv + self.quiet_timeout)

    def tick(self, now: float) -> str | None:
        """TICK_EXPIRED when the server has gone quiet, TICK_KEEPALIVE when one is due."""
        if now >= self.last_recv + self.quiet_timeout:
            return TICK_EXPIRED
        if now >= self.last_send + self.keepalive:
            self.last_send = now
            return TICK_KEEPALIVE
        return None
