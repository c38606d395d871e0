"""The TUN reader: every packet the kernel routes into the TUN goes to the owner of its
destination in the route table (a WireGuard peer, a ToyVPN session)."""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from typing import Protocol

import trio

from trivpn.dataplane.router import RouteOwner, Router

log = logging.getLogger("trivpn")

TUN_BATCH = 128
# A write of this many packets or fewer (a ping, a request) is followed by a TUN read.
FEW_WRITTEN = 2


class TunSource(Protocol):
    """trivpn.net.tun.Tun as the reader uses it."""

    @property
    def fd(self) -> int: ...

    def read_batch(self, max_packets: int = ...) -> list[bytes]: ...


class TunReader:
    """Drains the TUN in batches. Consecutive packets for one owner go to it as one run, so
    that a bulk transfer leaves in few (GSO) sends.

    A front that wrote a few packets to the TUN tells ``tun_written``: the kernel forwards a
    written packet within the write, so a reply from a host on this machine is often waiting
    already, and taking it at once spares it a second task's wake-up (tools/bench_wake: about
    125 us when cold). After a bigger batch (bulk upload) the reader's own turn comes soon
    and finds more ACKs to send together. Every caller runs on the trio thread without
    awaiting in between, so they never interleave."""

    def __init__(
        self,
        tun: TunSource,
        router: Router[RouteOwner],
        counters: collections.Counter[str],
        *,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        """``clock`` is trio's; a reader on the data thread is given one it may call there."""
        self._tun = tun
        self._lookup = router.lookup_packet
        self._counters = counters
        self._clock = clock

    async def run(self) -> None:
        fd = self._tun.fd
        while True:
            await trio.lowlevel.wait_readable(fd)
            self.forward_ready()

    def tun_written(self, packets: int) -> None:
        """A front wrote ``packets`` to the TUN: after a few, forward what waits now."""
        if packets <= FEW_WRITTEN:
            self.forward_ready()

    def forward_ready(self) -> None:
        """Reads one batch of what the TUN holds now (never waits) and sends it on."""
        batch = self._tun.read_batch(TUN_BATCH)
        if not batch:
            return
        if len(batch) > 1:
            batch = _urgent_first(batch)
        lookup = self._lookup
        now = self._clock()
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


def _urgent_first(batch: list[bytes]) -> list[bytes]:
    """The batch with what is not TCP (a ping, DNS) ahead of the TCP packets, each kind in
    its order: no flow is reordered (a flow is TCP or not), and a ping's reply is not sent
    behind a bulk download's burst, whose tail is what a client's full socket drops."""
    # the protocol byte: IPv4's at 9, IPv6's next header at 6 (a TCP segment behind IPv6
    # extension headers counts as urgent: harmless, it only moves ahead of other flows)
    tcp = [len(p) >= 20 and p[9 if p[0] < 0x60 else 6] == 6 for p in batch]
    if all(tcp) or not any(tcp):
        return batch
    pairs = list(zip(batch, tcp, strict=True))
    return [p for p, t in pairs if not t] + [p for p, t in pairs if t]
