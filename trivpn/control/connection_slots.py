"""A bound on open connections that a slow client cannot fill: the oldest idle one makes room.

A connection is *idle* while it has not yet sent its whole request. When every slot is taken,
a newcomer sheds the oldest idle connection (its wait is cancelled) instead of being refused,
so that held-open, half-sent requests cannot lock out a scrape; only when every slot is busy
answering is the newcomer refused.
"""

from __future__ import annotations

import trio


class Slot:
    """One admitted connection; ``shed`` once a newcomer has taken its place."""

    def __init__(self) -> None:
        self.shed = False


class ConnectionSlots:
    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._open: set[Slot] = set()
        self._idle: dict[Slot, trio.CancelScope] = {}  # in admission order, oldest first

    def admit(self) -> Slot | None:
        """A slot for a new connection, shedding the oldest idle one if full; None if refused."""
        if len(self._open) >= self._capacity:
            if not self._idle:
                return None
            oldest = next(iter(self._idle))
            self._idle.pop(oldest).cancel()
            oldest.shed = True
            self._open.discard(oldest)
        slot = Slot()
        self._open.add(slot)
        return slot

    def idle(self, slot: Slot, scope: trio.CancelScope) -> None:
        """``slot`` waits for its request under ``scope``: it may be shed until :meth:`busy`."""
        if slot in self._open:
            self._idle[slot] = scope

    def busy(self, slot: Slot) -> None:
        """``slot`` has its request: it is answered, no longer shed."""
        self._idle.pop(slot, None)

    def release(self, slot: Slot) -> None:
        self._idle.pop(slot, None)
        self._open.discard(slot)

    @property
    def in_use(self) -> int:
        return len(self._open)
