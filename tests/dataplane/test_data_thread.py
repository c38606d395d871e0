"""trivpn.dataplane.data_thread: handlers run on one OS thread, never while a trio task runs;
what they hand to trio runs on the trio thread; a replaced socket is watched; cancelling the
task stops the thread.

The thread waits on real sockets (a local socketpair), so these tests wait for it through
trio events with a generous real-clock bound, never by sleeping."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator

import pytest
import trio

from trivpn.dataplane.data_thread import DataThread, enabled

BOUND = 20.0  # seconds: only reached when the thread never answers


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.setblocking(False)
    yield a, b
    a.close()
    b.close()


def drain(sock: socket.socket) -> list[bytes]:
    got: list[bytes] = []
    while True:
        try:
            got.append(sock.recv(100))
        except BlockingIOError:
            return got


def data_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "trivpn-data"]


async def serve(thread: DataThread, body: Callable[[], object]) -> None:
    """Runs ``thread`` while ``body`` (async) runs, then stops it."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(thread.run)
        with trio.fail_after(BOUND):
            await body()  # type: ignore[misc]
        nursery.cancel_scope.cancel()


def test_the_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    """The thread by default; "0" alone restores trio's tasks."""
    monkeypatch.delenv("TRIVPN_DATA_THREAD", raising=False)
    assert enabled()
    monkeypatch.setenv("TRIVPN_DATA_THREAD", "0")
    assert not enabled()
    for value in ("1", "", "yes", "off"):
        monkeypatch.setenv("TRIVPN_DATA_THREAD", value)
        assert enabled()


