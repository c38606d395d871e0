"""Carrying out what the sans-IO device asked for: datagrams to the UDP socket, decrypted
packets to the TUN, events to the log. One Output is shared by the receive loop, the timer
loop and the peers' routes: they run on one thread and never interleave."""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable

from trivpn.dataplane.wireguard.io_protocols import TunWriter, UdpSocket
from trivpn.proto.endpoints import format_endpoint
from trivpn.proto.wireguard import (
    EndpointChanged,
    Event,
    HandshakeCompleted,
    HandshakeFailed,
    Output,
    Peer,
    QuotaReached,
    SessionExpired,
)

log = logging.getLogger("trivpn")


class OutputSink:
    def __init__(
        self,
        tun: TunWriter,
        sock: UdpSocket,
        counters: collections.Counter[str],
        *,
        wake_timers: Callable[[], None],
    ) -> None:
        self.tun = tun
        self.sock = sock
        self.counters = counters
        self.out = Output()
        # told that the device's next deadline may have moved earlier (TimerLoop.wake)
        self.wake_timers = wake_timers
        # told whenever the routed networks or the peers' endpoints may have changed; must
        # not block (trivpn.daemon.peer_routes keeps the kernel routes)
        self.on_routes_change: Callable[[], None] | None = None
        # told when a peer's usage reached a mark its policy set (PeerPolicies.quota_reached)
        self.on_quota_reached: Callable[[Peer], None] | None = None
        # told by the receive loop how many packets a batch wrote to the TUN, once flushed
        # (TunReader.tun_written); never from flush itself, whose ``out`` the routes' sends
        # reuse
        self.after_tun_write: Callable[[int], object] | None = None
        # runs fn(*args) on the trio thread, when flush may run on the data thread
        # (trivpn.dataplane.data_thread); None: flush runs on the trio thread itself
        self.handoff: Callable[..., None] | None = None

    def routes_changed(self) -> None:
        if self.on_routes_change is not None:
            self.on_routes_change()

    def _to_trio(self, fn: Callable[..., object], *args: object) -> None:
        if self.handoff is None:
            fn(*args)
        else:
            self.handoff(fn, *args)

    def flush(self, out: Output) -> None:
        if out.packets:
            # The AEAD tag has proven each packet intact: no need to re-verify TCP checksums.
            dropped = self.tun.write_batch(out.packets, verify_checksums=False)
            if dropped:
                self.counters["tun_write_dropped"] += dropped
        if out.datagrams:
            self._send_datagrams(out.datagrams)
        if out.events:
            for event in out.events:
                _log_event(event)
                if isinstance(event, EndpointChanged):
                    self._to_trio(self.routes_changed)  # a route may now hold the new endpoint
                elif isinstance(event, QuotaReached) and self.on_quota_reached is not None:
                    # after the batch: the device held it
                    self._to_trio(self.on_quota_reached, event.peer)
        self.wake_timers()

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


def _show(addr: tuple[str, int] | None) -> str:
    return "none" if addr is None else format_endpoint(addr)


def _log_event(event: Event) -> None:
    if isinstance(event, HandshakeCompleted):
        log.info(
            "wireguard: peer %s handshake completed",
            event.peer.label,
        )
    elif isinstance(event, EndpointChanged):
        log.info(
            "wireguard: peer %s endpoint changed from %s to %s",
            event.peer.label,
            _show(event.old),
            _show(event.new),
        )
    elif isinstance(event, HandshakeFailed):
        log.warning(
            "wireguard: peer %s did not answer the handshake; retrying on new traffic",
            event.peer.label,
        )
    elif isinstance(event, SessionExpired):
        log.info("wireguard: peer %s session expired", event.peer.label)
