"""Address ranges handed to clients must not overlap."""

from collections.abc import Iterable

from trivpn.config.errors import InvalidValue, Problems
from trivpn.config.values import IPNetwork


def find_overlaps(networks: Iterable[tuple[str, IPNetwork]]) -> Problems:
    """Report every network that overlaps an earlier one, keyed by its own key path.

    For all address ranges handed to clients (pools, later WireGuard allowed_ips): an overlap
    would make the router's choice between two sessions arbitrary.
    """
    problems: Problems = []
    earlier: list[tuple[str, IPNetwork]] = []
    for key, net in networks:
        for other_key, other in earlier:
            if net.overlaps(other):  # False across address families
                problems.append((key, InvalidValue(net, f"overlaps {other_key} ({other})")))
                break
        earlier.append((key, net))
    return problems
