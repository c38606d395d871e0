"""trivpn.dataplane.data_thread: handlers run on one OS thread, never while a trio task runs;
what they hand to trio runs on the trio thread; a replaced socket is watched; cancelling the
task stops the thread.

The thread waits on real sockets (a local socketpair), so these tests wait for it through
trio events with a generous real-clock bound, never by sleeping."""

from __future__ import annotations

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
    monkeypatch.delenv("TRIVPN_DATA_THREAD", raising=False)
    assert not enabled()
    monkeypatch.setenv("TRIVPN_DATA_THREAD", "0")
    assert not enabled()
    monkeypatch.setenv("TRIVPN_DATA_THREAD", "1")
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
