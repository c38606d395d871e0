"""The WireGuard front's two tasks: datagrams in, and the device's timers."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Final

import trio

from trivpn.dataplane.wireguard.output import OutputSink
from trivpn.proto.endpoints import plain_address
from trivpn.proto.wireguard import Device

log = logging.getLogger("trivpn")

# Due peers handled per slice of the timer task: a handshake initiation costs ~130 us, so
# a slice holds the loop a few ms at most, and packets are forwarded between slices.
TIMER_SLICE: Final = 32


async def receive_loop(device: Device, sink: OutputSink) -> None:
    """Datagrams in: handshakes answered, transport data decrypted to the TUN."""
    sock = sink.sock
    while True:
        await sock.wait_readable()
        receive_ready(device, sink, trio.current_time)


def receive_ready(device: Device, sink: OutputSink, clock: Callable[[], float]) -> None:
    """One drain of what the socket holds now (never waits), handled and flushed."""
    batch = sink.sock.drain()
    now = clock()
    out = sink.out
    out.clear()
    receive = device.receive
    for data, addr in batch:
        try:
            receive(data, plain_address(addr), now, out)
        except Exception:
            sink.counters["wireguard_receive_error"] += 1
            log.exception("wireguard: handling a datagram from %s failed", addr[0])
    written = len(out.packets)
    sink.flush(out)
    after_tun_write = sink.after_tun_write
    if written and after_tun_write is not None:
        after_tun_write(written)  # after the flush: the routes' sends reuse ``out``


class TimerLoop:
    """Runs the device's timers at its next deadline. It sleeps in a cancel scope whose
    deadline ``wake`` pulls earlier when a call moved the device's next deadline.

    With the data path on its own thread (trivpn.dataplane.data_thread) that thread runs
    the timers instead (``tick``, at the deadline it computes after each burst), and
    ``wake`` only tells it (``elsewhere``) that a deadline may have moved."""

    def __init__(self, device: Device) -> None:
        self._device = device
        self._scope: trio.CancelScope | None = None
        self.elsewhere: Callable[[], None] | None = None

    def wake(self) -> None:
        if self.elsewhere is not None:
            self.elsewhere()
            return
        scope = self._scope
        if scope is None:
            return
        deadline = self._device.next_deadline()
        if deadline is not None and deadline < scope.deadline:
            scope.deadline = deadline

    def tick(self, sink: OutputSink, now: float) -> None:
        """The timers due at ``now``, of ``TIMER_SLICE`` peers at most, carried out."""
        out = sink.out
        out.clear()
        self._device.tick(now, out, limit=TIMER_SLICE)
        sink.flush(out)

    async def run(self, sink: OutputSink) -> None:
        device = self._device
        while True:
            deadline = device.next_deadline()
            with trio.CancelScope(deadline=math.inf if deadline is None else deadline) as scope:
                self._scope = scope
                await trio.sleep_forever()
            self._scope = None
            now = trio.current_time()
            self.tick(sink, now)
            deadline = device.next_deadline()
            if deadline is not None and deadline <= now:
                await trio.sleep(0)  # more are due: let the packets waiting go first
