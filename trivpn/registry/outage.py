"""The registry's database server going away, logged once when it goes and once when it is
back: an outage of minutes is two lines, not one per poll and flush.

Only `RegistryUnreachable` (the server cannot be reached) starts one; any call that then gets
through ends it. Other errors (a lock held too long, a refusal) are their callers' to log.
"""

from __future__ import annotations

import logging

import trio

from trivpn.registry.store import RegistryUnreachable

log = logging.getLogger("trivpn")


class Outage:
    """Whether the last call to the registry found its server unreachable. Trio thread only."""

    def __init__(self) -> None:
        self.since: float | None = None  # trio.current_time() of the first failed call

    @property
    def down(self) -> bool:
        return self.since is not None

    def failed(self, error: RegistryUnreachable) -> None:
        if self.since is not None:
            return
        self.since = trio.current_time()
        log.warning(
            "registry: unreachable (%s); serving the peers last known, keeping the usage "
            "counted until it is back",
            error,
        )

    def succeeded(self) -> None:
        if self.since is None:
            return
        seconds, self.since = trio.current_time() - self.since, None
        log.info("registry: reachable again after %.0f s; catching up", seconds)
