"""The ToyVPN front: one UDP socket, the sans-IO ToyVpnServer, the shared router and TUN.

A session's /32 is routed to its SessionRoute, which hands packets back to that client; a
timer task per session sends keepalives while we are silent and ends the session when the
client is. ``[toyvpn] rate_down``/``rate_up`` police each session's packets with a token
bucket per direction (trivpn.proto.token_bucket); a packet over the rate is dropped and
counted ``rate_limited``.
"""

from __future__ import annotations

import collections
import ipaddress
import logging
from collections.abc import Callable
from typing import Any

import trio

from trivpn.config import ToyVpnConfig
from trivpn.dataplane.loglimit import LogLimiter
from trivpn.dataplane.router import RouteOwner, Router
from trivpn.net.tun import Tun
from trivpn.net.udp import DatagramSocket
from trivpn.proto import toyvpn
from trivpn.proto.endpoints import format_endpoint
from trivpn.proto.ip import IPAddress
from trivpn.proto.token_bucket import TokenBucket

log = logging.getLogger("trivpn")

# starts a new session's timer task (ToyVpnFront.session_task) on the trio thread
SessionStarter = Callable[["toyvpn.Session", "SessionRoute"], None]


class SessionRoute:
    """The route owner of one ToyVPN session: packets for its address go to its client."""

    __slots__ = ("_addr", "_counters", "_encapsulate", "_rate", "_sock", "session")

    def __init__(
        self,
        session: toyvpn.Session,
        sock: DatagramSocket,
        rate: TokenBucket | None = None,
        counters: collections.Counter[str] | None = None,
    ) -> None:
        self.session = session
        self._addr = session.addr
        self._encapsulate = session.encapsulate
        self._sock = sock
        self._rate = rate  # toward the client
        self._counters = collections.Counter[str]() if counters is None else counters

    def __repr__(self) -> str:
        return f"ToyVPN session {self.session.address} ({format_endpoint(self._addr)})"

    def send(self, packets: list[bytes], now: float) -> None:
        encapsulate = self._encapsulate
        rate = self._rate
        if rate is not None:
            passed = [p for p in packets if rate.take(len(p), now)]
            self._counters["rate_limited"] += len(packets) - len(passed)
            packets = passed
        if packets:
            self._sock.send_many([encapsulate(p, now) for p in packets], self._addr)


