"""Supervision of the control-plane tasks: a failed one is logged and restarted, never fatal.

The status and UAPI sockets and the metrics endpoint serve operators, not traffic: a bug or a
shortage that ends one of them must not end the nursery the data plane lives in.
:func:`supervise` runs such a task; when it raises, one error line names the task and the
exception, and the task starts again after a pause that doubles from failure to failure, up
to a bound, and is back to the first after a stretch of good running. Cancellation ends it.

The first start keeps the task's own contract: its ``task_status.started`` is passed on, and a
failure before it (a port in use) is raised to the caller as it would be unsupervised, so that
a server that cannot start says so at once. A task that returns has ended by its own choice
(its socket belongs to another process) and is not restarted.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any, Protocol

import attrs
import trio

log = logging.getLogger("trivpn")


class Task(Protocol):
    """A task for ``nursery.start``: it calls ``task_status.started()`` once it serves."""

    def __call__(self, *, task_status: trio.TaskStatus[Any]) -> Awaitable[None]: ...


@attrs.frozen
class Backoff:
    """The pause before a restart: ``first``, doubling to ``most``; a run of ``healthy``
    seconds or more counts as recovered, and its failure waits ``first`` again."""

    first: float = 0.5
    most: float = 30.0
    healthy: float = 60.0

    def pause(self, previous: float | None, ran: float) -> float:
        if previous is None or ran >= self.healthy:
            return self.first
        return min(previous * 2, self.most)


class _FirstStart:
    """The caller's task status, for the first run only: a restart's ``started`` is ours."""

    def __init__(self, outer: trio.TaskStatus[Any]) -> None:
        self._outer = outer
        self.done = False

    def started(self, value: Any = None) -> None:
        if not self.done:
            self.done = True
            self._outer.started(value)


async def supervise(
    name: str,
    task: Task,
    *,
    backoff: Backoff = Backoff(),
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``task`` until it returns or this is cancelled, restarting it when it fails.

    Log lines start with ``name:``. Raises only what ``task`` raises before its first start.
    """
    first_start = _FirstStart(task_status)
    pause: float | None = None
    while True:
        began = trio.current_time()
        try:
            await task(task_status=first_start)
            return
        except Exception as e:  # trio.Cancelled is a BaseException: it passes, and ends this
            if not first_start.done:
                raise
            failure: BaseException = e
        except BaseExceptionGroup as group:
            # Failed while being cancelled: the failure is logged, the cancellation goes on.
            failed, cancelled = group.split(Exception)
            if failed is None or cancelled is None or not first_start.done:
                raise
            log.error("%s: failed while stopping (%s)", name, describe(failed))
            raise cancelled from None
        pause = backoff.pause(pause, trio.current_time() - began)
        log.error("%s: failed (%s); restarting in %g s", name, describe(failure), pause)
        log.debug("%s: the failure", name, exc_info=failure)
        await trio.sleep(pause)


def describe(exc: BaseException) -> str:
    """``Type: message`` of each error an exception (group) holds, without tracebacks."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe(inner) for inner in exc.exceptions)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
