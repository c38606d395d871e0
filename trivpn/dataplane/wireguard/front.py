"""The WireGuard front: one UDP socket, the sans-IO Device, the server's route table and TUN.

Its parts, by job: ``routes`` (cryptokey routing on the one route table), ``peers`` (the
peer set and the one peer update), ``interface`` (listen port, private key, fwmark),
``uapi_target`` (the `wg` adapter), ``loops`` (the receive and timer tasks), ``policy``
(which peers are blocked, their limits and usage, and the timer of expiries and quota
periods) and ``output`` (datagrams, TUN packets and events out). Peers change at runtime
through the UAPI, the peer registry (trivpn.registry.sync: ``apply_peer_config``,
``discard_peer``) and a reload; a `wg set` reports the peers it changed to
``on_peer_change``, and route or endpoint changes are reported to ``on_routes_change``. The
front itself does no I/O but through its socket and TUN.
"""

from __future__ import annotations

import collections
import os
import time
from collections.abc import Callable, Sequence
from ipaddress import ip_address

from trivpn.config import IPAddress, WireGuardConfig, WireGuardPeerConfig
from trivpn.dataplane.router import RouteOwner, Router
from trivpn.dataplane.wireguard.interface import InterfaceSettings
from trivpn.dataplane.wireguard.io_protocols import TunWriter, UdpSocket
from trivpn.dataplane.wireguard.loops import TimerLoop, receive_loop, receive_ready
from trivpn.dataplane.wireguard.output import OutputSink
from trivpn.dataplane.wireguard.peers import Outcome, PeerSet, PeerUpdate, peer_config
from trivpn.dataplane.wireguard.policy import PeerPolicies
from trivpn.dataplane.wireguard.routes import PeerRoutes
from trivpn.dataplane.wireguard.uapi_target import PeerChangeHandler, UapiTarget
from trivpn.proto import uapi
from trivpn.proto.ip import IPNetwork
from trivpn.proto.policy import PeerState, Policy
from trivpn.proto.usage import UsageRecord
from trivpn.proto.wireguard import FIRST_TIMER_SPREAD, Device, Peer, PeerConfig


