"""Each peer's throughput over the last hour, sampled from its byte counters (the admin's chart).

Every ``interval`` seconds :meth:`TrafficSamples.sample` takes each peer's cumulative counters
(bytes received from it, bytes sent to it) and keeps the bytes of that interval. The history is
a ring per peer: one ``array('f')`` of rx, tx pairs, a slot per interval of the window, so it
costs the same whatever the traffic. Only a peer that moved bytes within the window keeps a
ring; the others keep only their last counters. At the default 10 s over an hour a ring is
361 slots x 2 x 4 bytes = 2.8 KiB, about 3 KiB a peer with its bookkeeping: 10,000 peers that
all moved traffic in the last hour hold about 30 MiB, idle ones about 200 bytes each.

The times of the samples are shared by all peers (one ring of wall-clock times and
durations), and a slot that a peer's ring did not write since is read as zero, so an idle
interval costs nothing. Sans-IO but for :meth:`TrafficSamples.run`, which samples a front's
peers on a timer, a slice at a time.
"""

from __future__ import annotations

import math
import time
from array import array
from collections.abc import Callable, Iterable
from typing import Final, Protocol

import trio

from trivpn.control.status_socket import SLICE

INTERVAL: Final = 10.0  # seconds between two samples
WINDOW: Final = 3600.0  # seconds of history kept


class CountedPeer(Protocol):
    """What sampling reads of a peer (a WireGuard ``Peer``)."""

    @property
    def public_key(self) -> bytes: ...
    @property
    def rx_bytes(self) -> int: ...
    @property
    def tx_bytes(self) -> int: ...


class PeerSource(Protocol):
    """What sampling reads of the front: its device, an iterable of peers (a copy)."""

    @property
    def device(self) -> Iterable[CountedPeer]: ...


class _Track:
    """One peer: its last counters, the steps it was first and last seen at, and its ring
    (None while it moved no bytes within the window), last written at step ``written``."""

    __slots__ = ("ring", "rx", "seen", "since", "tx", "written")

    def __init__(self, rx: int, tx: int, step: int) -> None:
        self.rx = rx
        self.tx = tx
        self.since = step
        self.seen = step
        self.ring: array[float] | None = None
        self.written = -1


class TrafficSamples:
    """The bytes each way per interval of each peer (by public key) over the last hour."""

    def __init__(self, interval: float = INTERVAL, window: float = WINDOW) -> None:
        if interval <= 0 or window < interval:
            raise ValueError("the interval must be positive and the window at least one")
        self.interval = interval
        self.slots = math.ceil(window / interval)  # the steps a series shows
        # one slot more in every ring: the step being sampled (a slice at a time) writes
        # there while readers still see the window of the previous steps intact
        self._size = self.slots + 1
        self._tracks: dict[bytes, _Track] = {}
        self._times = array("d", bytes(8 * self._size))  # each step's wall clock
        self._durations = array("d", bytes(8 * self._size))  # and the seconds it covers
        self._step = -1  # the latest complete step; step 0 only sets the first counters

    # -- sampling ----------------------------------------------------------------------------

    def sample(self, counters: Iterable[tuple[bytes, int, int]], wallclock: float) -> None:
        """One step: ``(public_key, rx_bytes, tx_bytes)`` of every peer, cumulative, at
        ``wallclock``. A peer missing from it is forgotten."""
        step = self._begin(wallclock)
        for public_key, rx, tx in counters:
            self._record(step, public_key, rx, tx)
        self._end(step)

    def _begin(self, wallclock: float) -> int:
        step = self._step + 1
        slot = step % self._size
        previous = self._times[self._step % self._size] if self._step >= 0 else wallclock
        # a wall clock set back would give a negative or zero span: take the nominal one
        span = wallclock - previous
        self._times[slot] = wallclock
        self._durations[slot] = span if span > 0 else self.interval
        return step

    def _record(self, step: int, public_key: bytes, rx: int, tx: int) -> None:
        track = self._tracks.get(public_key)
        if track is None:
            self._tracks[public_key] = _Track(rx, tx, step)
            return
        if rx < track.rx or tx < track.tx:
            # a new peer object under the same key (a reload): its counters began at zero
            # after the previous step, so all it counted belongs to this interval
            rx_delta, tx_delta = rx, tx
        else:
            rx_delta, tx_delta = rx - track.rx, tx - track.tx
        track.rx, track.tx, track.seen = rx, tx, step
        if rx_delta or tx_delta:
            self._write(track, step, rx_delta, tx_delta)

    def _write(self, track: _Track, step: int, rx: int, tx: int) -> None:
        n = self._size
        ring = track.ring
        if ring is None:
            ring = track.ring = array("f", bytes(8 * n))
        else:  # the steps since its last write moved nothing
            for skipped in range(track.written + 1, min(step, track.written + 1 + n)):
                ring[2 * (skipped % n)] = ring[2 * (skipped % n) + 1] = 0.0
        slot = step % n
        ring[2 * slot], ring[2 * slot + 1] = rx, tx
        track.written = step

    def _end(self, step: int) -> None:
        self._step = step
        stale = step - self.slots  # a ring last written at or before it holds only zeros now
        gone = []
        for public_key, track in self._tracks.items():
            if track.seen != step:
                gone.append(public_key)
            elif track.ring is not None and track.written <= stale:
                track.ring = None
        for public_key in gone:
            del self._tracks[public_key]

    # -- reading -----------------------------------------------------------------------------

    def series(self, public_key: bytes) -> list[tuple[float, float, float]]:
        """``(time, rx_bps, tx_bps)`` per interval of the window, oldest first: the time is
        the interval's end; zeros where the peer moved nothing (or was not there)."""
        track = self._tracks.get(public_key)
        first = max(1, self._step - self.slots + 1)
        steps = range(first, self._step + 1)
        return [(self._times[s % self._size], *self._bps(track, s)) for s in steps]

    def rates(self, public_key: bytes) -> tuple[float, float] | None:
        """``(rx_bps, tx_bps)`` over the latest interval; None until the peer was in two
        samples in a row (the latest one and the one before)."""
        track = self._tracks.get(public_key)
        if track is None or track.since >= self._step:
            return None
        return self._bps(track, self._step)

    def _bps(self, track: _Track | None, step: int) -> tuple[float, float]:
        if track is None or track.ring is None or step > track.written:
            return 0.0, 0.0
        slot = step % self._size
        scale = 8 / self._durations[slot]
        return track.ring[2 * slot] * scale, track.ring[2 * slot + 1] * scale

    # -- the timer ---------------------------------------------------------------------------

    async def run(
        self,
        front_getter: Callable[[], PeerSource | None],
        *,
        wallclock: Callable[[], float] = time.time,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Sample the front's peers every interval until cancelled, reading them in slices
        (a checkpoint every SLICE peers) so that thousands of peers never hold the loop.
        The front is asked for at each step: a reload or a restart may replace it."""
        task_status.started()
        deadline = trio.current_time()
        while True:
            front = front_getter()
            step = self._begin(wallclock())
            if front is not None:
                for count, peer in enumerate(front.device, 1):
                    self._record(step, peer.public_key, peer.rx_bytes, peer.tx_bytes)
                    if count % SLICE == 0:
                        await trio.sleep(0)
            self._end(step)
            deadline = max(deadline + self.interval, trio.current_time())
            await trio.sleep_until(deadline)
