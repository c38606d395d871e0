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


async def tun_reader(
    tun: TunSource, router: Router[RouteOwner], counters: collections.Counter[str]
) -> None:
    """Drain the TUN in batches. Consecutive packets for one owner go to it as one run, so
    that a bulk transfer leaves in few (GSO) sends."""
    lookup = router.lookup_packet
    while True:
        await trio.lowlevel.wait_readable(tun.fd)
        batch = tun.read_batch(TUN_BATCH)
        now = trio.current_time()
        run: list[bytes] = []
        run_owner: RouteOwner | None = None
        for packet in batch:
            owner = lookup(packet)
            if owner is None:
                counters["tun_no_route"] += 1
                continue
            if owner is not run_owner:
                if run_owner is not None:
                    _send_run(run_owner, run, now, counters)
                run_owner, run = owner, []
            run.append(packet)
        if run_owner is not None:
            _send_run(run_owner, run, now, counters)


def _send_run(
    owner: RouteOwner, run: list[bytes], now: float, counters: collections.Counter[str]
) -> None:
    try:
        owner.send(run, now)
    except Exception:
        counters["send_error"] += 1
        log.exception("sending packets to %r failed", owner)
