"""What a peer's fields may be, checked in one place for `trivpn peer add | set` and the web
API: a field's text in, its value out, or one `FieldError` naming the field.

Fields and their texts: ``name``; ``address`` and ``route`` (comma-separated lists);
``expires``, ``quota``, ``rate`` (both ways), ``rate_down``, ``rate_up`` in the syntax of
trivpn.proto.policy. A policy field given as None is cleared, as its "none" or "never" text
would; a field not given is left alone. The CLI shows a field as its option (``--rate-down``),
the API names it in its 400 answer.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import re
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

from trivpn.proto.ip import IPAddress, IPNetwork
from trivpn.proto.policy import (
    Policy,
    PolicyError,
    format_expires,
    parse_expires,
    parse_quota,
    parse_rate,
)

T = TypeVar("T")

PEER_NAME: Final = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
PEER_NAME_ALLOWED: Final = "expected 1 to 64 characters from A-Z a-z 0-9 _ . @ -"
# the policy fields a text sets; a specific rate wins over "rate"
LIMIT_FIELDS: Final = ("expires", "quota", "rate", "rate_down", "rate_up")


class FieldError(ValueError):
    """A field's text that is not allowed; ``message`` says what it was and what is."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def check_name(text: str) -> str:
    if not PEER_NAME.fullmatch(text):
        raise FieldError("name", f"{text!r} — {PEER_NAME_ALLOWED}")
    return text


def _items(text: str) -> list[str]:
    return [item.strip() for item in text.split(",")]


def parse_addresses(text: str) -> list[IPAddress]:
    """Host addresses, e.g. ``10.8.0.5, fd00::5`` (a /32 or /128 suffix is allowed)."""
    addresses: list[IPAddress] = []
    for item in _items(text):
        try:
            iface = ipaddress.ip_interface(item)
        except ValueError:
            raise FieldError(
                "address", f"{item!r} — expected an IP address, e.g. 10.8.0.5"
            ) from None
        if iface.network.num_addresses != 1 and "/" in item:
            raise FieldError("address", f"{item!r} — expected one host address (/32 or /128)")
        addresses.append(iface.ip)
    return addresses


def parse_routes(text: str) -> list[IPNetwork]:
    """Networks with their prefixes, e.g. ``192.168.50.0/24``."""
    routes: list[IPNetwork] = []
    for item in _items(text):
        try:
            routes.append(ipaddress.ip_network(item))
        except ValueError:
            raise FieldError(
                "route",
                f"{item!r} — expected a network with its prefix, e.g. 192.168.50.0/24",
            ) from None
    return routes


def _parsed(field: str, parse: Callable[[str], T], text: str | None) -> T | None:
    if text is None:
        return None
    try:
        return parse(text)
    except PolicyError as e:
        raise FieldError(field, str(e)) from None


def policy_changes(texts: Mapping[str, str | None], now: datetime.datetime) -> dict[str, Any]:
    """The Policy fields that the LIMIT_FIELDS among ``texts`` set (other keys are the
    caller's); parsed in one go, so a bad one changes nothing."""
    changes: dict[str, Any] = {}
    if "expires" in texts:
        changes["expires"] = _parsed("expires", lambda t: parse_expires(t, now), texts["expires"])
    if "quota" in texts:
        changes["quota"] = _parsed("quota", parse_quota, texts["quota"])
    for field in ("rate_down", "rate_up"):
        if field in texts:
            changes[field] = _parsed(field, parse_rate, texts[field])
        elif "rate" in texts:
            changes[field] = _parsed("rate", parse_rate, texts["rate"])
    return changes


def new_policy(
    texts: Mapping[str, str | None], now: datetime.datetime, *, enabled: bool = True
) -> Policy:
    """A new peer's policy; its expiry must lie ahead."""
    changes = policy_changes(texts, now)
    expires = changes.get("expires")
    if expires is not None and expires <= now:
        raise FieldError(
            "expires",
            f"{texts['expires']!r} — {format_expires(expires)} is in the past; "
            "expected a moment after now",
        )
    return Policy(enabled=enabled, **changes)


@dataclasses.dataclass(frozen=True)
class NewPeerFields:
    name: str
    addresses: list[IPAddress]
    routes: list[IPNetwork]
    policy: Policy


def new_peer_fields(
    texts: Mapping[str, str | None], now: datetime.datetime, *, enabled: bool = True
) -> NewPeerFields:
    """A new peer's ``name``, ``address``, ``route`` and LIMIT_FIELDS, checked in that order."""
    name = texts.get("name")
    if name is None:
        raise FieldError("name", f"(not set) — required; {PEER_NAME_ALLOWED}")
    address, route = texts.get("address"), texts.get("route")
    return NewPeerFields(
        name=check_name(name),
        addresses=[] if address is None else parse_addresses(address),
        routes=[] if route is None else parse_routes(route),
        policy=new_policy(texts, now, enabled=enabled),
    )
