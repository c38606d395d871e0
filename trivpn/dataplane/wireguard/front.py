"""The WireGuard front: one UDP socket, the sans-IO Device, the shared router and TUN.

Cryptokey routing: each peer's allowed_ips are routes in the server's router to a sender
that encrypts for that peer; a decrypted packet reaches the TUN only if the router maps its
source back to the same peer (as the reference implementations check it). A network belongs
to one peer at a time: giving it to another peer takes it from the first, as in wireguard-go.

Peers can change at runtime through the UAPI (``uapi_snapshot`` / ``uapi_apply``, what `wg`
reads and sets), through the peer registry (``apply_peer_config``, ``discard_peer``, called by
trivpn.registry.sync) and through a reload. A `wg set` reports the peers it changed to
``on_peer_change`` (trivpn.registry.sync keeps them in the registry); the front itself does no I/O.
"""

from __future__ import annotations

import collections
import errno
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from ipaddress import ip_address

import attrs
import trio

from trivpn.config import IPAddress, WireGuardConfig, WireGuardPeerConfig
from trivpn.dataplane.router import Router
from trivpn.net.tun import Tun
from trivpn.net.udp import DatagramSocket
from trivpn.proto import uapi
from trivpn.proto.endpoints import format_endpoint, plain_address
from trivpn.proto.wireguard import (
    Device,
    EndpointChanged,
    HandshakeCompleted,
    HandshakeFailed,
    IPNetwork,
    Output,
    Peer,
    PeerConfig,
    SessionExpired,
    encode_key,
)
from trivpn.proto.wireguard.crypto import CryptoError, dh

log = logging.getLogger("trivpn")

Sender = Callable[[list[bytes], float], None]


@attrs.frozen
class PeerChange:
    """A peer as a `wg set` left it: ``removed``, or present with these settings."""

    public_key: bytes
    removed: bool
    preshared_key: bytes | None = attrs.field(default=None, repr=False)
    allowed_ips: tuple[IPNetwork, ...] = ()
    endpoint: tuple[str, int] | None = None
    persistent_keepalive: int | None = None


PeerChangeHandler = Callable[[Sequence[PeerChange]], None]


