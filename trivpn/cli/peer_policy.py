"""The policy side of `trivpn peer`: the options that set a peer's limits (``--expires``,
``--quota``, ``--rate``, ``--rate-down``, ``--rate-up``), what `peer add` and `peer set` say
of them, and the cells of `peer list` and `peer show` that show a row's policy and usage.

Options are parsed when the command runs, not by argparse, so that a bad value is one line
naming the option, the value and what is allowed (exit 2), before anything is opened; the
rules are trivpn.proto.peer_fields, which the web API follows too. The rows themselves:
trivpn.registry.peer_rows.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import re
from collections.abc import Mapping
from typing import Any, Final

from trivpn.cli import status
from trivpn.cli.errors import EXIT_CONFIG, CliError
from trivpn.proto.peer_fields import LIMIT_FIELDS, FieldError, policy_changes
from trivpn.proto.policy import Policy, format_expires, format_rate, format_size

EXPIRES_HELP: Final = (
    "when the peer is blocked: 2027-01-31 (the end of that day, UTC), "
    "2027-01-31T18:00:00+01:00, 12h, 30d or 2w from now, or never"
)
# what `peer set` can change besides enabled
_LIMIT_OPTIONS: Final = ("--expires", "--quota", "--rate", "--rate-down", "--rate-up")


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


def field_error(e: FieldError) -> CliError:
    """A field's error as the CLI says it: the field as its option (``--rate-down``)."""
    option = e.field if e.field == "name" else "--" + e.field.replace("_", "-")
    return CliError(f"{option}: {e.message}", EXIT_CONFIG)


def limit_texts(args: argparse.Namespace) -> dict[str, str | None]:
    """The limit options given, by field name (trivpn.proto.peer_fields.LIMIT_FIELDS)."""
    given = {field: getattr(args, field) for field in LIMIT_FIELDS}
    return {field: text for field, text in given.items() if text is not None}


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def limit_changes(args: argparse.Namespace) -> dict[str, Any]:
    """The Policy fields these options set (a specific rate over --rate): parsed before
    anything is opened, so a bad value changes nothing."""
    try:
        return policy_changes(limit_texts(args), utcnow())
    except FieldError as e:
        raise field_error(e) from None


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
