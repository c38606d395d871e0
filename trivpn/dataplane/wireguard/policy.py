"""The front's peer policies: which peers are blocked, and the timer that blocks them at
their expiry.

The decision (`trivpn.proto.policy.state`) is made when a policy changes and at the next
deadline, never per packet: the hot path reads only ``Peer.blocked``. The timer sleeps in
trio's clock until the earliest deadline of the wall clock, at most ``MAX_SLEEP`` at a time
so that a stepped wall clock is noticed within that long.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Final

import trio

from trivpn.proto.policy import ACTIVE_POLICY, PeerState, Policy, format_expires, next_change, state
from trivpn.proto.wireguard import Device, Peer

log = logging.getLogger("trivpn")

MAX_SLEEP: Final = 10.0  # s: how late a wall-clock step may be noticed


class PeerPolicies:
    """Each peer's policy and the state it was last found in; absent: the default policy."""

    def __init__(
        self, device: Device, wallclock: Callable[[], float], wake_timers: Callable[[], None]
    ) -> None:
        self._device = device
        self._wallclock = wallclock
        self._wake_timers = wake_timers
        self._policies: dict[bytes, Policy] = {}  # only peers with a non-default policy
        self._states: dict[bytes, PeerState] = {}  # only peers not active
        self._changed = trio.Event()

    def policy(self, public_key: bytes) -> Policy:
        return self._policies.get(public_key, ACTIVE_POLICY)

    def state(self, public_key: bytes) -> PeerState:
        """The state the peer is held in (as of the last check)."""
        return self._states.get(public_key, PeerState.ACTIVE)

    def set(self, peer: Peer, policy: Policy) -> bool:
        """Give ``peer`` ``policy`` and block or unblock it at once; whether the policy changed."""
        key = peer.public_key
        if self.policy(key) == policy:
            return False
        if policy == ACTIVE_POLICY:
            del self._policies[key]
        else:
            self._policies[key] = policy
        self._check(peer, self._wallclock())
        self._changed.set()  # the timer's deadline may have moved
        return True

    def forget(self, public_key: bytes) -> None:
        """The peer is gone (its keys went with it)."""
        self._policies.pop(public_key, None)
        self._states.pop(public_key, None)

    def check_all(self, wallclock: float) -> None:
        """Block or unblock every peer whose state changed by ``wallclock``."""
        peers = self._device.peers
        for key in list(self._policies):
            peer = peers.get(key)
            if peer is not None:
                self._check(peer, wallclock)

    def next_deadline(self, wallclock: float) -> float | None:
        """The earliest wall-clock moment a peer's state changes by itself; None: none."""
        deadlines = [next_change(p, wallclock) for p in self._policies.values()]
        return min((d for d in deadlines if d is not None), default=None)

    def _check(self, peer: Peer, wallclock: float) -> None:
        key = peer.public_key
        found = state(self.policy(key), wallclock)
        before = self.state(key)
        if found == before:
            return
        if found is PeerState.ACTIVE:
            del self._states[key]
        else:
            self._states[key] = found
        self._device.set_blocked(peer, found.blocked)
        self._wake_timers()
        if found.blocked:
            log.info("wireguard: peer %s blocked: %s", peer.label, self._why(key, found))
        else:
            log.info("wireguard: peer %s active again (was %s)", peer.label, before)

    def _why(self, key: bytes, found: PeerState) -> str:
        expires = self.policy(key).expires
        if found is PeerState.EXPIRED and expires is not None:
            return f"expired at {format_expires(expires)}; its sessions end"
        return f"{found}; its sessions end"

    async def run(self) -> None:
        """Block peers at their expiry, until cancelled."""
        while True:
            wallclock = self._wallclock()
            self.check_all(wallclock)
            deadline = self.next_deadline(wallclock)
            delay = math.inf if deadline is None else min(deadline - wallclock, MAX_SLEEP)
            self._changed = trio.Event()
            with trio.move_on_after(max(delay, 0.0)):
                await self._changed.wait()
