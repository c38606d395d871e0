"""The front's peer policies: which peers are blocked, their limits, their usage, and the
timer that blocks or unblocks them at their expiry and at their quota period's roll-over.

The decision (`trivpn.proto.policy.state`) is made when a policy, the usage records or a
period change, and when the device reports a peer's usage reaching a mark it was given
(`QuotaReached`), never per packet: the hot path reads ``Peer.blocked`` and ``Peer.limited``.
The timer sleeps in trio's clock until the earliest deadline of the wall clock, at most
``MAX_SLEEP`` at a time so that a stepped wall clock is noticed within that long.

Usage: a `UsageMeter` per public key holds the stored record and marks on the peer's
counters (trivpn.proto.usage). The counters are the key's, not one Peer object's: a peer
removed and added again (a reload) goes on from where its predecessor stopped, so nothing
pending is lost or counted twice. The usage keeper (trivpn.registry.usage_sync) takes what is
pending (`pending_usage`), adds it to the registry and reports the records back
(`usage_stored`); records another process changed come in through `load_usage`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Final

import trio

from trivpn.proto.periods import period_key
from trivpn.proto.policy import (
    ACTIVE_POLICY,
    PeerState,
    Policy,
    format_expires,
    next_change,
    remaining,
    state,
)
from trivpn.proto.usage import NO_USAGE, UsageDelta, UsageMeter, UsageRecord, counted_bytes
from trivpn.proto.wireguard import Device, Peer

log = logging.getLogger("trivpn")

MAX_SLEEP: Final = 10.0  # s: how late a wall-clock step may be noticed
CHECK_SLICE: Final = 200  # peers checked between two checkpoints of the timer (~2 ms)
WARN_SHARE: Final = 0.8  # of a quota: a warning is logged once per period on reaching it


@dataclasses.dataclass(frozen=True)
class PendingUsage:
    """What a store adds for a peer (``delta``: its bytes counted since its stored record),
    taken when its counters stood at ``rx``/``tx`` (what `PeerPolicies.usage_stored` moves
    its marks to)."""

    public_key: bytes
    rx: int
    tx: int
    delta: UsageDelta


class _Usage:
    """One public key's meter, and the counters of the peers that had the key: those of the
    ones gone (``base``) plus the present one's."""

    __slots__ = ("base_rx", "base_tx", "handed_out", "meter", "peer")

    def __init__(self, record: UsageRecord = NO_USAGE) -> None:
        self.meter = UsageMeter(record)
        self.peer: Peer | None = None
        self.base_rx = 0
        self.base_tx = 0
        self.handed_out = False  # gone, and its last delta was handed out

    def counters(self) -> tuple[int, int]:
        peer = self.peer
        if peer is None:
            return self.base_rx, self.base_tx
        return self.base_rx + peer.rx_bytes, self.base_tx + peer.tx_bytes

    def current(self, wallclock: float) -> UsageRecord:
        return self.meter.current(*self.counters(), wallclock)


