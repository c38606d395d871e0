"""Log lines that a flood must not multiply: at most one per key per interval."""

from __future__ import annotations

import logging


class LogLimiter:
    def __init__(self, logger: logging.Logger, interval: float = 1.0) -> None:
        self._logger = logger
        self._interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, now: float, msg: str, *args: object) -> bool:
        """Log ``msg`` unless ``key`` was logged less than ``interval`` ago; True if logged."""
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False
        self._last[key] = now
        suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            msg += " (%d similar suppressed)"
            args = (*args, suppressed)
        self._logger.warning(msg, *args)
        return True
