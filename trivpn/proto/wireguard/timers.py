"""The protocol's constants (WireGuard paper, section 6) and the five per-peer timers.

A timer is a deadline in the caller's monotonic seconds, or None when not pending. The
``on_*`` hooks are the paper's/kernel's timer events; :meth:`PeerTimers.expired` pops the
timers that are due so the peer can act on them.
"""

from __future__ import annotations

import enum
from typing import Final

REKEY_AFTER_MESSAGES: Final = 1 << 60
REJECT_AFTER_MESSAGES: Final = (1 << 64) - (1 << 13) - 1
REKEY_AFTER_TIME: Final = 120.0
REJECT_AFTER_TIME: Final = 180.0
REKEY_ATTEMPT_TIME: Final = 90.0
REKEY_TIMEOUT: Final = 5.0
REKEY_TIMEOUT_JITTER_MAX: Final = 0.334  # exclusive: 0..333 ms
KEEPALIVE_TIMEOUT: Final = 10.0
COOKIE_REFRESH_TIME: Final = 120.0
# Retries after the first initiation before giving up: REKEY_ATTEMPT_TIME / REKEY_TIMEOUT,
# and the peer gives up at the expiry after the last one (about 100 s, 20 initiations),
# as the Linux module and wireguard-go do.
MAX_TIMER_HANDSHAKES: Final = int(REKEY_ATTEMPT_TIME / REKEY_TIMEOUT)
ZERO_KEYS_AFTER: Final = 3 * REJECT_AFTER_TIME
# The initiator refreshes a session it keeps receiving on before the peer must drop it.
REKEY_BEFORE_REJECT_RECEIVING: Final = REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT
# At most one accepted initiation per peer per this many seconds (50 per second).
HANDSHAKE_INITIATION_RATE: Final = 1 / 50
STAGED_PACKETS_MAX: Final = 128


def jitter_from(random_bytes: bytes) -> float:
    """A uniform 0..333 ms jitter from two random bytes (injected randomness)."""
    return (int.from_bytes(random_bytes[:2], "little") % 334) / 1000


class Timer(enum.Enum):
    RETRANSMIT_HANDSHAKE = "retransmit_handshake"
    SEND_KEEPALIVE = "send_keepalive"
    NEW_HANDSHAKE = "new_handshake"
    ZERO_KEY_MATERIAL = "zero_key_material"
    PERSISTENT_KEEPALIVE = "persistent_keepalive"


class PeerTimers:
    """Deadlines and the counters that go with them; no actions, no clock of its own."""

    __slots__ = (
        "handshake_attempts",
        "need_another_keepalive",
        "new_handshake",
        "persistent_keepalive",
        "retransmit_handshake",
        "send_keepalive",
        "sent_last_minute_handshake",
        "zero_key_material",
    )

    def __init__(self) -> None:
        self.retransmit_handshake: float | None = None
        self.send_keepalive: float | None = None
        self.new_handshake: float | None = None
        self.zero_key_material: float | None = None
        self.persistent_keepalive: float | None = None
        self.handshake_attempts = 0
        self.need_another_keepalive = False
        self.sent_last_minute_handshake = False

    def next_deadline(self) -> float | None:
        best: float | None = None
        for t in (
            self.retransmit_handshake,
            self.send_keepalive,
            self.new_handshake,
            self.zero_key_material,
            self.persistent_keepalive,
        ):
            if t is not None and (best is None or t < best):
                best = t
        return best

    def expired(self, now: float) -> list[Timer]:
        """Pop and return the timers due at ``now``, in a fixed order."""
        due: list[Timer] = []
        for timer in Timer:
            deadline: float | None = getattr(self, timer.value)
            if deadline is not None and deadline <= now:
                setattr(self, timer.value, None)
                due.append(timer)
        return due

    def stop_all(self) -> None:
        self.retransmit_handshake = None
        self.send_keepalive = None
        self.new_handshake = None
        self.zero_key_material = None
        self.persistent_keepalive = None

    # -- the events of the paper / the Linux module's timers.c --

    def on_data_sent(self, now: float, jitter: float) -> None:
        """An authenticated data (non-keepalive) packet was sent: expect an answer."""
        if self.new_handshake is None:
            self.new_handshake = now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + jitter

    def on_data_received(self, now: float) -> None:
        """An authenticated data packet arrived: answer within KEEPALIVE_TIMEOUT."""
        if self.send_keepalive is None:
            self.send_keepalive = now + KEEPALIVE_TIMEOUT
        else:
            self.need_another_keepalive = True

    def on_any_authenticated_packet_sent(self) -> None:
        self.send_keepalive = None

    def on_any_authenticated_packet_received(self) -> None:
        self.new_handshake = None

    def on_any_authenticated_packet_traversal(self, now: float, interval: int | None) -> None:
        if interval:
            self.persistent_keepalive = now + interval

    def on_handshake_initiated(self, now: float, jitter: float) -> None:
        self.retransmit_handshake = now + REKEY_TIMEOUT + jitter

    def on_handshake_complete(self) -> None:
        self.retransmit_handshake = None
        self.handshake_attempts = 0
        self.sent_last_minute_handshake = False

    def on_session_derived(self, now: float) -> None:
        self.zero_key_material = now + ZERO_KEYS_AFTER
