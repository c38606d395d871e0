"""The policy side of `trivpn peer`: the options that set a peer's limits (``--expires``,
``--quota``, ``--rate``, ``--rate-down``, ``--rate-up``), what `peer add` and `peer set` say
of them, and the policy and usage fields of `peer list` and `peer show` rows.

Options are parsed when the command runs, not by argparse, so that a bad value is one line
naming the option, the value and what is allowed (exit 2), before anything is opened. A row's
state counts the peer's usage of its quota's current period (trivpn.proto.usage); the
running server's status document, when it answers, has the live values.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import re
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

from trivpn.cli import status
from trivpn.cli.errors import EXIT_CONFIG, CliError
from trivpn.proto.policy import (
    PeerState,
    Policy,
    PolicyError,
    format_expires,
    format_rate,
    format_size,
    parse_expires,
    parse_quota,
    parse_rate,
    policy_json,
    state,
)
from trivpn.proto.usage import UsageRecord, counted_bytes, usage_json

T = TypeVar("T")

EXPIRES_HELP: Final = (
    "when the peer is blocked: 2027-01-31 (the end of that day, UTC), "
    "2027-01-31T18:00:00+01:00, 12h, 30d or 2w from now, or never"
)
# what `peer set` can change besides enabled
_LIMIT_OPTIONS: Final = ("--expires", "--quota", "--rate", "--rate-down", "--rate-up")
# the policy and usage fields of a row, as policy_json and usage_json name them
ROW_FIELDS: Final = (
    "state",
    "enabled",
    "expires",
    "quota_bytes",
    "quota_period",
    "usage_bytes",
    "lifetime_rx_bytes",
    "lifetime_tx_bytes",
    "rate_down_bps",
    "rate_up_bps",
)


def add_limit_options(parser: argparse.ArgumentParser, *, clearing: str = "") -> None:
    """--expires, --quota and the rates, on `peer add` (``clearing`` "") and `peer set`."""
    parser.add_argument("--expires", metavar="WHEN", help=EXPIRES_HELP + clearing)
    parser.add_argument(
        "--quota",
        metavar="Q",
        help="received plus sent per UTC day, week (from Monday), month or total, e.g. "
        "50GiB/month; blocked once used up, until the next period; none: no quota",
    )
    parser.add_argument(
        "--rate", metavar="R", help="a rate limit each way, e.g. 20Mbit (kbit, Mbit, Gbit), or none"
    )
    parser.add_argument("--rate-down", metavar="R", help="toward the peer; wins over --rate")
    parser.add_argument("--rate-up", metavar="R", help="from the peer; wins over --rate")


def _parsed(option: str, parse: Callable[[str], T], text: str) -> T:
    try:
        return parse(text)
    except PolicyError as e:
        raise CliError(f"{option}: {e}", EXIT_CONFIG) from None


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def limit_changes(args: argparse.Namespace) -> dict[str, Any]:
    """The Policy fields these options set (a specific rate over --rate): parsed before
    anything is opened, so a bad value changes nothing."""
    changes: dict[str, Any] = {}
    if args.expires is not None:
        changes["expires"] = _parsed(
            "--expires", lambda t: parse_expires(t, _utcnow()), args.expires
        )
    if args.quota is not None:
        changes["quota"] = _parsed("--quota", parse_quota, args.quota)
    for field, option, text in (
        ("rate_down", "--rate-down", args.rate_down),
        ("rate_up", "--rate-up", args.rate_up),
    ):
        if text is not None:
            changes[field] = _parsed(option, parse_rate, text)
        elif args.rate is not None:
            changes[field] = _parsed("--rate", parse_rate, args.rate)
    return changes


def new_policy(args: argparse.Namespace) -> Policy:
    """A new peer's policy from `peer add`'s options; an expiry must lie ahead."""
    changes = limit_changes(args)
    expires = changes.get("expires")
    if expires is not None and expires <= _utcnow():
        raise CliError(
            f"--expires: {args.expires!r} — {format_expires(expires)} is in the past; "
            "expected a moment after now",
            EXIT_CONFIG,
        )
    return Policy(enabled=not args.disabled, **changes)


def set_changes(args: argparse.Namespace) -> dict[str, Any]:
    """What `peer set`, `enable` or `disable` change; `peer set` without one is refused."""
    changes = {} if getattr(args, "enabled", None) is None else {"enabled": args.enabled}
    if "expires" in args:  # `peer set`: enable and disable have no options
        changes.update(limit_changes(args))
    if not changes:
        raise CliError(f"peer set: nothing to change; give {', '.join(_LIMIT_OPTIONS)}", 2)
    return changes


def changed(policy: Policy, changes: Mapping[str, Any]) -> Policy:
    return dataclasses.replace(policy, **changes)


def _settings(policy: Policy) -> dict[str, str]:
    """Each setting as said on stderr (enabled shows in the state)."""
    quota, down, up = policy.quota, policy.rate_down, policy.rate_up
    return {
        "expires": f"expires {format_expires(policy.expires) or 'never'}",
        "quota": f"quota {quota or 'none'}",
        "rate_down": f"rate down {'none' if down is None else format_rate(down)}",
        "rate_up": f"rate up {'none' if up is None else format_rate(up)}",
    }


def policy_note(policy: Policy) -> str:
    """What `peer add` says of a policy that is not the default: ", disabled, quota …"."""
    defaults = _settings(Policy())
    notes = [] if policy.enabled else ["disabled"]
    notes += [said for key, said in _settings(policy).items() if said != defaults[key]]
    return "".join(f", {note}" for note in notes)


def change_note(old: Policy, new: Policy) -> list[str]:
    """The settings `peer set` changed, as said on stderr."""
    before = _settings(old)
    return [said for key, said in _settings(new).items() if said != before[key]]


def state_of(policy: Policy, record: UsageRecord, wallclock: float) -> PeerState:
    """The state a stored policy and usage make at ``wallclock``."""
    return state(policy, wallclock, counted_bytes(record, policy, wallclock))


def policy_fields(policy: Policy, record: UsageRecord, wallclock: float) -> dict[str, Any]:
    """A row's ROW_FIELDS as the registry and the config file make them at ``wallclock``."""
    return {
        **policy_json(state_of(policy, record, wallclock), policy),
        **usage_json(record, policy, wallclock),
    }


