"""A WireGuard peer's policy and what it decides: active or blocked, and until when.

Sans-IO: the wall clock (epoch seconds) is an argument, as ``now`` is elsewhere in proto.
This step holds ``enabled`` and ``expires``; quotas and rates join `Policy` as more fields,
`state` as more causes and `next_change` as more deadlines.

Expiry values, for `--expires` and the registry:

- ``2027-01-31``: valid through that day, UTC; blocked from 2027-02-01T00:00:00Z.
- ``2027-01-31T18:00:00+01:00`` (or ``…Z``): that moment; an offset is required, since a
  time without one would mean something else on every host.
- ``30d``, ``12h``, ``2w``: that long from now (a positive whole number of hours, days or
  weeks).
- ``never``: no expiry.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import re
from typing import Any, Final

UTC: Final = datetime.UTC
EXPIRES_ALLOWED: Final = (
    "expected a date (2027-01-31: the end of that day, UTC), a date and time with an offset "
    "(2027-01-31T18:00:00+01:00 or …Z), a duration from now (12h, 30d, 2w) or never"
)
_DURATION: Final = re.compile(r"([1-9][0-9]{0,5})([hdw])")
_UNIT_SECONDS: Final = {"h": 3600, "d": 86400, "w": 7 * 86400}


class PolicyError(ValueError):
    """A policy value that does not parse; the message names the value and what is allowed."""


class PeerState(enum.StrEnum):
    """What the policy makes of a peer at a moment. Every state but ACTIVE blocks it."""

    ACTIVE = "active"
    DISABLED = "disabled"
    EXPIRED = "expired"
    OVER_QUOTA = "over_quota"  # the quota step; never returned yet

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
    """One peer's settings; the default blocks nothing."""

    enabled: bool = True
    expires: datetime.datetime | None = None  # aware, made UTC

    def __post_init__(self) -> None:
        object.__setattr__(self, "expires", _utc(self.expires))

    @property
    def expires_at(self) -> float | None:
        """``expires`` in epoch seconds."""
        return None if self.expires is None else self.expires.timestamp()


ACTIVE_POLICY: Final = Policy()


def state(policy: Policy, wallclock: float) -> PeerState:
    """The peer's state at ``wallclock`` (epoch seconds); expired from the deadline on.
    Disabled wins over expired: re-enabling is the first thing an operator would try."""
    if not policy.enabled:
        return PeerState.DISABLED
    expires_at = policy.expires_at
    if expires_at is not None and wallclock >= expires_at:
        return PeerState.EXPIRED
    return PeerState.ACTIVE


def next_change(policy: Policy, wallclock: float) -> float | None:
    """The next moment (epoch seconds) after ``wallclock`` at which ``state`` may answer
    otherwise without the policy changing; None: never."""
    expires_at = policy.expires_at
    if not policy.enabled or expires_at is None or expires_at <= wallclock:
        return None
    return expires_at


def end_of_day(day: datetime.date) -> datetime.datetime:
    """The end of ``day`` in UTC, i.e. the first moment of the next day."""
    return datetime.datetime.combine(day + datetime.timedelta(days=1), datetime.time(), UTC)


def parse_expires(text: str, now: datetime.datetime) -> datetime.datetime | None:
    """An expiry as an operator writes it (see the module docstring); None for ``never``.
    ``now`` (aware) anchors durations. Raises PolicyError naming the value."""
    value = text.strip()
    if value.lower() == "never":
        return None
    duration = _DURATION.fullmatch(value.lower())
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


def policy_json(state: PeerState, policy: Policy) -> dict[str, Any]:
    """A peer's state and policy as the status document and `peer list --json` carry them."""
    return {
        "state": str(state),
        "enabled": policy.enabled,
        "expires": format_expires(policy.expires),
    }
