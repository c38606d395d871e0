"""The data path on its own OS thread: the server's default (issue 12), ``TRIVPN_DATA_THREAD=0``
in its environment keeps it on trio's tasks.

One thread blocks in ``epoll_wait`` on the TUN and the UDP sockets and runs the same
per-packet handlers the trio tasks run (drain → front → TUN write; TUN read → route → seal →
send), so a packet costs one cold wake-up of a blocked thread instead of trio's wake path.
It runs the WireGuard device's timers too (at the deadline it computes after each burst), so
that a ping never wakes trio: a timer task on trio would be woken whenever a packet moved the
device's next deadline earlier, which a ping does every time.

Thread safety: one lock, ``DataLock``, guards every object the data path uses (the Device,
the fronts, the router, the sockets, the TUN, the counters). The trio thread holds it
whenever it runs Python: a trio instrument releases it just before trio's run loop waits for
I/O and takes it back right after, so every task (`wg set`, the registry sync, status,
metrics, policy, the ToyVPN session timers) runs under it without knowing. The data thread
takes it for one burst at a time, after ``epoll_wait`` returned. The lock hands over
(``TakeTurns``): whichever thread waits for it gets it next, and trio hands it over whenever
the thread's epoll has work, so trio waits at most one burst and the data path at most one
batch of trio's tasks (a slice of a long job). Per-packet code never calls trio: it gets
trio's clock as a plain callable, and what must reach trio (a new ToyVPN session's task, a
route or quota event) goes through ``handoff``, which uses ``TrioToken.run_sync_soon`` off
the trio thread. A trio-side change that may move a timer earlier (`wg set`, a peer update,
a policy) calls ``wake`` (an eventfd the thread also waits on). Nothing on trio's worker
threads (``trio.to_thread``) touches these objects.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

import trio

log = logging.getLogger("trivpn")

ENV_SWITCH: Final = "TRIVPN_DATA_THREAD"  # "0": the server's data path on trio's tasks
# The longest an idle thread sleeps before it looks whether a source's fd changed (a `wg set
# listen-port` replaces the socket, and wakes the thread at once; this is the fallback).
RESYNC_SECONDS: Final = 0.2
# The longest a releaser waits for the other thread to take the lock it handed over.
HANDOVER_SECONDS: Final = 0.5


def enabled() -> bool:
    """Whether the data path runs on its own thread: unless the environment's ENV_SWITCH is
    "0" (any other value, or none, is the default)."""
    return os.environ.get(ENV_SWITCH) != "0"


class HasFileno(Protocol):
    def fileno(self) -> int: ...


Fd = int | HasFileno
Handoff = Callable[..., None]  # handoff(fn, *args): fn(*args) on the trio thread


class TakeTurns:
    """A lock for two threads that hands over: released while the other one waits for it
    (or with ``hand_over``), the other one has it before the releaser can take it again.

    A plain ``threading.Lock`` goes to whoever asks first after a release, which is the
    releaser itself a few µs later, before the woken waiter runs: the data thread under a
    flood would keep trio from its control plane, and a long trio job done in slices (a
    status of 10,000 peers) would keep the data path waiting to its end. Each holder's own
    stretch stays whole (a burst, a batch of trio tasks); only who goes next changes.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting = False  # the other thread is blocked in acquire (two threads only)
        self._taken = threading.Event()  # cleared by a releaser handing over, set by the taker

    def acquire(self) -> None:
        if not self._lock.acquire(blocking=False):
            self._waiting = True
            try:
                self._lock.acquire()
            finally:  # even if interrupted: a later release must not wait for it
                self._waiting = False
        # Cleared only by a releaser handing over (then it waits for this): the plain test
        # spares each burst Event.set's condition lock (1.1 µs against 0.2 for a Lock, warm).
        if not self._taken.is_set():
            self._taken.set()

    def release(self, *, hand_over: bool = False) -> None:
        """``hand_over``: the caller knows the other thread will ask soon (it may not have
        been able to say so yet: see DataLock); wait until it has the lock."""
        waiting = self._waiting or hand_over
        if waiting:
            self._taken.clear()  # held: the other thread cannot set it before it has it
        self._lock.release()
        if waiting:
            # bounded: a waiter whose acquire raised (an interrupt) never takes it
            self._taken.wait(HANDOVER_SECONDS)

    def __enter__(self) -> None:
        self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class DataLock(trio.abc.Instrument):
    """A trio instrument: the trio thread holds ``lock`` except while waiting for I/O.

    ``data_pending()`` says whether the data thread has work (its epoll is readable): then
    trio hands the lock over rather than only releasing it. The thread cannot say so itself:
    to mark itself waiting it needs the GIL, and a trio job that makes syscalls lets the GIL
    go at each one and takes it back before the woken thread runs, which restarts that
    thread's 5 ms wait for a forced switch each time (CPython's GIL): it could wait to the
    job's end (measured: pings of 80 ms during five metrics scrapes of 1,000 peers).
    """

    def __init__(self, data_pending: Callable[[], bool]) -> None:
        self.lock = TakeTurns()
        self._released = False
        self._data_pending = data_pending

    def before_io_wait(self, timeout: float) -> None:
        self._released = True
        self.lock.release(hand_over=self._data_pending())

    def after_io_wait(self, timeout: float) -> None:
        if self._released:
            self.lock.acquire()
            self._released = False


@dataclass
class _Source:
    name: str
    current: Callable[[], Fd]  # the fd (or socket) of the moment: a rebind replaces it
    ready: Callable[[], object]  # drains what is there now; never blocks
    watched: Fd | None = None
    watched_fd: int = -1


