"""The traffic samples behind the admin's chart: bytes per interval turned into bits per
second, rings that forget after the window, counters that restart, and the timer that reads
a front's peers in slices."""

from __future__ import annotations

from collections.abc import Iterator

import attrs
import pytest
import trio
import trio.testing

from trivpn.control.status_socket import SLICE
from trivpn.control.web.traffic import TrafficSamples

A, B = b"a" * 32, b"b" * 32


def test_bits_per_second_each_way() -> None:
    samples = TrafficSamples(interval=10, window=60)
    samples.sample([(A, 100, 1000)], 1000.0)
    assert samples.rates(A) is None  # one sample: no interval yet
    assert samples.series(A) == []
    samples.sample([(A, 1100, 3000)], 1010.0)
    assert samples.rates(A) == (800.0, 1600.0)  # 1000 B and 2000 B over 10 s
    samples.sample([(A, 1100, 3000)], 1020.0)
    assert samples.rates(A) == (0.0, 0.0)
    samples.sample([(A, 1600, 3000)], 1025.0)  # a late or early step: its own span
    assert samples.rates(A) == (800.0, 0.0)
    assert samples.series(A) == [
        (1010.0, 800.0, 1600.0),
        (1020.0, 0.0, 0.0),
        (1025.0, 800.0, 0.0),
    ]


def test_the_window_keeps_the_last_hour_only() -> None:
    samples = TrafficSamples(interval=10, window=30)
    assert samples.slots == 3
    samples.sample([(A, 0, 0)], 0.0)
    for step in range(1, 6):
        samples.sample([(A, 10 * step, 0)], 10.0 * step)  # 10 B a step: 8 bit/s
    assert samples.series(A) == [(30.0, 8.0, 0.0), (40.0, 8.0, 0.0), (50.0, 8.0, 0.0)]


def test_idle_steps_read_as_zero_and_a_ring_goes_after_a_window_idle() -> None:
    samples = TrafficSamples(interval=10, window=30)
    samples.sample([(A, 0, 0), (B, 0, 0)], 0.0)
    samples.sample([(A, 50, 0), (B, 0, 0)], 10.0)
    assert samples._tracks[B].ring is None  # never moved a byte: no ring
    assert samples._tracks[A].ring is not None
    samples.sample([(A, 50, 0), (B, 0, 0)], 20.0)
    samples.sample([(A, 50, 0), (B, 0, 0)], 30.0)
    assert samples.series(A) == [(10.0, 40.0, 0.0), (20.0, 0.0, 0.0), (30.0, 0.0, 0.0)]
    samples.sample([(A, 50, 0), (B, 0, 0)], 40.0)
    assert samples._tracks[A].ring is None  # idle for the whole window: dropped
    assert samples.series(A) == [(20.0, 0.0, 0.0), (30.0, 0.0, 0.0), (40.0, 0.0, 0.0)]
    # a write after a long idle stretch leaves no old bytes behind in the new ring's slots
    samples.sample([(A, 60, 0), (B, 0, 0)], 50.0)
    assert samples.series(A) == [(30.0, 0.0, 0.0), (40.0, 0.0, 0.0), (50.0, 8.0, 0.0)]


def test_skipped_slots_of_a_kept_ring_are_cleared() -> None:
    samples = TrafficSamples(interval=10, window=30)
    samples.sample([(A, 0, 0)], 0.0)
    for step in range(1, 4):
        samples.sample([(A, 10 * step, 10 * step)], 10.0 * step)  # every slot written
    samples.sample([(A, 30, 30)], 40.0)
    samples.sample([(A, 30, 30)], 50.0)
    samples.sample([(A, 40, 30)], 60.0)  # the two idle steps between are zeros, not old bytes
    assert samples.series(A) == [(40.0, 0.0, 0.0), (50.0, 0.0, 0.0), (60.0, 8.0, 0.0)]


def test_a_counter_that_went_down_is_a_new_peer_counting_from_zero() -> None:
    samples = TrafficSamples(interval=10, window=60)
    samples.sample([(A, 5000, 5000)], 0.0)
    samples.sample([(A, 100, 7000)], 10.0)  # rx went down: a new object, both count anew
    assert samples.rates(A) == (80.0, 5600.0)
    samples.sample([(A, 200, 7000)], 20.0)
    assert samples.rates(A) == (80.0, 0.0)