def _show(addr: tuple[str, int] | None) -> str:
    return "none" if addr is None else format_endpoint(addr)


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
            rng=os.urandom,
            wallclock=time.time,
            under_load_rate=cfg.under_load_rate,
            mtu=mtu,
            source_filter=self._source_is_routed_to,
        )
        self._senders: dict[Peer, Sender] = {}
        self._routes: dict[IPNetwork, Peer] = {}  # the networks this front routes, and to whom
        self._out = Output()
        self._timer_scope: trio.CancelScope | None = None
        self._losers: dict[bytes, None] = {}  # peers a network was taken from, for on_peer_change
        # told, after each `wg set`, which peers it changed; must not block
        self.on_peer_change: PeerChangeHandler | None = None
        # told whenever the set of routed networks (`routed_networks`) may have changed
        self.on_routes_change: Callable[[], None] | None = None
        for peer_cfg in cfg.peers:
            self.add_peer(peer_cfg)

    @property
    def public_key(self) -> str:
        return encode_key(self.device.public_key)

    # -- peers ---------------------------------------------------------------------------

    def add_peer(self, cfg: WireGuardPeerConfig) -> Peer:
        return self.add_peer_config(peer_config(cfg))

    def apply_peer_config(self, config: PeerConfig, *, keepalive: bool = True) -> str | None:
        """Make the peer of ``config.public_key`` look like ``config``: "added", "changed",
        or None when it already did. Only a new preshared key ends its sessions; new
        allowed_ips, endpoint or keepalive leave them running. An endpoint of None keeps
        the one the peer roamed to; ``keepalive=False`` keeps an existing peer's (the
        registry does not store one: a `wg set` may have given it)."""
        peer = self.device.peers.get(config.public_key)
        if peer is None:
            self.add_peer_config(config)
            return "added"
        before = _settings(peer)
        if config.preshared_key != peer.config.preshared_key:
            peer = self._replace_preshared_key(peer, config.preshared_key)
        if config.endpoint is not None and config.endpoint != peer.endpoint:
            peer.endpoint = config.endpoint
            self._routes_changed()  # a route may hold the new endpoint
        if keepalive and config.persistent_keepalive != peer.persistent_keepalive:
            self.set_persistent_keepalive(peer, config.persistent_keepalive or 0)
        if config.allowed_ips != peer.allowed_ips:
            self.set_allowed_ips(peer, config.allowed_ips)
        renamed = bool(config.name) and config.name != peer.name
        if renamed:
            peer.name = config.name
        return "changed" if renamed or _settings(peer) != before else None

    def discard_peer(self, public_key: bytes) -> bool:
        """Remove the peer if there is one; whether there was."""
        if public_key not in self.device.peers:
            return False
        self.remove_peer(public_key)
        return True

    def rename_peer(self, public_key: bytes, name: str) -> None:
        """The name logs use (a registry name given to a peer that `wg set` added)."""
        peer = self.device.peers.get(public_key)
        if peer is not None:
            peer.name = name

    def add_peer_config(self, config: PeerConfig) -> Peer:
        """Add a peer (at runtime too) and route its allowed_ips to it."""
        peer = self.device.add_peer(config)
        send = self.device.send
        out = self._out

        def sender(packets: list[bytes], now: float) -> None:
            out.clear()
            for packet in packets:
                send(peer, packet, now, out)
            self._flush(out)

        self._senders[peer] = sender
        self.set_allowed_ips(peer, config.allowed_ips)
        self._poke_timers()
        return peer

    def remove_peer(self, public_key: bytes) -> None:
        """Forget a peer: its routes go at once, its sessions end (keys erased)."""
        peer = self.device.peers[public_key]
        del self._senders[peer]
        # peer.allowed_ips are exactly its routes (set_allowed_ips keeps them so): no table walk.
        for network in peer.allowed_ips:
            self.router.remove(network)
            del self._routes[network]
        self.device.remove_peer(public_key)
        self._routes_changed()

    def set_allowed_ips(self, peer: Peer, networks: Iterable[IPNetwork]) -> None:
        """Route exactly ``networks`` to ``peer``, in the router and in the peer's own list."""
        sender = self._senders[peer]
        wanted = tuple(dict.fromkeys(networks))
        for network in peer.allowed_ips:
            if network not in wanted:
                self.router.remove(network)
                self._routes.pop(network, None)
        for network in wanted:
            previous = self._routes.get(network)
            if previous is not None and previous is not peer:
                _set_peer_networks(previous, [n for n in previous.allowed_ips if n != network])
                self._losers[previous.public_key] = None
            self._routes[network] = peer
            self.router.add(network, sender)
        _set_peer_networks(peer, wanted)
        self._routes_changed()

    def routed_networks(self) -> frozenset[IPNetwork]:
        """Every network routed to a peer of this front."""
        return frozenset(self._routes)

    def peer_endpoints(self) -> frozenset[IPAddress]:
        """The addresses of the peers' current endpoints (a route must not capture them)."""
        return frozenset(ip_address(p.endpoint[0]) for p in self.device if p.endpoint)

    def _routes_changed(self) -> None:
        if self.on_routes_change is not None:
            self.on_routes_change()

    def set_persistent_keepalive(self, peer: Peer, seconds: int) -> None:
        """0 turns it off; turning it on sends a keepalive at once, as wg(8) does."""
        self.device.set_persistent_keepalive(peer, seconds)
        self._poke_timers()

    def _replace_preshared_key(self, peer: Peer, preshared_key: bytes | None) -> Peer:
        """A new preshared key ends the peer's sessions: the next handshake uses it."""
        config = PeerConfig(
            public_key=peer.public_key,
            preshared_key=preshared_key,
            allowed_ips=peer.allowed_ips,
            endpoint=peer.endpoint,
            persistent_keepalive=peer.persistent_keepalive,
            name=peer.name,
        )
        counters = (peer.rx_bytes, peer.tx_bytes, peer.last_handshake_time)
        self.remove_peer(peer.public_key)
        new = self.add_peer_config(config)
        new.rx_bytes, new.tx_bytes, new.last_handshake_time = counters
        return new

    def _routed_elsewhere(self, network: IPNetwork) -> bool:
        """Whether exactly ``network`` is routed to something not of this front (ToyVPN)."""
        if network in self._routes:
            return False
        owner = self.router.remove(network)
        if owner is None:
            return False
        self.router.add(network, owner)  # put back at once: no checkpoint in between
        return True

    # -- the UAPI (`wg show`, `wg set`, `wg syncconf`) -----------------------------------

    @property
    def listen_port(self) -> int:
        port: int = self.sock.sock.getsockname()[1]
        return port

    def uapi_snapshot(self) -> uapi.DeviceSnapshot:
        return uapi.DeviceSnapshot(
            private_key=self.device.identity.private_key,
            listen_port=self.listen_port,
            fwmark=self.fwmark,
            peers=tuple(
                uapi.PeerSnapshot(
                    public_key=peer.public_key,
                    preshared_key=peer.config.preshared_key,
                    endpoint=peer.endpoint,
                    last_handshake_time=peer.last_handshake_time,
                    rx_bytes=peer.rx_bytes,
                    tx_bytes=peer.tx_bytes,
                    persistent_keepalive=peer.persistent_keepalive,
                    allowed_ips=peer.allowed_ips,
                )
                for peer in self.device
            ),
        )

    def uapi_apply(self, operations: Sequence[uapi.Operation]) -> None:
        """Apply a `wg set`: everything checked first, so that a refusal changes nothing."""
        for op in operations:
            self._check_operation(op)
        touched: dict[bytes, None] = {}  # keys of the peers changed, in order
        self._losers.clear()
        for op in operations:
            touched.update(dict.fromkeys(self._apply_operation(op)))
        # A peer that lost a network to another changed too, and is reported first: a
        # registry must free the network before it can give it to the other.
        ordered = [*self._losers, *(key for key in touched if key not in self._losers)]
        self._poke_timers()
        if ordered and self.on_peer_change is not None:
            self.on_peer_change([self._change_of(key) for key in ordered])

    def _change_of(self, public_key: bytes) -> PeerChange:
        peer = self.device.peers.get(public_key)
        if peer is None:
            return PeerChange(public_key, removed=True)
        return PeerChange(
            public_key,
            removed=False,
            preshared_key=peer.config.preshared_key,
            allowed_ips=peer.allowed_ips,
            endpoint=peer.endpoint,
            persistent_keepalive=peer.persistent_keepalive or None,  # 0 is off too
        )

    def _check_operation(self, op: uapi.Operation) -> None:
        if isinstance(op, uapi.SetPrivateKey):
            # All zeros asks to remove the key (a file without PrivateKey): a server needs one.
            if op.private_key == uapi.ZERO_KEY:
                raise uapi.UapiError(errno.EOPNOTSUPP, "the private key cannot be removed")
        elif isinstance(op, uapi.SetListenPort):
            # 0 asks for "any port" (wg setconf/syncconf send it for a file without ListenPort):
            # the current one is such a port.
            if op.port not in (0, self.listen_port):
                port = op.port
                self._check_socket_change(
                    lambda: self.sock.check_rebind(port), f"listen on port {port}"
                )
        elif isinstance(op, uapi.SetFwmark):
            if op.mark != self.fwmark:
                mark = op.mark
                self._check_socket_change(lambda: self.sock.check_mark(mark), "set the fwmark")
        elif isinstance(op, uapi.ConfigurePeer):
            key = op.public_key
            if key not in self.device.peers and key != self.device.public_key:
                try:
                    dh(self.device.identity.private_key, key)
                except CryptoError:
                    raise uapi.UapiError(errno.EINVAL, "unusable public key") from None
            for network in op.allowed_ips:
                if self._routed_elsewhere(network):
                    raise uapi.UapiError(errno.EADDRINUSE, f"{network} is routed to ToyVPN")

    def _apply_operation(self, op: uapi.Operation) -> list[bytes]:
        """Apply one operation; the keys of the peers it changed."""
        if isinstance(op, uapi.RemoveAllPeers):
            removed = list(self.device.peers)
            for public_key in removed:
                self.remove_peer(public_key)
            log.info("wireguard: all peers removed through the UAPI")
            return removed
        if isinstance(op, uapi.RemovePeer):
            peer = self.device.peers.get(op.public_key)
            if peer is None:
                return []
            self.remove_peer(op.public_key)
            log.info("wireguard: peer %s removed through the UAPI", _name(peer))
            return [op.public_key]
        if isinstance(op, uapi.ConfigurePeer) and self._configure_peer(op):
            return [op.public_key]
        if isinstance(op, uapi.SetPrivateKey):
            self.set_private_key(op.private_key)
        elif isinstance(op, uapi.SetListenPort):
            self.set_listen_port(op.port)
        elif isinstance(op, uapi.SetFwmark):
            self.set_fwmark(op.mark)
        # A peer removed for having the new own key is not reported: the key change lasts
        # until a restart, after which that peer (kept in the registry) is valid again.
        return []

    def _configure_peer(self, op: uapi.ConfigurePeer) -> bool:
        """Add or change a peer; whether anything changed."""
        if op.public_key == self.device.public_key:
            return False  # ignored, as wireguard-go does
        preshared_key = None if op.preshared_key == uapi.ZERO_KEY else op.preshared_key
        peer = self.device.peers.get(op.public_key)
        if peer is None:
            if op.update_only:
                return False
            peer = self.add_peer_config(
                PeerConfig(
                    public_key=op.public_key,
                    preshared_key=preshared_key,
                    allowed_ips=op.allowed_ips,
                    endpoint=op.endpoint,
                    persistent_keepalive=op.persistent_keepalive,
                )
            )
            log.info(
                "wireguard: peer %s added through the UAPI (allowed ips %s)",
                _name(peer),
                ", ".join(map(str, peer.allowed_ips)) or "none",
            )
            return True
        before = _settings(peer)
        if op.preshared_key is not None and preshared_key != peer.config.preshared_key:
            peer = self._replace_preshared_key(peer, preshared_key)
        if op.endpoint is not None and op.endpoint != peer.endpoint:
            peer.endpoint = op.endpoint
            self._routes_changed()  # a route may hold the new endpoint
        if op.persistent_keepalive is not None:
            self.set_persistent_keepalive(peer, op.persistent_keepalive)
        if op.replace_allowed_ips or op.allowed_ips:
            kept = () if op.replace_allowed_ips else peer.allowed_ips
            self.set_allowed_ips(peer, kept + op.allowed_ips)
        # `wg syncconf` restates every peer: only a real change is worth a line.
        if _settings(peer) == before:
            return False
        log.info("wireguard: peer %s changed through the UAPI", _name(peer))
        return True

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
                if isinstance(event, EndpointChanged):
                    self._routes_changed()  # a route may now hold the new endpoint
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

    # -- the interface's own settings at runtime (`wg set` private-key, listen-port, fwmark) --
    # Like wireguard-go's, they are runtime state: nothing is saved, a restart (or a new
    # process) takes the config file's values again, and the log says which key keeps them.

    @property
    def fwmark(self) -> int:
        """The SO_MARK of the listening socket (0: none), as `wg show` reports it."""
        return self.sock.fwmark

    def set_private_key(self, private_key: bytes) -> bool:
        """A new static key (wireguard-go's SetPrivateKey): every peer's sessions end, a peer
        with the new own public key is removed; whether it changed (the same key: no-op)."""
        new_public = self.device.identity.from_private_key(private_key).public_key
        mirror = self.device.peers.get(new_public)
        if mirror is not None:  # (never the same key: the device has no peer with its own)
            self.remove_peer(new_public)  # here, so that its routes go too
            log.info("wireguard: peer %s removed: it has the new own public key", _name(mirror))
        if not self.device.set_private_key(private_key):
            return False
        log.info(
            "wireguard: private key changed, new public key %s (peers must be given it; "
            "every session starts over); it lasts until a restart: to keep it, write the key "
            "to [wireguard] private_key_file (or private_key)",
            self.public_key,
        )
        return True

    def set_listen_port(self, port: int) -> None:
        """Move the UDP socket to ``port``; 0 or the current port keep the socket (a server's
        clients know its port: wireguard-go would rebind to a random one for 0). Sessions
        and endpoints stay; peers roam to the new port with our next packet. UapiError if
        the port cannot be bound (nothing changed then)."""
        old = self.listen_port
        if port in (0, old):
            return
        self._check_socket_change(lambda: self.sock.rebind(port), f"listen on port {port}")
        log.info(
            "wireguard: listening on port %d instead of %d until a restart; to keep it, "
            "set the port of [wireguard] listen",
            port,
            old,
        )

    def set_fwmark(self, mark: int, *, from_config: bool = False) -> None:
        """SO_MARK on the UDP socket (0 clears it); it moves with the socket to a new port.
        ``from_config``: a reload's, which the file keeps (else `wg set`'s, which it does not).
        UapiError if the kernel refuses (nothing changed then)."""
        if mark == self.fwmark:
            return
        self._check_socket_change(lambda: self.sock.set_mark(mark), "set the fwmark")
        shown = f"{mark:#x}" if mark else "off"
        if from_config:
            log.info("wireguard: fwmark %s", shown)
        else:
            log.info(
                "wireguard: fwmark %s until a restart; to keep it, set [wireguard] fwmark", shown
            )

    def _check_socket_change(self, change: Callable[[], None], what: str) -> None:
        """Run a socket change (or its dry run); an OSError becomes the UAPI's errno."""
        try:
            change()
        except OSError as e:
            code = e.errno or errno.EIO
            raise uapi.UapiError(code, f"cannot {what}: {e.strerror or e}") from None