def _monotonic() -> float:
    """trio's clock; outside trio (a front built before the run) a moment before any."""
    try:
        return trio.current_time()
    except RuntimeError:
        return -math.inf  # a rate's bucket starts full either way


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
        self._usage: dict[bytes, _Usage] = {}  # every peer's, and those loaded or gone
        self._warned: dict[bytes, str] = {}  # the quota period a peer was warned in
        self._changed = trio.Event()

    def policy(self, public_key: bytes) -> Policy:
        return self._policies.get(public_key, ACTIVE_POLICY)

    def state(self, public_key: bytes) -> PeerState:
        """The state the peer is held in (as of the last check)."""
        return self._states.get(public_key, PeerState.ACTIVE)

    # -- peers coming and going (trivpn.dataplane.wireguard.peers) --

    def attach(self, peer: Peer) -> None:
        """A peer was added: it counts on from the key's usage (NO_USAGE if none known)."""
        usage = self._usage.get(peer.public_key)
        if usage is None:
            usage = self._usage[peer.public_key] = _Usage()
        usage.peer = peer
        usage.handed_out = False

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

    def forget(self, peer: Peer) -> None:
        """The peer is gone (its keys went with it); its usage stays pending until taken."""
        key = peer.public_key
        self._policies.pop(key, None)
        self._states.pop(key, None)  # its warning stays: once per period, reloads or not
        usage = self._usage.get(key)
        if usage is not None and usage.peer is peer:
            usage.base_rx, usage.base_tx = usage.counters()
            usage.peer = None

    # -- usage (the usage keeper's interface) --

    def usage(self, public_key: bytes) -> UsageRecord:
        """The peer's record as stored plus what is pending."""
        usage = self._usage.get(public_key)
        return NO_USAGE if usage is None else usage.current(self._wallclock())

    def pending_usage(self) -> list[PendingUsage]:
        """Every key with bytes not yet stored: the peers' (until `usage_stored` has them)
        and, once, those of the peers removed since the last call."""
        taken: list[PendingUsage] = []
        for key, usage in self._usage.items():
            if usage.peer is None:
                if usage.handed_out:
                    continue
                usage.handed_out = True
            rx, tx = usage.counters()
            delta = usage.meter.delta(key, rx, tx)
            if delta.rx or delta.tx:
                taken.append(PendingUsage(key, rx, tx, delta))
        return taken

    def usage_stored(
        self, stored: Mapping[bytes, UsageRecord], taken: Sequence[PendingUsage]
    ) -> None:
        """The store holds ``stored``, ``taken`` added: the meters move their marks to the
        counters taken. The peers whose records moved by more than what was taken (another
        writer added, or reset them) have their states and limits checked again."""
        moved: list[bytes] = []
        for item in taken:
            usage = self._usage.get(item.public_key)
            record = stored.get(item.public_key)
            if usage is None or record is None:
                continue
            expected = usage.meter.record.total + usage.meter.pending_counted(item.rx, item.tx)
            usage.meter.stored(record, item.rx, item.tx)
            if record.total != expected:  # else the usage seen is as it was: nothing to check
                moved.append(item.public_key)
        self._recheck(moved)

    def load_usage(self, records: Mapping[bytes, UsageRecord]) -> None:
        """Records read afresh (start-up; another process changed them, e.g. a usage reset):
        what is pending stays pending; keys absent from ``records`` keep theirs. States and
        limits are checked again at once."""
        for key, record in records.items():
            usage = self._usage.get(key)
            if usage is None:
                self._usage[key] = _Usage(record)  # a peer not (yet) added
            else:
                usage.meter.reloaded(record, *usage.counters())
        self._recheck(records)

    def quota_reached(self, peer: Peer) -> None:
        """The device reports ``peer``'s usage at a mark (QuotaReached): check it now."""
        if not peer.removed:
            self._check(peer, self._wallclock())

    # -- checks --

    async def check_all(self, wallclock: float) -> None:
        """Block or unblock every peer whose state changed by ``wallclock``, and renew the
        limits of those with a quota (a period may have rolled over): in slices, with a
        checkpoint between, so that thousands of peers never hold the loop."""
        keys = list(self._policies)
        for start in range(0, len(keys), CHECK_SLICE):
            self._recheck(keys[start : start + CHECK_SLICE], wallclock)
            await trio.sleep(0)

    def _recheck(self, keys: Iterable[bytes], wallclock: float | None = None) -> None:
        policies, peers = self._policies, self._device.peers
        checked = [peers.get(key) for key in keys if key in policies]
        if wallclock is None:
            wallclock = self._wallclock()
        for peer in checked:
            if peer is not None:
                self._check(peer, wallclock)

    def next_deadline(self, wallclock: float) -> float | None:
        """The earliest wall-clock moment a peer's state or period changes by itself."""
        deadlines = [next_change(p, wallclock) for p in self._policies.values()]
        return min((d for d in deadlines if d is not None), default=None)

    def _check(self, peer: Peer, wallclock: float) -> None:
        key = peer.public_key
        policy = self.policy(key)
        used = 0
        if policy.quota is not None:  # the quota's period as stored, plus what is pending
            usage = self._usage[key]
            pending = usage.meter.pending_counted(*usage.counters())
            used = counted_bytes(usage.meter.record, policy, wallclock) + pending
        found = state(policy, wallclock, used)
        self._apply_limits(peer, policy, found, used, wallclock)
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

    def _apply_limits(
        self, peer: Peer, policy: Policy, found: PeerState, used: int, wallclock: float
    ) -> None:
        """The device's usage limit (the quota's rest, and the warning mark before it) and
        rates for ``peer``; the quota warning, once per period."""
        device, quota = self._device, policy.quota
        left = remaining(policy, used) if found is PeerState.ACTIVE else None
        warn_left: int | None = None
        if quota is not None:  # over it too: a batch may cross both marks at once
            period = period_key(quota.period, wallclock)
            warn_at = math.ceil(quota.bytes * WARN_SHARE)
            if self._warned.get(peer.public_key) != period:
                if used >= warn_at:
                    self._warned[peer.public_key] = period
                    log.warning(
                        "wireguard: peer %s has used %d%% of its quota %s (%d bytes)",
                        peer.label,
                        used * 100 // quota.bytes,
                        quota,
                        used,
                    )
                else:
                    warn_left = warn_at - used
        device.set_usage_limit(peer, left, warn_remaining=warn_left)
        device.set_rates(peer, policy.rate_down, policy.rate_up, _monotonic())

    def _why(self, key: bytes, found: PeerState) -> str:
        policy = self.policy(key)
        if found is PeerState.EXPIRED and policy.expires is not None:
            return f"expired at {format_expires(policy.expires)}; its sessions end"
        if found is PeerState.OVER_QUOTA and policy.quota is not None:
            return f"over its quota {policy.quota}; its sessions end"
        return f"{found}; its sessions end"

    async def run(self) -> None:
        """Block and unblock peers at their deadlines, until cancelled."""
        while True:
            self._changed = trio.Event()  # first: a change during the slices is not missed
            wallclock = self._wallclock()
            await self.check_all(wallclock)
            deadline = self.next_deadline(wallclock)
            delay = math.inf if deadline is None else min(deadline - wallclock, MAX_SLEEP)
            with trio.move_on_after(max(delay, 0.0)):
                await self._changed.wait()
