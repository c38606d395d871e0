"""The TUN reader: every packet the kernel routes into the TUN goes to the owner of its
destination in the route table (a WireGuard peer, a ToyVPN session)."""

from __future__ import annotations

import collections
import logging
from typing import Protocol

import trio

from trivpn.dataplane.router import RouteOwner, Router

log = logging.getLogger("trivpn")

TUN_BATCH = 128


class TunSource(Protocol):
    """trivpn.net.tun.Tun as the reader uses it."""

    @property
    def fd(self) -> int: ...

    def read_batch(self, max_packets: int = ...) -> list[bytes]: ...


class TunReader:
    """Drains the TUN in batches. Consecutive packets for one owner go to it as one run, so
    that a bulk transfer leaves in few (GSO) sends.

    ``forward_ready`` is also called by the fronts right after they wrote to the TUN: the
    kernel forwards a written packet within the write, so a reply from a host on this
    machine (or a TCP ACK) is often already waiting, and taking it then saves a ping a
    round through trio's scheduler (tools/bench: about 100-200 us of its RTT). Both callers
    run on the trio thread without awaiting in between, so they never interleave."""

    def __init__(
        self, tun: TunSource, router: Router[RouteOwner], counters: collections.Counter[str]
    ) -> None:
        self._tun = tun
        self._lookup = router.lookup_packet
        self._counters = counters

    async def run(self) -> None:
        fd = self._tun.fd
        while True:
            await trio.lowlevel.wait_readable(fd)
            self.forward_ready()

    def forward_ready(self) -> None:
        """Reads one batch of what the TUN holds now (never waits) and sends it on."""
        batch = self._tun.read_batch(TUN_BATCH)
        if not batch:
            return
        lookup = self._lookup
        now = trio.current_time()
        run: list[bytes] = []
        run_owner: RouteOwner | None = None
        for packet in batch:
            owner = lookup(packet)
            if owner is None:
                self._counters["tun_no_route"] += 1
                continue
            if owner is not run_owner:
                if run_owner is not None:
                    self._send_run(run_owner, run, now)
                run_owner, run = owner, []
            run.append(packet)
        if run_owner is not None:
            self._send_run(run_owner, run, now)

    def _send_run(self, owner: RouteOwner, run: list[bytes], now: float) -> None:
        try:
            owner.send(run, now)
        except Exception:
            self._counters["send_error"] += 1
            log.exception("sending packets to %r failed", owner)