def test_a_peer_missing_from_a_sample_is_forgotten_and_starts_over() -> None:
    samples = TrafficSamples(interval=10, window=60)
    samples.sample([(A, 0, 0), (B, 0, 0)], 0.0)
    samples.sample([(A, 10, 0), (B, 10, 0)], 10.0)
    samples.sample([(A, 20, 0)], 20.0)
    assert samples.rates(B) is None
    assert B not in samples._tracks
    assert samples.series(B) == [(10.0, 0.0, 0.0), (20.0, 0.0, 0.0)]  # unknown: zeros
    samples.sample([(A, 20, 0), (B, 500, 0)], 30.0)
    assert samples.rates(B) is None  # back, but seen once: its first counters only
    samples.sample([(A, 20, 0), (B, 510, 0)], 40.0)
    assert samples.rates(B) == (8.0, 0.0)


def test_a_clock_set_back_takes_the_nominal_interval() -> None:
    samples = TrafficSamples(interval=10, window=60)
    samples.sample([(A, 0, 0)], 1000.0)
    samples.sample([(A, 100, 0)], 900.0)
    assert samples.rates(A) == (80.0, 0.0)


def test_bad_intervals_are_refused() -> None:
    with pytest.raises(ValueError):
        TrafficSamples(interval=0)
    with pytest.raises(ValueError):
        TrafficSamples(interval=10, window=5)


def test_default_window_is_an_hour_of_ten_second_steps() -> None:
    samples = TrafficSamples()
    assert (samples.interval, samples.slots) == (10.0, 360)
    samples.sample([(A, 0, 0)], 0.0)
    samples.sample([(A, 1, 1)], 10.0)
    assert len(samples._tracks[A].ring or ()) == 2 * 361
    assert samples._tracks[A].ring.itemsize == 4  # type: ignore[union-attr]


@attrs.define
class FakePeer:
    public_key: bytes
    rx_bytes: int = 0
    tx_bytes: int = 0


@attrs.define
class FakeFront:
    peers: list[FakePeer]
    reads: int = 0

    @property
    def device(self) -> list[FakePeer]:
        self.reads += 1
        return list(self.peers)


async def test_run_samples_the_front_every_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    samples = TrafficSamples(interval=10, window=60)
    peer = FakePeer(A)
    front = FakeFront([peer])
    current: list[FakeFront | None] = [None]  # no front yet: a step with no peers
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: samples.run(
                lambda: current[0], wallclock=trio.current_time, task_status=task_status
            )
        )
        await trio.sleep(1)
        current[0] = front
        await trio.sleep(10)  # t=10: the first counters
        peer.rx_bytes, peer.tx_bytes = 1000, 250
        await trio.sleep(10)  # t=20
        assert samples.rates(A) == (800.0, 200.0)
        assert front.reads == 2
        assert [t for t, _, _ in samples.series(A)] == [10.0, 20.0]
        nursery.cancel_scope.cancel()


async def test_run_reads_thousands_of_peers_in_slices(
    autojump_clock: trio.testing.MockClock,
) -> None:
    peers = [FakePeer(i.to_bytes(32, "big"), rx_bytes=i) for i in range(3 * SLICE + 7)]
    samples = TrafficSamples(interval=10, window=60)
    turns = 0  # of another task, as the walk saw them peer by peer
    seen: list[int] = []
    done = False

    class SlowFront:
        @property
        def device(self) -> Iterator[FakePeer]:
            nonlocal done
            for peer in list(peers):
                seen.append(turns)
                yield peer
            done = True

    async def other() -> None:
        nonlocal turns
        while not done:
            turns += 1
            await trio.sleep(0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other)
        await trio.sleep(0)
        await nursery.start(
            lambda task_status: samples.run(
                lambda: SlowFront(), wallclock=trio.current_time, task_status=task_status
            )
        )
        await trio.sleep(5)
        assert len(seen) == len(peers)
        # the other task ran between the slices: once a checkpoint, before or after the walk
        # goes on (trio picks the order), so at least once per checkpoint but the last one
        assert seen[-1] - seen[0] >= 2
        assert seen == sorted(seen)
        assert seen[SLICE - 1] == seen[0]  # but not within one
        assert len(samples._tracks) == len(peers)
        for peer in peers:
            peer.rx_bytes += 10
        await trio.sleep(10)
        assert samples.rates(peers[-1].public_key) == (8.0, 0.0)
        nursery.cancel_scope.cancel()
