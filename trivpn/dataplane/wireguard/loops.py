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
    deadline ``wake`` pulls earlier when a call moved the device's next deadline."""

    def __init__(self, device: Device) -> None:
        self._device = device
        self._scope: trio.CancelScope | None = None

    def needs_wake(self) -> bool:
        """Whether the device's next deadline is earlier than the one slept to (read by the
        data thread under the data lock, before it hands ``wake`` to trio)."""
        scope = self._scope
        deadline = self._device.next_deadline()
        return scope is not None and deadline is not None and deadline < scope.deadline

    def wake(self) -> None:
        scope = self._scope
        if scope is None:
            return
        deadline = self._device.next_deadline()
        if deadline is not None and deadline < scope.deadline:
            scope.deadline = deadline

    async def run(self, sink: OutputSink) -> None:
        device = self._device
        out = sink.out
        while True:
            deadline = device.next_deadline()
            with trio.CancelScope(deadline=math.inf if deadline is None else deadline) as scope:
                self._scope = scope
                await trio.sleep_forever()
            self._scope = None
            out.clear()
            now = trio.current_time()
            device.tick(now, out, limit=TIMER_SLICE)
            sink.flush(out)
            deadline = device.next_deadline()
            if deadline is not None and deadline <= now:
                await trio.sleep(0)  # more are due: let the packets waiting go first
