"""The web admin's registry connections, kept between API calls.

A call takes an idle connection (or opens one) in its worker thread and gives it back when
done, so a PostgreSQL registry is not a new connection, with its authentication, per call;
calls at once get one each. A call that raised closes its connection instead (the next
opens a fresh one: the database may have restarted). `close` at shutdown closes the idle
ones, and a connection whose call ends after it is closed. A reload that changes [state]
makes the next call open the new registry.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from trivpn.config import StateConfig
from trivpn.registry.api import RegistryStore
from trivpn.registry.opener import open_registry

T = TypeVar("T")


class RegistryPool:
    """Connections to the registry of a [state], for calls made from any worker thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state: StateConfig | None = None  # the registry the idle connections are to
        self._idle: list[RegistryStore] = []
        self._closed = False

    def call(
        self, state: StateConfig, fn: Callable[[RegistryStore], T], *, create: bool
    ) -> T | None:
        """``fn`` on a connection to the registry of ``state``; None when there is none (a
        SQLite file not made yet, and not ``create``). Blocks: run it in a worker thread."""
        registry = self._take(state, create=create)
        if registry is None:
            return None
        try:
            result = fn(registry)
        except BaseException:
            registry.close()
            raise
        self._give_back(state, registry)
        return result

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for registry in idle:
            registry.close()

    def _take(self, state: StateConfig, *, create: bool) -> RegistryStore | None:
        with self._lock:
            stale: list[RegistryStore] = []
            if state != self._state:  # a reload changed [state]
                stale, self._idle, self._state = self._idle, [], state
            registry = self._idle.pop() if self._idle else None
        for old in stale:
            old.close()
        if registry is not None:
            return registry
        # any_thread: a connection goes back to the pool and on to another worker thread
        return open_registry(state, create=create, any_thread=True)

    def _give_back(self, state: StateConfig, registry: RegistryStore) -> None:
        with self._lock:
            if not self._closed and state == self._state:
                self._idle.append(registry)
                return
        registry.close()
