"""Which address ranges may share addresses, and which may not.

- Ranges handed out dynamically (the ToyVPN pool) overlap nothing else: a WireGuard route
  inside the pool would take a client's address, one around it would let a peer send from an
  address the pool has not handed out.
- WireGuard allowed_ips are a routing table, as in every WireGuard: a network belongs to one
  peer (the same network twice is refused), but networks may nest (10.0.0.0/8 on a gateway
  peer, 10.1.0.0/16 on another); the longest prefix decides, for routing and for the check
  of a decrypted packet's source alike.
"""

from collections.abc import Iterable, Sequence

from trivpn.config.errors import InvalidValue, Problems
from trivpn.config.values import IPNetwork


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
