"""The NAT's egress interface, as `serve` uses it and `check` checks it."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from trivpn.daemon.errors import ServerError

if TYPE_CHECKING:
    from trivpn.config import Config


def resolve_egress(cfg: Config) -> str:
    """The egress interface name, resolving "auto" through the default route."""
    if cfg.nat.egress != "auto":
        return cfg.nat.egress
    from trivpn.net import link  # here: pyroute2 only to ask the kernel (issue 13)

    families = {net.version for net in cfg.interface.subnets}
    for family in (socket.AF_INET, socket.AF_INET6):
        if (4 if family == socket.AF_INET else 6) not in families:
            continue
        name = link.default_route_interface(family)
        if name:
            return name
    raise ServerError(
        "nat.egress: 'auto' — there is no default route to take the interface from; "
        "name the egress interface"
    )