async def test_handlers_run_off_trio_and_hand_back_to_it(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    thread = DataThread()
    trio_thread = threading.get_ident()
    handled_on: list[int] = []
    handed_on: list[int] = []
    done = trio.Event()

    def back(n: int) -> None:
        handed_on.append(threading.get_ident())
        if n == 3:
            done.set()

    received: list[bytes] = []

    def ready() -> None:
        handled_on.append(threading.get_ident())
        received.extend(drain(a))
        thread.handoff(back, len(received))

    thread.watch("socket", lambda: a, ready)

    async def body() -> None:
        for data in (b"1", b"2", b"3"):
            b.send(data)
        await done.wait()

    await serve(thread, body)
    assert received == [b"1", b"2", b"3"]
    assert handled_on and trio_thread not in handled_on
    assert set(handed_on) == {trio_thread}
    assert data_threads() == []  # cancelled: the thread has ended


async def test_handlers_never_run_while_a_trio_task_runs(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    thread = DataThread()
    inside_trio = False
    overlaps = 0
    handled = 0
    done = trio.Event()
    count = 200

    def ready() -> None:
        nonlocal overlaps, handled
        if inside_trio:
            overlaps += 1
        handled += len(drain(a))
        if handled >= count:
            thread.handoff(done.set)

    thread.watch("socket", lambda: a, ready)

    async def body() -> None:
        nonlocal inside_trio
        for i in range(count):
            inside_trio = True
            b.send(b"x")
            sum(range(20_000))  # a task's work without a checkpoint: the GIL switches
            inside_trio = False
            if i % 10 == 0:
                await trio.lowlevel.checkpoint()
        await done.wait()

    await serve(thread, body)
    assert handled == count
    assert overlaps == 0


async def test_a_replaced_socket_is_watched() -> None:
    first, first_peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    second, second_peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    current = [first]
    got: list[bytes] = []
    events = [trio.Event(), trio.Event()]
    thread = DataThread()

    def ready() -> None:
        got.extend(drain(current[0]))
        thread.handoff(events[len(got) - 1].set)

    thread.watch("socket", lambda: current[0], ready)

    async def body() -> None:
        first_peer.send(b"old")
        await events[0].wait()
        # as a rebind does it: on the trio thread, the old socket replaced, then closed
        current[0] = second
        first.close()
        second_peer.send(b"new")
        await events[1].wait()

    try:
        for s in (first, second):
            s.setblocking(False)
        await serve(thread, body)
    finally:
        for s in (first, first_peer, second, second_peer):
            s.close()
    assert got == [b"old", b"new"]


async def test_a_failing_handler_is_counted_and_the_thread_goes_on(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    thread = DataThread()
    done = trio.Event()
    calls = 0

    def ready() -> None:
        nonlocal calls
        calls += 1
        if drain(a) == [b"bad"]:
            raise ValueError("a bad datagram")
        thread.handoff(done.set)

    thread.watch("socket", lambda: a, ready)

    async def body() -> None:
        b.send(b"bad")
        while thread.errors == 0:
            await trio.lowlevel.checkpoint()
        b.send(b"good")
        await done.wait()

    await serve(thread, body)
    assert thread.errors == 1
    assert calls == 2


async def test_timers_run_on_the_thread_when_due() -> None:
    thread = DataThread()
    due: list[float | None] = [None]
    ticks: list[tuple[float, int]] = []
    done = trio.Event()

    def tick(now: float) -> None:
        ticks.append((now, threading.get_ident()))
        due[0] = None  # done: nothing more due
        thread.handoff(done.set)

    thread.run_timers(lambda: due[0], tick)

    async def body() -> None:
        await trio.lowlevel.checkpoint()
        assert ticks == []  # nothing due yet
        when[0] = due[0] = thread.clock() + 0.05  # as a `wg set` does: on the trio thread,
        thread.wake()  # then the thread is told
        await done.wait()

    when: list[float] = [0.0]
    await serve(thread, body)
    assert len(ticks) == 1
    at, on = ticks[0]
    assert at >= when[0]  # not before it was due
    assert on != threading.get_ident()


class AlwaysReadable:
    """A source that stays readable (a flood) for ``limit`` bursts; each burst handles a few
    datagrams, with the syscalls that let the GIL go as a real one does."""

    def __init__(self, thread: DataThread, limit: int) -> None:
        self.fd = os.eventfd(1, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self.thread, self.limit = thread, limit
        thread.watch("always readable", lambda: self.fd, self.ready)

    def ready(self) -> None:
        for _ in range(4):
            os.eventfd_read(self.fd)
            sum(range(200))
            if self.thread.bursts < self.limit:
                os.eventfd_write(self.fd, 1)


async def test_a_thread_kept_busy_lets_trio_take_the_lock_after_a_burst() -> None:
    """The thread, bursting back to back, must not keep trio's run loop (every task of the
    control plane) from the lock: a plain lock goes to whoever asks first after a release,
    which is the releaser itself a few µs later, before the woken waiter runs."""
    thread = DataThread()
    limit = 100_000  # the flood ends there: a starved trio fails, not hangs
    source = AlwaysReadable(thread, limit)
    woke_at = [0]

    class Woken(trio.abc.Instrument):
        # added before the DataThread's own, so called before it waits for the lock
        def after_io_wait(self, timeout: float) -> None:
            woke_at[0] = thread.bursts

    waits: list[int] = []

    async def body() -> None:
        while thread.bursts < 5:
            await trio.sleep(0.001)
        for _ in range(50):
            await trio.sleep(0.001)  # trio's run loop waits for I/O: the thread has the lock
            waits.append(thread.bursts - woke_at[0])  # bursts while trio wanted it back

    trio.lowlevel.add_instrument(Woken())
    try:
        await serve(thread, body)
    finally:
        os.close(source.fd)
    assert thread.bursts < limit  # flooded to the end
    assert max(waits) <= 2, waits  # one, or two if the GIL switched in between


async def test_a_long_trio_job_in_slices_lets_the_thread_burst_between_them() -> None:
    """The other way: a trio job in slices (a status of 10,000 peers) that a plain lock
    would let hold the lock to its end while the data path waits."""
    thread = DataThread()
    source = AlwaysReadable(thread, 1_000_000)
    slices = 100
    during = [0]

    async def body() -> None:
        while thread.bursts < 5:
            await trio.sleep(0.001)
        before = thread.bursts
        for _ in range(slices):
            sum(range(20_000))  # a slice's work
            await trio.lowlevel.checkpoint()
        during[0] = thread.bursts - before

    try:
        await serve(thread, body)
    finally:
        os.close(source.fd)
    assert during[0] >= slices // 2  # a plain lock: 0


async def test_a_trio_job_that_lets_the_gil_go_often_does_not_starve_the_thread(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """A trio job whose slices make syscalls (a scrape's answer, a status sent in pieces)
    lets the GIL go every few µs and takes it back before the woken data thread runs:
    CPython restarts that thread's 5 ms wait for a forced switch each time, so the thread,
    its datagram ready, could wait for the GIL to the job's end (measured: pings of 80 ms
    during five metrics scrapes of 1,000 peers)."""
    a, b = pair
    thread = DataThread()
    done = [0]  # slices of the job done
    lags: list[int] = []  # per datagram: slices done from its send to its handling
    sent_at: list[int] = []

    def ready() -> None:
        for _ in drain(a):
            lags.append(done[0] - sent_at[len(lags)])

    thread.watch("socket", lambda: a, ready)

    async def body() -> None:
        while thread.bursts == 0:  # the thread is up and waiting in epoll
            await trio.sleep(0.001)
        for i in range(200):
            if i % 20 == 0:
                sent_at.append(done[0])
                b.send(b"x")
            for _ in range(10):
                sum(range(2_000))
                os.stat("/")  # a syscall: the GIL let go and taken back at once
            done[0] += 1
            await trio.lowlevel.checkpoint()

    await serve(thread, body)
    assert len(lags) == len(sent_at) == 10
    assert max(lags) <= 1, lags  # trio's next checkpoint (a plain lock: 5-20 and more)
