"""Supervised control-plane tasks: restarted with a backoff, never fatal to their nursery."""

from __future__ import annotations

import errno
import itertools
from typing import Any

import pytest
import trio
import trio.testing

from trivpn.control.supervise import Backoff, describe, supervise


class Script:
    """A task whose runs follow ``plan``: "fail" (after started), "fail early" (before),
    "return", or "serve" (until cancelled). ``starts`` holds when each run began."""

    def __init__(self, *plan: str, value: object = None) -> None:
        self.plan = list(plan)
        self.value = value
        self.starts: list[float] = []

    async def __call__(self, *, task_status: trio.TaskStatus[Any]) -> None:
        self.starts.append(trio.current_time())
        step = self.plan.pop(0) if self.plan else "serve"
        await trio.lowlevel.checkpoint()
        if step == "fail early":
            raise OSError(errno.EADDRINUSE, f"address in use (run {len(self.starts)})")
        task_status.started(self.value)
        if step == "fail":
            raise RuntimeError(f"broken (run {len(self.starts)})")
        if step == "return":
            return
        await trio.sleep_forever()


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]


async def test_a_task_that_fails_twice_is_restarted_with_the_backoff(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    task = Script("fail", "fail", "serve", value="ready")
    async with trio.open_nursery() as nursery:
        assert await nursery.start(supervise, "t", task) == "ready"
        start = trio.current_time()
        await trio.sleep(100)
        assert [t - start for t in task.starts] == pytest.approx([0, 0.5, 1.5])
        nursery.cancel_scope.cancel()
    assert errors(caplog) == [
        "t: failed (RuntimeError: broken (run 1)); restarting in 0.5 s",
        "t: failed (RuntimeError: broken (run 2)); restarting in 1 s",
    ]


async def test_a_failure_never_reaches_the_parent_nursery(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    task = Script(*["fail"] * 1000)
    sibling_ran = 0.0
    async with trio.open_nursery() as nursery:
        await nursery.start(supervise, "t", task)

        async def sibling() -> None:
            nonlocal sibling_ran
            while True:
                await trio.sleep(1)
                sibling_ran += 1

        nursery.start_soon(sibling)
        await trio.sleep(200.5)
        nursery.cancel_scope.cancel()
    assert sibling_ran == 200  # the sibling (the data plane) ran on throughout
    # 0.5, 1, 2, ... 16 s apart to the 7th run (at 31.5 s), then 30 s apart to 181.5 s
    assert gaps(task.starts) == pytest.approx([0.5, 1, 2, 4, 8, 16, 30, 30, 30, 30, 30])
    assert len(errors(caplog)) == len(task.starts)


async def test_a_failure_after_a_healthy_run_waits_the_first_pause_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    runs: list[float] = []

    async def fails_late(*, task_status: trio.TaskStatus[None]) -> None:
        runs.append(trio.current_time())
        task_status.started()
        await trio.sleep([0, 0, 0, 60, 0][len(runs) - 1] if len(runs) <= 5 else 1e9)
        raise RuntimeError("late")

    async with trio.open_nursery() as nursery:
        await nursery.start(supervise, "t", fails_late)
        await trio.sleep(500)
        nursery.cancel_scope.cancel()
    # pauses 0.5, 1, 2; then a 60 s run: the pause is 0.5 again, then doubles on
    assert gaps(runs) == pytest.approx([0.5, 1, 2, 60.5, 1])


def test_backoff_doubles_to_its_bound_and_resets_after_a_healthy_run() -> None:
    backoff = Backoff(first=0.5, most=30, healthy=60)
    pauses: list[float] = []
    pause = None
    for _ in range(9):
        pause = backoff.pause(pause, ran=1)
        pauses.append(pause)
    assert pauses == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    assert backoff.pause(30, ran=60) == 0.5
    assert backoff.pause(30, ran=59.9) == 30


async def test_cancellation_ends_it_while_running_and_while_pausing(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    task = Script("serve")
    with trio.move_on_after(10) as scope:
        await supervise("t", task)
    assert scope.cancelled_caught and len(task.starts) == 1 and errors(caplog) == []

    task = Script("fail", "serve")
    with trio.move_on_after(0.2) as scope:  # cancelled in the 0.5 s pause
        await supervise("t", task)
    assert scope.cancelled_caught and len(task.starts) == 1


async def test_a_failure_before_the_first_start_is_the_callers(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    task = Script("fail early")
    async with trio.open_nursery() as nursery:
        with pytest.raises(OSError, match=r"address in use \(run 1\)"):  # as it was raised
            await nursery.start(supervise, "t", task)
    assert len(task.starts) == 1 and errors(caplog) == []


async def test_a_restart_that_fails_to_start_is_retried(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    task = Script("fail", "fail early", "serve")
    async with trio.open_nursery() as nursery:
        await nursery.start(supervise, "t", task)
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    assert len(task.starts) == 3
    assert errors(caplog)[1] == (
        "t: failed (OSError: [Errno 98] address in use (run 2)); restarting in 1 s"
    )


async def test_a_task_that_returns_has_ended(autojump_clock: trio.testing.MockClock) -> None:
    task = Script("return")
    async with trio.open_nursery() as nursery:
        await nursery.start(supervise, "t", task)
    assert len(task.starts) == 1


async def test_a_failure_while_being_cancelled_is_logged_not_raised(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async def fails_on_the_way_out(*, task_status: trio.TaskStatus[None]) -> None:
        async def cleanup_that_fails() -> None:
            try:
                await trio.sleep_forever()
            except trio.Cancelled:
                raise RuntimeError("cleanup failed") from None

        async with trio.open_nursery() as inner:
            inner.start_soon(cleanup_that_fails)
            task_status.started()
            await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        await nursery.start(supervise, "t", fails_on_the_way_out)
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert errors(caplog) == ["t: failed while stopping (RuntimeError: cleanup failed)"]


def test_describe_names_each_error_of_a_group() -> None:
    group = ExceptionGroup(
        "", [OSError(24, "Too many open files"), ExceptionGroup("", [KeyError()])]
    )
    assert describe(group) == "OSError: [Errno 24] Too many open files; KeyError"
