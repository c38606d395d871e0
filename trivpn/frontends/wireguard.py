"""The WireGuard front: one UDP socket, the sans-IO Device, the shared router and TUN.

Cryptokey routing: each peer's allowed_ips are routes in the server's router to a sender
that encrypts for that peer; a decrypted packet reaches the TUN only if the router maps its
source back to the same peer (as the reference implementations check it).
"""

from __future__ import annotations

import collections
import logging
import math
from collections.abc import Callable

import trio

from trivpn.config import WireGuardConfig, WireGuardPeerConfig
from trivpn.net.tun import Tun
from trivpn.proto.wireguard import (
    Device,
    EndpointChanged,
    HandshakeCompleted,
    HandshakeFailed,
    Output,
    Peer,
    PeerConfig,
    SessionExpired,
    encode_key,
)
from trivpn.router import Router
from trivpn.udp import DatagramSocket, plain_address

log = logging.getLogger("trivpn")

Sender = Callable[[list[bytes], float], None]


def _show(addr: tuple[str, int] | None) -> str:
    if addr is None:
        return "none"
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class WireGuardFront:
    def __init__(
        self,
        cfg: WireGuardConfig,
        private_key: bytes,
        *,
        router: Router[Sender],
        tun: Tun,
        sock: DatagramSocket,
        mtu: int,
        counters: collections.Counter[str],
    ) -> None:
        self.router = router
        self.tun = tun
        self.sock = sock
        self.counters = counters
        self.device = Device(
            private_key,
            under_load_rate=cfg.under_load_rate,
            mtu=mtu,
            source_filter=self._source_is_routed_to,
        )
        self._senders: dict[Peer, Sender] = {}
        self._out = Output()
        self._timer_scope: trio.CancelScope | None = None
        for peer_cfg in cfg.peers:
            self.add_peer(peer_cfg)

    @property
    def public_key(self) -> str:
        return encode_key(self.device.public_key)

    # -- peers ---------------------------------------------------------------------------

    def add_peer(self, cfg: WireGuardPeerConfig) -> Peer:
        peer = self.device.add_peer(
            PeerConfig(
                public_key=cfg.public_key,
                preshared_key=cfg.preshared_key,
                allowed_ips=cfg.allowed_ips,
                endpoint=(cfg.endpoint.host, cfg.endpoint.port) if cfg.endpoint else None,
                persistent_keepalive=cfg.persistent_keepalive,
                name=cfg.name,
            )
        )
        send = self.device.send
        out = self._out

        def sender(packets: list[bytes], now: float) -> None:
            out.clear()
            for packet in packets:
                send(peer, packet, now, out)
            self._flush(out)

        self._senders[peer] = sender
        for network in cfg.allowed_ips:
            self.router.add(network, sender)
        self._poke_timers()
        return peer

    def remove_peer(self, public_key: bytes) -> None:
        peer = self.device.peers[public_key]
        sender = self._senders.pop(peer)
        self.router.remove_owner(sender)
        self.device.remove_peer(public_key)

    def _source_is_routed_to(self, peer: Peer, source: bytes) -> bool:
        sender = self._senders.get(peer)
        return sender is not None and self.router.lookup_bytes(source) is sender

    # -- tasks ---------------------------------------------------------------------------

    async def receive_loop(self) -> None:
        """Datagrams in: handshakes answered, transport data decrypted to the TUN."""
        sock = self.sock
        receive = self.device.receive
        out = self._out
        while True:
            await sock.wait_readable()
            batch = sock.drain()
            now = trio.current_time()
            out.clear()
            for data, addr in batch:
                try:
                    receive(data, plain_address(addr), now, out)
                except Exception:
                    self.counters["wireguard_receive_error"] += 1
                    log.exception("wireguard: handling a datagram from %s failed", addr[0])
            self._flush(out)

    async def timer_loop(self) -> None:
        """Run the device's timers at its next deadline (which calls may move earlier)."""
        out = self._out
        while True:
            deadline = self.device.next_deadline()
            with trio.CancelScope(deadline=math.inf if deadline is None else deadline) as scope:
                self._timer_scope = scope
                await trio.sleep_forever()
            self._timer_scope = None
            out.clear()
            self.device.tick(trio.current_time(), out)
            self._flush(out)

    # -- output --------------------------------------------------------------------------

    def _flush(self, out: Output) -> None:
        """Carry out what the device asked for: datagrams, TUN packets, events."""
        if out.packets:
            # The AEAD tag has proven each packet intact: no need to re-verify TCP checksums.
            dropped = self.tun.write_batch(out.packets, verify_checksums=False)
            if dropped:
                self.counters["tun_write_dropped"] += dropped
        if out.datagrams:
            self._send_datagrams(out.datagrams)
        if out.events:
            for event in out.events:
                self._log_event(event)
        self._poke_timers()

    def _send_datagrams(self, datagrams: list[tuple[bytes, tuple[str, int]]]) -> None:
        """Runs of datagrams to one endpoint leave together (GSO)."""
        run: list[bytes] = []
        run_addr: tuple[str, int] | None = None
        for data, addr in datagrams:
            if addr != run_addr:
                if run:
                    self.sock.send_many(run, run_addr)
                run, run_addr = [], addr
            run.append(data)
        if run:
            self.sock.send_many(run, run_addr)

    def _poke_timers(self) -> None:
        scope = self._timer_scope
        if scope is None:
            return
        deadline = self.device.next_deadline()
        if deadline is not None and deadline < scope.deadline:
            scope.deadline = deadline

    def _log_event(self, event: object) -> None:
        if isinstance(event, HandshakeCompleted):
            log.info("wireguard: peer %s handshake completed", _name(event.peer))
        elif isinstance(event, EndpointChanged):
            log.info(
                "wireguard: peer %s endpoint changed from %s to %s",
                _name(event.peer),
                _show(event.old),
                _show(event.new),
            )
        elif isinstance(event, HandshakeFailed):
            log.warning(
                "wireguard: peer %s did not answer the handshake; retrying on new traffic",
                _name(event.peer),
            )
        elif isinstance(event, SessionExpired):
            log.info("wireguard: peer %s session expired", _name(event.peer))


def _name(peer: Peer) -> str:
    return peer.name or encode_key(peer.public_key)[:8] + "…"
