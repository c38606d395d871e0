"""A WireGuard peer's policy and what it decides: active or blocked, and until when.

Sans-IO: the wall clock (epoch seconds) is an argument, as ``now`` is elsewhere in proto.
A policy holds ``enabled``, ``expires``, a traffic ``quota`` per calendar period and rate
limits each way; `state` decides from it and the peer's usage (`trivpn.proto.usage`).

Expiry values, for `--expires` and the registry:

- ``2027-01-31``: valid through that day, UTC; blocked from 2027-02-01T00:00:00Z.
- ``2027-01-31T18:00:00+01:00`` (or ``…Z``): that moment; an offset is required, since a
  time without one would mean something else on every host.
- ``30d``, ``12h``, ``2w``: that long from now (a positive whole number of hours, days or
  weeks).
- ``never``: no expiry.

Quotas: ``50GiB/month`` (a size with a unit, then ``/`` and a period: day, week, month,
total); periods are calendar periods in UTC (`trivpn.proto.periods`). Rates: ``20Mbit``
(bits per second; kbit, Mbit, Gbit). ``none`` clears either.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import re
from typing import Any, Final

from trivpn.proto.periods import QuotaPeriod, period_end

UTC: Final = datetime.UTC
EXPIRES_ALLOWED: Final = (
    "expected a date (2027-01-31: the end of that day, UTC), a date and time with an offset "
    "(2027-01-31T18:00:00+01:00 or …Z), a duration from now (12h, 30d, 2w) or never"
)
# patterns, not compiled at import (every CLI command loads this module): `re` compiles and
# caches them on first use
_DURATION: Final = r"([1-9][0-9]{0,5})([hdw])"
_UNIT_SECONDS: Final = {"h": 3600, "d": 86400, "w": 7 * 86400}


class PolicyError(ValueError):
    """A policy value that does not parse; the message names the value and what is allowed."""


QUOTA_ALLOWED: Final = (
    "expected a size and a period, e.g. 50GiB/month (units B, KB, MB, GB, TB, KiB, MiB, GiB, "
    "TiB; periods day, week, month, total) or none"
)
RATE_ALLOWED: Final = (
    "expected a rate above 0 in bits per second, e.g. 20Mbit (units kbit, Mbit, Gbit) or none"
)
_SIZE_UNITS: Final = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_RATE_UNITS: Final = {"kbit": 1000, "mbit": 1000**2, "gbit": 1000**3}
# digits bounded: 30 are beyond any quota or rate, and int() refuses more than 4300
_AMOUNT: Final = r"([0-9]{1,30})(?:\.([0-9]{1,30}))?\s*([a-z]+)"
MAX_QUOTA: Final = 2**62  # bytes: far beyond any link, and within SQLite's INTEGER
MAX_RATE: Final = 10**12  # bits per second (1 Tbit)


@dataclasses.dataclass(frozen=True)
class Quota:
    """So many bytes (received plus sent, as `wg show`'s transfer) per period."""

    bytes: int
    period: QuotaPeriod

    def __str__(self) -> str:
        return f"{format_size(self.bytes)}/{self.period}"


class PeerState(enum.StrEnum):
    """What the policy makes of a peer at a moment. Every state but ACTIVE blocks it."""

    ACTIVE = "active"
    DISABLED = "disabled"
    EXPIRED = "expired"
    OVER_QUOTA = "over_quota"

    @property
    def blocked(self) -> bool:
        return self is not PeerState.ACTIVE


def _utc(value: datetime.datetime | None) -> datetime.datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise PolicyError(f"{value.isoformat()!r} — a time without an offset; {EXPIRES_ALLOWED}")
    return value.astimezone(UTC)


# A dataclass, not attrs: the CLI's key commands import this module and must start fast.
@dataclasses.dataclass(frozen=True, kw_only=True)
class Policy:
    """One peer's settings; the default blocks and limits nothing."""

    enabled: bool = True
    expires: datetime.datetime | None = None  # aware, made UTC
    quota: Quota | None = None
    rate_down: int | None = None  # bits per second toward the peer
    rate_up: int | None = None  # bits per second from the peer

    def __post_init__(self) -> None:
        object.__setattr__(self, "expires", _utc(self.expires))

    @property
    def expires_at(self) -> float | None:
        """``expires`` in epoch seconds."""
        return None if self.expires is None else self.expires.timestamp()


ACTIVE_POLICY: Final = Policy()


def state(policy: Policy, wallclock: float, used: int = 0) -> PeerState:
    """The peer's state at ``wallclock`` (epoch seconds) having used ``used`` bytes of its
    quota's current period: expired from the deadline on, over quota from the quota on.
    Disabled wins over expired over over-quota: the first cause is the one to lift first."""
    if not policy.enabled:
        return PeerState.DISABLED
    expires_at = policy.expires_at
    if expires_at is not None and wallclock >= expires_at:
        return PeerState.EXPIRED
    if policy.quota is not None and used >= policy.quota.bytes:
        return PeerState.OVER_QUOTA
    return PeerState.ACTIVE


def next_change(policy: Policy, wallclock: float) -> float | None:
    """The next moment (epoch seconds) after ``wallclock`` at which ``state`` may answer
    otherwise, or the quota's period rolls over, without the policy changing; None: never.
    (Usage moves by itself too: the data path reports the quota's crossing.)"""
    deadlines: list[float] = []
    expires_at = policy.expires_at
    if expires_at is not None and expires_at > wallclock:
        deadlines.append(expires_at)
    if policy.quota is not None:
        end = period_end(policy.quota.period, wallclock)
        if end is not None:
            deadlines.append(end)
    if not policy.enabled or (expires_at is not None and expires_at <= wallclock):
        return None  # blocked until the policy changes
    return min(deadlines, default=None)


def remaining(policy: Policy, used: int) -> int | None:
    """Bytes the peer may still move in its quota's period; None: no quota."""
    if policy.quota is None:
        return None
    return max(policy.quota.bytes - used, 0)


def end_of_day(day: datetime.date) -> datetime.datetime:
    """The end of ``day`` in UTC, i.e. the first moment of the next day."""
    return datetime.datetime.combine(day + datetime.timedelta(days=1), datetime.time(), UTC)


def parse_expires(text: str, now: datetime.datetime) -> datetime.datetime | None:
    """An expiry as an operator writes it (see the module docstring); None for ``never``.
    ``now`` (aware) anchors durations. Raises PolicyError naming the value."""
    value = text.strip()
    if value.lower() == "never":
        return None
    duration = re.fullmatch(_DURATION, value.lower())
    if duration is not None:
        seconds = int(duration[1]) * _UNIT_SECONDS[duration[2]]
        return (now + datetime.timedelta(seconds=seconds)).astimezone(UTC).replace(microsecond=0)
    if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
        try:
            return end_of_day(datetime.date.fromisoformat(value))
        except ValueError as e:
            raise PolicyError(f"{text!r} — {e}; {EXPIRES_ALLOWED}") from None
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise PolicyError(f"{text!r} — {EXPIRES_ALLOWED}") from None
    if moment.tzinfo is None:
        raise PolicyError(f"{text!r} — a time without an offset; {EXPIRES_ALLOWED}")
    return moment.astimezone(UTC)


def format_expires(expires: datetime.datetime | None) -> str | None:
    """ISO 8601 in UTC with a Z (what JSON output and the registry carry); None: never."""
    if expires is None:
        return None
    return expires.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _amount(text: str, units: dict[str, int]) -> int | None:
    """``1.5GiB`` in the base unit (bytes, bits per second), a part of one dropped. Exact: as
    a float product 1.005KB would be 1004 bytes."""
    match = re.fullmatch(_AMOUNT, text.strip().lower())
    if match is None or match[3] not in units:
        return None
    whole: str = match[1]
    fraction: str = match[2] or ""
    scale: int = 10 ** len(fraction)
    return int(whole + fraction) * units[match[3]] // scale


def parse_quota(text: str) -> Quota | None:
    """``50GiB/month``; None for ``none``. Raises PolicyError naming the value."""
    if text.strip().lower() == "none":
        return None
    size, slash, period = text.partition("/")
    amount = _amount(size, _SIZE_UNITS)
    period = period.strip().lower()
    if not slash or amount is None or period not in set(QuotaPeriod):
        raise PolicyError(f"{text!r} — {QUOTA_ALLOWED}")
    if not 1 <= amount <= MAX_QUOTA:
        raise PolicyError(f"{text!r} — a quota of at least 1 B and below 4 EiB; {QUOTA_ALLOWED}")
    return Quota(amount, QuotaPeriod(period))


def parse_rate(text: str) -> int | None:
    """``20Mbit`` (or ``20Mbit/s``) in bits per second; None for ``none``. Raises PolicyError
    naming the value: a rate of 0 would block, which is what ``peer disable`` is for."""
    value = text.strip()
    if value.lower() == "none":
        return None
    amount = _amount(value.removesuffix("/s"), _RATE_UNITS)
    if amount is None:
        raise PolicyError(f"{text!r} — {RATE_ALLOWED}")
    if not 1 <= amount <= MAX_RATE:
        raise PolicyError(f"{text!r} — {RATE_ALLOWED}, at most 1000Gbit")
    return amount


def format_size(count: int) -> str:
    """A byte count in the largest unit that holds it whole (``50GiB``, ``10GB``: not
    ``9765625KiB``), else bytes; what `parse_quota` reads back."""
    for unit in ("TiB", "TB", "GiB", "GB", "MiB", "MB", "KiB", "KB"):
        size = _SIZE_UNITS[unit.lower()]
        if count >= size and count % size == 0:
            return f"{count // size}{unit}"
    return f"{count}B"


def format_rate(bps: int) -> str:
    """Bits per second in the largest unit that holds it whole (``20Mbit``), else in kbit
    with every digit (``1234.567kbit``); what `parse_rate` reads back."""
    for unit in ("Gbit", "Mbit", "kbit"):
        size = _RATE_UNITS[unit.lower()]
        if bps >= size and bps % size == 0:
            return f"{bps // size}{unit}"
    return f"{bps // 1000}.{bps % 1000:03d}".rstrip("0") + "kbit"


def policy_json(state: PeerState, policy: Policy) -> dict[str, Any]:
    """A peer's state and policy as the status document and `peer list --json` carry them."""
    quota = policy.quota
    return {
        "state": str(state),
        "enabled": policy.enabled,
        "expires": format_expires(policy.expires),
        "quota_bytes": None if quota is None else quota.bytes,
        "quota_period": None if quota is None else str(quota.period),
        "rate_down_bps": policy.rate_down,
        "rate_up_bps": policy.rate_up,
    }