class DataThread:
    """Runs ``watch``ed sources' handlers on one OS thread; ``run`` is the trio task that
    owns the thread (started once every source is watched; cancelling it stops the
    thread)."""

    def __init__(self) -> None:
        self._sources: list[_Source] = []
        self._timers: list[tuple[Callable[[], float | None], Callable[[float], object]]] = []
        self._kick = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._thread_id = -1
        self._token = trio.lowlevel.current_trio_token()
        self._trio_thread = threading.get_ident()
        # trio's clock, readable from any thread (trio.current_time() is not)
        self.clock: Callable[[], float] = trio.lowlevel.current_clock().current_time
        self.errors = 0
        self.bursts = 0  # epoll wake-ups with work, each one hold of the lock
        self.handoffs = 0  # calls handed to trio from the data thread
        self._running = False  # the thread's loop runs: it takes the lock when it has work

    def watch(self, name: str, current: Callable[[], Fd], ready: Callable[[], object]) -> None:
        self._sources.append(_Source(name, current, ready))

    def run_timers(
        self, next_deadline: Callable[[], float | None], tick: Callable[[float], object]
    ) -> None:
        """Run ``tick(now)`` when ``next_deadline()`` is due (asked after every burst, under
        the lock); a trio-side change that may move it earlier calls ``wake``."""
        self._timers.append((next_deadline, tick))

    def wake(self) -> None:
        """A deadline may have moved: the thread recomputes its timeout. Off the data
        thread only (the thread itself recomputes after each burst anyway)."""
        if threading.get_ident() != self._thread_id:
            os.eventfd_write(self._kick, 1)

    def handoff(self, fn: Callable[..., object], *args: object) -> None:
        """``fn(*args)`` on the trio thread: now if called there, else soon."""
        if threading.get_ident() == self._trio_thread:
            fn(*args)
        else:
            self.handoffs += 1
            self._token.run_sync_soon(fn, *args)

    async def run(self) -> None:
        ep = select.epoll()  # the thread's; closed here, after trio stopped looking at it
        ready = select.poll()
        ready.register(ep.fileno(), select.POLLIN)
        self._running = True

        def data_pending() -> bool:
            return self._running and bool(ready.poll(0))

        data_lock = DataLock(data_pending)
        stop = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        died = trio.Event()
        failure: list[BaseException] = []

        def loop() -> None:
            self._thread_id = threading.get_ident()
            try:
                self._loop(ep, data_lock.lock, stop)
            except BaseException as e:
                failure.append(e)
                self._token.run_sync_soon(died.set)
            finally:
                self._running = False  # no more hand-overs to it

        data_lock.lock.acquire()  # this task is running: the trio thread holds it from now
        trio.lowlevel.add_instrument(data_lock)
        thread = threading.Thread(target=loop, name="trivpn-data", daemon=True)
        try:
            thread.start()
            await died.wait()
            raise RuntimeError("the data thread failed") from failure[0]
        finally:
            os.eventfd_write(stop, 1)
            with trio.CancelScope(shield=True):
                # awaiting releases the lock (trio waits for I/O) for the thread's last burst
                await trio.to_thread.run_sync(thread.join)
            log.debug("data thread: %d bursts, %d calls handed to trio", self.bursts, self.handoffs)
            trio.lowlevel.remove_instrument(data_lock)
            data_lock.lock.release()
            ep.close()
            os.close(stop)
            os.close(self._kick)

    def _loop(self, ep: select.epoll, lock: TakeTurns, stop: int) -> None:
        clock, kick = self.clock, self._kick
        ep.register(stop, select.EPOLLIN)
        ep.register(kick, select.EPOLLIN)
        by_fd: dict[int, _Source] = {}
        deadline: float | None = None
        with lock:
            deadline = self._tick(clock())
            self._resync(ep, by_fd)
        while True:
            timeout = RESYNC_SECONDS
            if deadline is not None:
                timeout = max(0.0, min(timeout, deadline - clock()))
            events = ep.poll(timeout)  # blocks without the GIL or the lock
            with lock:
                self.bursts += 1
                for fd, _mask in events:
                    if fd == stop:
                        # said under the lock: trio, which takes it next, hands none over
                        self._running = False
                        return
                    if fd == kick:
                        os.eventfd_read(kick)
                        continue
                    source = by_fd.get(fd)
                    if source is not None:
                        self._ready(source)
                deadline = self._tick(clock())
                self._resync(ep, by_fd)  # under the lock: a rebind is never half done

    def _tick(self, now: float) -> float | None:
        """The timers due at ``now`` run; the earliest deadline after them."""
        earliest: float | None = None
        for next_deadline, tick in self._timers:
            due = next_deadline()
            if due is not None and due <= now:
                try:
                    tick(now)
                except Exception:
                    self.errors += 1
                    log.exception("data thread: running the timers failed")
                due = next_deadline()
            if due is not None and (earliest is None or due < earliest):
                earliest = due
        return earliest

    def _resync(self, ep: select.epoll, by_fd: dict[int, _Source]) -> None:
        """Watch each source's fd of the moment (a rebound socket's new one)."""
        for source in self._sources:
            current = source.current()
            if current == source.watched:
                continue
            if source.watched is not None:
                by_fd.pop(source.watched_fd, None)
                try:
                    ep.unregister(source.watched_fd)
                except OSError as e:  # closed: epoll forgot it already
                    if e.errno not in (errno.EBADF, errno.ENOENT):
                        raise
            fd = _fileno(current)
            ep.register(fd, select.EPOLLIN)
            by_fd[fd] = source
            source.watched, source.watched_fd = current, fd

    def _ready(self, source: _Source) -> None:
        try:
            source.ready()
        except Exception:
            self.errors += 1
            log.exception("data thread: handling %s failed", source.name)


def _fileno(fd: Fd) -> int:
    return fd if isinstance(fd, int) else fd.fileno()