def peer_config(cfg: WireGuardPeerConfig) -> PeerConfig:
    """A static (TOML) or registry peer as the device takes it."""
    return PeerConfig(
        public_key=cfg.public_key,
        preshared_key=cfg.preshared_key,
        allowed_ips=cfg.allowed_ips,
        endpoint=(cfg.endpoint.host, cfg.endpoint.port) if cfg.endpoint else None,
        persistent_keepalive=cfg.persistent_keepalive,
        name=cfg.name,
    )


def _name(peer: Peer) -> str:
    return peer.name or encode_key(peer.public_key)[:8] + "…"


def _settings(peer: Peer) -> tuple[object, ...]:
    return (
        peer.config.preshared_key,
        peer.endpoint,
        peer.persistent_keepalive,
        peer.allowed_ips,
    )


def _set_peer_networks(peer: Peer, networks: Sequence[IPNetwork]) -> None:
    """The peer's own view of its allowed_ips (``wg show``; its default source check)."""
    peer.allowed_ips = tuple(networks)
    peer.allowed_v4 = _masks(networks, 4)
    peer.allowed_v6 = _masks(networks, 6)


def _masks(networks: Sequence[IPNetwork], version: int) -> tuple[tuple[int, int], ...]:
    return tuple((int(n.network_address), int(n.netmask)) for n in networks if n.version == version)