def live_fields(peer: Mapping[str, Any]) -> dict[str, Any]:
    """The ROW_FIELDS a status document's peer has (a server of before this step has some)."""
    return {key: peer[key] for key in ROW_FIELDS if key in peer}


def _spaced(size: str) -> str:
    """``50GiB`` as ``50 GiB``, as format_bytes spaces its units."""
    match = re.fullmatch(r"([0-9]+)([A-Za-z]+)", size)
    return size if match is None else f"{match[1]} {match[2]}"


def usage_cell(row: Mapping[str, Any]) -> str:
    """``1.20 GiB / 50 GiB month``, or the usage alone without a quota."""
    used = status.format_bytes(row["usage_bytes"])
    if row["quota_bytes"] is None:
        return used
    return f"{used} / {_spaced(format_size(row['quota_bytes']))} {row['quota_period']}"


def rate_cell(row: Mapping[str, Any]) -> str | None:
    """``20Mbit down, 5Mbit up``; None (shown "-") without a limit."""
    rates = [
        f"{format_rate(row[key])} {way}"
        for key, way in (("rate_down_bps", "down"), ("rate_up_bps", "up"))
        if row[key] is not None
    ]
    return ", ".join(rates) or None


def lifetime_cell(row: Mapping[str, Any]) -> str:
    rx, tx = row["lifetime_rx_bytes"], row["lifetime_tx_bytes"]
    return f"{status.format_bytes(rx)} received, {status.format_bytes(tx)} sent"
