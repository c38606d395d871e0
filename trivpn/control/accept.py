"""Accepting connections through a shortage of descriptors or memory, as trio.serve_listeners does.

accept(2) fails with EMFILE, ENFILE, ENOBUFS or ENOMEM when the process or the system runs
short; the connection stays queued and the shortage usually passes (a client hangs up, an
operator raises the limit). A listener that raised those errors would end its server, and in
trivpn the whole VPN with it; :class:`RetryingListener` waits them out instead: it retries
after a short pause, logging one line per interval (with a count) rather than one per retry.
:class:`RefusalLog` does the same for the connections a server refuses (too many at once, a
client not allowed): a flood of them must not become a flood of log lines.
"""

from __future__ import annotations

import errno
import logging
import os
from typing import Final, TypeVar

import trio

from trivpn.dataplane.loglimit import LogLimiter

log = logging.getLogger("trivpn")

# What trio.serve_listeners treats as the system running short, not as a broken listener.
EXHAUSTION_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
RETRY_PAUSE: Final = 0.1  # seconds between attempts (trio.serve_listeners' pause)
LOG_INTERVAL: Final = 10.0  # seconds: at most one line per errno in this time

StreamT = TypeVar("StreamT", bound=trio.abc.AsyncResource)


class RetryingListener(trio.abc.Listener[StreamT]):
    """``listener``, whose ``accept`` retries resource exhaustion instead of raising it.

    Log lines start with ``name:``. Other errors are raised as the listener raises them.
    """

    def __init__(
        self,
        listener: trio.abc.Listener[StreamT],
        name: str,
        *,
        pause: float = RETRY_PAUSE,
        log_interval: float = LOG_INTERVAL,
    ) -> None:
        self.listener = listener
        self._name = name
        self._pause = pause
        self._limiter = LogLimiter(log, log_interval)
        self._failed = 0  # attempts failed since the last accepted connection
        self._failing_since = 0.0

    async def accept(self) -> StreamT:
        while True:
            try:
                stream = await self.listener.accept()
            except OSError as e:
                if e.errno not in EXHAUSTION_ERRNOS:
                    raise
                self._note_failure(e.errno)
                await trio.sleep(self._pause)
                continue
            if self._failed:
                log.warning(
                    "%s: accepting again after %.1f s (failed attempts: %d)",
                    self._name,
                    trio.current_time() - self._failing_since,
                    self._failed,
                )
                self._failed = 0
            return stream

    def _note_failure(self, number: int) -> None:
        now = trio.current_time()
        if not self._failed:
            self._failing_since = now
        self._failed += 1
        code = errno.errorcode[number]
        self._limiter.warning(
            code,
            now,
            "%s: cannot accept connections: %s (%s); retrying every %g s",
            self._name,
            code,
            os.strerror(number),
            self._pause,
        )

    async def aclose(self) -> None:
        await self.listener.aclose()


class RefusalLog:
    """Refused connections, logged as ``name: <line>`` at most once per reason per interval.

    A logged line ends with the count of those suppressed since the previous one.
    """

    def __init__(self, name: str, *, interval: float = LOG_INTERVAL) -> None:
        self._name = name
        self._limiter = LogLimiter(log, interval)

    def refused(self, line: str, *args: object) -> None:
        """Note one refusal; ``line`` (a %-format) is its reason and its rate-limiting key."""
        self._limiter.warning(line, trio.current_time(), "%s: " + line, self._name, *args)
