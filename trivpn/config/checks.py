"""Checks shared by the sections: value checks, run on a key right after it is structured (each
raises InvalidValue), and the overlap rules for address ranges."""

import ipaddress
import math
from collections.abc import Iterable, Sequence
from typing import Final

from trivpn.config.errors import InvalidValue, Problems
from trivpn.config.values import Endpoint, IPAddress, IPInterface, IPNetwork
from trivpn.proto.peer_fields import PEER_NAME, PEER_NAME_ALLOWED

_IFNAMSIZ: Final = 16  # Linux interface names: 15 bytes plus the terminating NUL


def check_ifname(name: str) -> None:
    # the kernel's dev_valid_name(), so the error comes from us rather than from an ioctl
    if (
        not name
        or len(name.encode()) >= _IFNAMSIZ
        or name in (".", "..")
        or any(c in "/:\0" or c.isspace() for c in name)
    ):
        raise InvalidValue(
            name, "expected 1 to 15 characters without '/', ':' or whitespace, not '.' or '..'"
        )


def check_egress(name: str) -> None:
    if name != "auto":
        try:
            check_ifname(name)
        except InvalidValue:
            raise InvalidValue(
                name, 'expected an interface name or "auto" (the default route\'s interface)'
            ) from None


def check_mtu(mtu: int) -> None:
    if not 576 <= mtu <= 9000:
        raise InvalidValue(mtu, "expected 576 to 9000 (1280 or more with an IPv6 address)")


def check_addresses(addresses: tuple[IPInterface, ...]) -> None:
    if not addresses:
        raise InvalidValue(addresses, 'expected at least one address, e.g. ["10.8.0.1/24"]')
    seen: set[IPAddress] = set()
    for a in addresses:
        if a.ip in seen:
            raise InvalidValue(addresses, f"duplicate address {a.ip}; list each address once")
        seen.add(a.ip)


def check_seconds(seconds: float) -> None:
    if math.isinf(seconds):  # the config's numbers are finite already; the CLI's may not be
        raise InvalidValue(seconds, "expected a finite number of seconds greater than 0")
    if not seconds > 0:  # nan too
        raise InvalidValue(seconds, "expected a number of seconds greater than 0")


def check_search_domain(domain: str) -> None:
    # ToyVPN sends its parameters as ASCII, separated by spaces and commas
    fits = all(c.isascii() and c.isprintable() and c not in " ," for c in domain)
    if not fits or len(domain) > 253:
        raise InvalidValue(domain, "expected an ASCII domain name without spaces or commas, or ''")


# Peer names, in the TOML file and in the peer registry alike (and the CLI and web API:
# trivpn.proto.peer_fields owns the rule).


def check_peer_name(name: str) -> None:
    if not PEER_NAME.fullmatch(name):
        raise InvalidValue(name, PEER_NAME_ALLOWED)


def check_persistent_keepalive(seconds: int | None) -> None:
    if seconds is not None and not 1 <= seconds <= 65535:
        raise InvalidValue(seconds, "expected 1 to 65535 seconds; leave the key out for none")


def check_rate(rate: float) -> None:
    if not rate > 0:
        raise InvalidValue(rate, "expected a number of messages per second greater than 0")


def check_client_allowed_ips(networks: tuple[IPNetwork, ...]) -> None:
    if not networks:
        raise InvalidValue(networks, 'expected at least one network, e.g. ["0.0.0.0/0", "::/0"]')


def check_peer_endpoint(endpoint: Endpoint) -> None:
    if ipaddress.ip_address(endpoint.host).is_unspecified:
        raise InvalidValue(endpoint, "expected the peer's own address, not a wildcard")


def check_fwmark(mark: int) -> None:
    if not 0 <= mark <= 0xFFFFFFFF:
        raise InvalidValue(mark, "expected 0 (none) to 4294967295 (0xffffffff)")


# --- overlaps: which address ranges may share addresses, and which may not -----------------
# - Ranges handed out dynamically (the ToyVPN pool) overlap nothing else: a WireGuard route
#   inside the pool would take a client's address, one around it would let a peer send from an
#   address the pool has not handed out.
# - WireGuard allowed_ips are a routing table, as in every WireGuard: a network belongs to one
#   peer (the same network twice is refused), but networks may nest (10.0.0.0/8 on a gateway
#   peer, 10.1.0.0/16 on another); the longest prefix decides, for routing and for the check
#   of a decrypted packet's source alike.


def find_overlaps(
    networks: Iterable[tuple[str, IPNetwork]],
    against: Sequence[tuple[str, IPNetwork]] | None = None,
) -> Problems:
    """Report every network that overlaps one of ``against``, or without it an earlier one
    of its own list; keyed by its own key path."""
    problems: Problems = []
    seen = list(against or ())
    for key, net in networks:
        for other_key, other in seen:
            if net.overlaps(other):  # False across address families
                problems.append((key, InvalidValue(net, f"overlaps {other_key} ({other})")))
                break
        if against is None:
            seen.append((key, net))
    return problems


def find_duplicates(networks: Iterable[tuple[str, IPNetwork]]) -> Problems:
    """Report every network listed before, under another key: one owner per network."""
    problems: Problems = []
    first: dict[IPNetwork, str] = {}
    for key, net in networks:
        owner = first.setdefault(net, key)
        if owner != key:
            why = f"also {owner}; a network is routed to one peer (nested ones may differ)"
            problems.append((key, InvalidValue(net, why)))
    return problems