class WireGuardFront:
    def __init__(
        self,
        cfg: WireGuardConfig,
        private_key: bytes,
        *,
        router: Router[RouteOwner],
        tun: TunWriter,
        sock: UdpSocket,
        mtu: int,
        counters: collections.Counter[str],
        wallclock: Callable[[], float] = time.time,
        after_tun_write: Callable[[int], object] | None = None,
    ) -> None:
        """``after_tun_write`` is told how many packets the receive loop wrote to the TUN
        (the TUN reader's ``tun_written``: a reply is often waiting already)."""
        self.router = router
        self.tun = tun
        self.sock = sock
        self.counters = counters
        self.routes = PeerRoutes(router)
        self.device = Device(
            private_key,
            rng=os.urandom,
            wallclock=wallclock,  # handshake timestamps and `wg show`'s latest handshake
            under_load_rate=cfg.under_load_rate,
            mtu=mtu,
            allowed_ips=self.routes,
            first_timer_spread=FIRST_TIMER_SPREAD,
        )
        self._timers = TimerLoop(self.device)
        self._sink = OutputSink(tun, sock, counters, wake_timers=self._timers.wake)
        self._sink.after_tun_write = after_tun_write
        self.policies = PeerPolicies(self.device, wallclock, self._timers.wake)
        self._sink.on_quota_reached = self.policies.quota_reached
        self.peers = PeerSet(self.device, self.routes, self._sink, self.policies)
        self.interface = InterfaceSettings(sock, self.peers)
        self._uapi = UapiTarget(self.peers, self.interface, self._timers.wake)
        for peer_cfg in cfg.peers:
            self.add_peer(peer_cfg)

    # -- who is told of changes (trivpn.registry.sync, trivpn.daemon.peer_routes) --

    @property
    def on_peer_change(self) -> PeerChangeHandler | None:
        """Told, after each `wg set`, which peers it changed; must not block."""
        return self._uapi.on_peer_change

    @on_peer_change.setter
    def on_peer_change(self, handler: PeerChangeHandler | None) -> None:
        self._uapi.on_peer_change = handler

    @property
    def on_routes_change(self) -> Callable[[], None] | None:
        """Told whenever ``routed_networks`` or ``peer_endpoints`` may have changed."""
        return self._sink.on_routes_change

    @on_routes_change.setter
    def on_routes_change(self, handler: Callable[[], None] | None) -> None:
        self._sink.on_routes_change = handler

    # -- peers --

    def add_peer(self, cfg: WireGuardPeerConfig) -> Peer:
        peer, _ = self.peers.add(peer_config(cfg), cfg.policy)
        return peer

    def apply_peer_config(
        self, config: PeerConfig, *, keepalive: bool = True, policy: Policy | None = None
    ) -> Outcome:
        """Make the peer of ``config.public_key`` look like ``config``: "added", "changed",
        or None when it already did. An endpoint of None keeps the one the peer roamed to;
        ``keepalive=False`` keeps an existing peer's (the registry does not store one: a
        `wg set` may have given it). A ``policy`` of None keeps the peer's (a new peer:
        active)."""
        keep_keepalive = not keepalive and config.public_key in self.device.peers
        update = PeerUpdate(
            public_key=config.public_key,
            name=config.name,
            preshared_key=config.preshared_key,
            endpoint=config.endpoint,
            persistent_keepalive=None if keep_keepalive else config.persistent_keepalive or 0,
            allowed_ips=config.allowed_ips,
            policy=policy,
        )
        return self.peers.update(update).outcome

    def discard_peer(self, public_key: bytes) -> bool:
        """Remove the peer if there is one; whether there was."""
        return self.peers.discard(public_key)

    def rename_peer(self, public_key: bytes, name: str) -> None:
        """The name logs use (a registry name given to a peer that `wg set` added)."""
        self.peers.rename(public_key, name)

    def peer_state(self, public_key: bytes) -> tuple[PeerState, Policy]:
        """A peer's state (as of the last check) and the policy it follows."""
        return self.policies.state(public_key), self.policies.policy(public_key)

    def peer_usage(self, public_key: bytes) -> UsageRecord:
        """A peer's usage: its stored record plus what is not stored yet."""
        return self.policies.usage(public_key)

    def routed_networks(self) -> frozenset[IPNetwork]:
        """Every network routed to a peer of this front."""
        return self.routes.routed_networks()

    def peer_endpoints(self) -> frozenset[IPAddress]:
        """The addresses of the peers' current endpoints (a route must not capture them)."""
        return frozenset(ip_address(p.endpoint[0]) for p in self.device if p.endpoint)

    # -- the interface's own settings --

    @property
    def public_key(self) -> str:
        return self.interface.public_key

    @property
    def listen_port(self) -> int:
        return self.interface.listen_port

    @property
    def fwmark(self) -> int:
        return self.interface.fwmark

    def set_private_key(self, private_key: bytes) -> bool:
        return self.interface.set_private_key(private_key)

    def set_fwmark(self, mark: int, *, from_config: bool = False) -> None:
        self.interface.set_fwmark(mark, from_config=from_config)

    # -- the UAPI (`wg show`, `wg set`, `wg syncconf`) --

    def uapi_snapshot(self) -> uapi.DeviceSnapshot:
        return self._uapi.uapi_snapshot()

    def uapi_device_snapshot(self) -> uapi.DeviceSnapshot:
        return self._uapi.uapi_device_snapshot()

    def uapi_peer_keys(self) -> list[bytes]:
        return self._uapi.uapi_peer_keys()

    def uapi_peer_snapshot(self, public_key: bytes) -> uapi.PeerSnapshot | None:
        return self._uapi.uapi_peer_snapshot(public_key)

    def uapi_apply(self, operations: Sequence[uapi.Operation]) -> None:
        self._uapi.uapi_apply(operations)

    # -- tasks --

    async def receive_loop(self) -> None:
        await receive_loop(self.device, self._sink)

    def run_on_data_thread(
        self, handoff: Callable[..., None], wake_thread: Callable[[], None]
    ) -> None:
        """The socket and the timers are served by the data thread (``receive_ready``,
        ``next_deadline``, ``tick``), not by ``receive_loop`` and ``timer_loop``: what its
        flushes tell trio goes through ``handoff``, and a call that may have moved the
        device's next deadline calls ``wake_thread``."""
        self._sink.handoff = handoff
        self._sink.wake_timers = wake_thread
        self._timers.elsewhere = wake_thread

    def next_deadline(self) -> float | None:
        """When the device's timers are next due (the data thread's epoll timeout)."""
        return self.device.next_deadline()

    def tick(self, now: float) -> None:
        """The timers due at ``now`` (the data thread's, at ``next_deadline``)."""
        self._timers.tick(self._sink, now)

    def receive_ready(self, clock: Callable[[], float]) -> None:
        """What the socket holds now, received (the data thread's handler)."""
        receive_ready(self.device, self._sink, clock)

    async def timer_loop(self) -> None:
        await self._timers.run(self._sink)

    async def policy_loop(self) -> None:
        """Blocks and unblocks peers at their expiry and their quota period's roll-over."""
        await self.policies.run()
