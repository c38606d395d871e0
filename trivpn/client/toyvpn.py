"""`trivpn toyvpn-connect`: a Linux ToyVPN client (handshake, TUN, routes, relay, reconnect)."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket

import trio

from trivpn.net import link, udp
from trivpn.net.tun import Tun
from trivpn.proto import toyvpn
from trivpn.proto.ip import IPNetwork

log = logging.getLogger("trivpn.client")

BATCH = 128
HANDSHAKE_TIMEOUT = 2.0
MAX_BACKOFF = 30.0


def _split_default(route: IPNetwork) -> list[IPNetwork]:
    """A default route as two halves, so it wins over the existing default without replacing it."""
    if route.prefixlen == 0:
        return list(route.subnets(prefixlen_diff=1))
    return [route]


class ToyVpnConnection:
    def __init__(
        self,
        host: str,
        port: int,
        secret: bytes,
        *,
        tun_name: str = "toyvpn0",
        keepalive: float = 15.0,
        quiet_timeout: float = 60.0,
    ) -> None:
        family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        self.family = family
        self.server = sockaddr
        self.server_ip = ipaddress.ip_address(sockaddr[0])
        self.tun_name = tun_name
        self.proto = toyvpn.ToyVpnClient(secret, keepalive=keepalive, quiet_timeout=quiet_timeout)
        self._pinned = False
        self.sessions = 0  # completed handshakes, for tests and logs

    async def run(self) -> None:
        """Connect, relay until the server goes quiet, reconnect with backoff; until cancelled."""
        sock = udp.open_connected(self.server, self.family)
        backoff = 1.0
        try:
            while True:
                params = await self._handshake(sock)
                if params is None:
                    log.warning("no answer from %s; retrying in %.0f s", self.server[0], backoff)
                    await trio.sleep(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF)
                    continue
                backoff = 1.0
                self.sessions += 1
                await self._session(sock, params)
                log.warning("server %s went quiet; reconnecting", self.server[0])
        finally:
            sock.close()
            if self._pinned:
                link.delete_host_route(self.server_ip)

    async def _handshake(self, sock: udp.DatagramSocket) -> toyvpn.Parameters | None:
        for datagram in self.proto.handshake(trio.current_time()):
            sock.send(datagram)
        with trio.move_on_after(HANDSHAKE_TIMEOUT):
            while True:
                await sock.wait_readable()
                for data, _addr in sock.drain():
                    result = self.proto.receive(data, trio.current_time())
                    if isinstance(result, toyvpn.Parameters):
                        return result
        return None

    async def _session(self, sock: udp.DatagramSocket, params: toyvpn.Parameters) -> None:
        with contextlib.closing(Tun.open(self.tun_name, offload=True)) as tun:
            link.configure_interface(
                tun.name, [ipaddress.IPv4Interface(f"{params.address}/32")], params.mtu
            )
            for route in params.routes:
                if self.server_ip in route and not self._pinned:
                    self._pin_server_route()
                for half in _split_default(route):
                    link.add_route(tun.name, half)
            log.info(
                "connected to %s: address %s, mtu %d, routes %s%s",
                self.server[0],
                params.address,
                params.mtu,
                ", ".join(map(str, params.routes)) or "none",
                f", dns {', '.join(map(str, params.dns))} (not applied)" if params.dns else "",
            )
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._uplink, tun, sock)
                nursery.start_soon(self._downlink, tun, sock)
                nursery.start_soon(self._timers, sock, nursery.cancel_scope)

    def _pin_server_route(self) -> None:
        """Keep reaching the server the way we reach it now, before routes capture it."""
        ifname, gateway = link.route_get(self.server_ip)
        link.add_host_route(self.server_ip, ifname=ifname, gateway=gateway)
        self._pinned = True

    async def _uplink(self, tun: Tun, sock: udp.DatagramSocket) -> None:
        outgoing = self.proto.outgoing
        while True:
            await trio.lowlevel.wait_readable(tun.fd)
            datagrams = outgoing(tun.read_batch(BATCH), trio.current_time())
            if datagrams:
                sock.send_many(datagrams)

    async def _downlink(self, tun: Tun, sock: udp.DatagramSocket) -> None:
        receive = self.proto.receive
        while True:
            await sock.wait_readable()
            now = trio.current_time()
            packets = [r for data, _addr in sock.drain() if type(r := receive(data, now)) is bytes]
            if packets:
                tun.write_batch(packets, verify_checksums=False)  # UDP's checksum held

    async def _timers(self, sock: udp.DatagramSocket, scope: trio.CancelScope) -> None:
        while True:
            await trio.sleep_until(self.proto.next_deadline())
            action = self.proto.tick(trio.current_time())
            if action == toyvpn.TICK_KEEPALIVE:
                sock.send(toyvpn.KEEPALIVE)
            elif action == toyvpn.TICK_EXPIRED:
                scope.cancel()
                return