class ToyVpnFront:
    def __init__(
        self,
        cfg: ToyVpnConfig,
        *,
        mtu: int,
        reserved: list[IPAddress],
        router: Router[RouteOwner],
        tun: Tun,
        sock: DatagramSocket,
        counters: collections.Counter[str],
        after_tun_write: Callable[[int], object] | None = None,
    ) -> None:
        """``after_tun_write`` is told how many packets the receive loop wrote to the TUN
        (the TUN reader's ``tun_written``: a reply is often waiting already)."""
        self.protocol = toyvpn.ToyVpnServer(
            secret=cfg.secret,
            pool=cfg.pool,
            mtu=mtu,
            dns=cfg.dns,
            routes=cfg.routes,
            search_domain=cfg.search_domain,
            keepalive=cfg.keepalive,
            idle_timeout=cfg.idle_timeout,
            reserved=reserved,
        )
        self.router = router
        self.tun = tun
        self.sock = sock
        self.counters = counters
        self._after_tun_write = after_tun_write
        self._limiter = LogLimiter(log)
        self._rate_down = cfg.rate_down
        self._rate_up = cfg.rate_up
        self._up: dict[toyvpn.Session, TokenBucket] = {}  # each session's, with rate_up

    async def receive_loop(self, nursery: trio.Nursery) -> None:
        """Datagrams in: handshakes answered (sessions start in ``nursery``), data to the TUN."""
        sock = self.sock

        def start_session(session: toyvpn.Session, route: SessionRoute) -> None:
            nursery.start_soon(self.session_task, session, route)

        while True:
            await sock.wait_readable()
            self.receive_ready(trio.current_time, start_session)

    def receive_ready(self, clock: Callable[[], float], start_session: SessionStarter) -> None:
        """One drain of what the socket holds now (never waits): handshakes answered (a new
        session's timer task started by ``start_session``, given ``session_task``'s
        arguments), data to the TUN. The data thread's handler, and the receive loop's."""
        batch = self.sock.drain()
        now = clock()
        receive = self.protocol.receive
        counters = self.counters
        to_tun: list[bytes] = []
        for data, addr in batch:
            try:
                result = receive(data, addr, now)
                if type(result) is bytes:
                    if self._up and not self._up_allows(addr, result, now):
                        continue
                    to_tun.append(result)
                elif isinstance(result, toyvpn.Handshake):
                    self._handshake(result, now, start_session)
                elif isinstance(result, toyvpn.Refused):
                    self._refused(result, addr, now)
            except Exception:
                counters["receive_error"] += 1
                log.exception("toyvpn: handling a datagram from %s failed", format_endpoint(addr))
        if to_tun:
            # The UDP checksum already covered each packet in transit: no re-verifying.
            counters["tun_write_dropped"] += self.tun.write_batch(to_tun, verify_checksums=False)
            if self._after_tun_write is not None:
                self._after_tun_write(len(to_tun))

    def _up_allows(self, addr: tuple[Any, ...], packet: bytes, now: float) -> bool:
        """Whether the packet from the client at ``addr`` is within its session's rate."""
        session = self.protocol.sessions.get(addr)
        bucket = None if session is None else self._up.get(session)
        if bucket is None or bucket.take(len(packet), now):
            return True
        self.protocol.counters["rate_limited"] += 1
        return False

    def _handshake(self, hs: toyvpn.Handshake, now: float, start_session: SessionStarter) -> None:
        session = hs.session
        sock = self.sock
        for reply in hs.replies:
            sock.send(reply, session.addr)
        if not hs.new:
            return
        down = None if self._rate_down is None else TokenBucket(self._rate_down, now)
        if self._rate_up is not None:
            self._up[session] = TokenBucket(self._rate_up, now)
        route = SessionRoute(session, sock, down, self.protocol.counters)
        self.router.add(ipaddress.ip_network(session.address), route)
        log.info(
            "toyvpn: client %s connected as %s", format_endpoint(session.addr), session.address
        )
        start_session(session, route)

    def _refused(self, refused: toyvpn.Refused, addr: tuple[Any, ...], now: float) -> None:
        if refused.reason == "bad_secret":
            self._limiter.warning(
                "toyvpn_bad_secret", now, "toyvpn: wrong secret from %s", format_endpoint(addr)
            )
        elif refused.reason == "pool_full":
            self._limiter.warning(
                "toyvpn_pool_full",
                now,
                "toyvpn: address pool full (%d in use); refusing %s",
                self.protocol.pool.in_use,
                format_endpoint(addr),
            )

    async def session_task(self, session: toyvpn.Session, route: SessionRoute) -> None:
        try:
            await run_timers(
                self.protocol, session, lambda: self.sock.send(toyvpn.KEEPALIVE, session.addr)
            )
            log.info(
                "toyvpn: client %s (%s) idle; session ended",
                format_endpoint(session.addr),
                session.address,
            )
        finally:
            self.router.remove_owner(route)  # its own routes only
            self._up.pop(session, None)
            self.protocol.close(session)


async def run_timers(
    protocol: toyvpn.ToyVpnServer, session: toyvpn.Session, send_keepalive: Callable[[], object]
) -> None:
    """A client session's timers: keepalives while we are silent; returns when it expires.

    Sleeping to the deadline computed before new traffic is safe: traffic only ever moves the
    deadlines later, so waking early just recomputes.
    """
    while True:
        await trio.sleep_until(session.next_deadline())
        action = protocol.tick(session, trio.current_time())
        if action == toyvpn.TICK_KEEPALIVE:
            send_keepalive()
        elif action == toyvpn.TICK_EXPIRED:
            return
