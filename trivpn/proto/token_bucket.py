"""A token bucket that polices a rate: a packet passes if the bucket holds its size.

Policing (drop what exceeds the rate) rather than shaping (queue it): a policer keeps no
packets, needs no timer and costs a few arithmetic operations per packet; TCP reads its
drops as congestion and settles just under the rate. The bucket holds ``burst`` bytes: at
least one large burst of segments (GSO sends up to 64 KiB back to back), and a fifth of a
second at the rate, so a single TCP stream keeps close to the rate: measured in
tests/e2e/test_limits_e2e.py, a twentieth of a second held WireGuard at 19 Mbit/s of 20
but a ToyVPN session (whose Python client delivers in bursts) at 6-14, and at 10 Mbit
(the 64 KiB minimum) at 3; a fifth gives 19-20 and 9.8 for both. Sans-IO: ``now``
(seconds, monotonic) is an argument.
"""

from __future__ import annotations

from typing import Final

BURST_SECONDS: Final = 0.2
MIN_BURST: Final = 64 * 1024  # bytes


def default_burst(rate_bytes: float) -> float:
    return max(rate_bytes * BURST_SECONDS, MIN_BURST)


class TokenBucket:
    __slots__ = ("_stamp", "_tokens", "burst", "rate")

    def __init__(self, rate_bps: int, now: float, burst: float | None = None) -> None:
        self.rate = rate_bps / 8  # bytes per second
        self.burst = default_burst(self.rate) if burst is None else burst
        self._tokens = self.burst  # starts full
        self._stamp = now

    def __repr__(self) -> str:
        return f"TokenBucket({self.rate * 8:.0f} bit/s, burst {self.burst:.0f} B)"

    def take(self, size: int, now: float) -> bool:
        """Whether a packet of ``size`` bytes passes at ``now``; if it does, it uses tokens."""
        tokens = self._tokens + (now - self._stamp) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        self._stamp = now
        if tokens < size:
            self._tokens = tokens
            return False
        self._tokens = tokens - size
        return True
