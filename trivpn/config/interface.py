"""[interface]: the TUN device."""

import ipaddress

import attrs

from trivpn.config.checks import check_addresses, check_ifname, check_mtu
from trivpn.config.errors import InvalidValue, Problems
from trivpn.config.fields import checked
from trivpn.config.values import IPInterface, IPNetwork


@attrs.frozen(kw_only=True)
class InterfaceConfig:
    """The TUN device; its addresses' subnets are the VPN."""

    name: str = attrs.field(default="trivpn0", metadata=checked(check_ifname))
    address: tuple[IPInterface, ...] = attrs.field(
        default=(ipaddress.IPv4Interface("10.8.0.1/24"),), metadata=checked(check_addresses)
    )
    mtu: int = attrs.field(default=1420, metadata=checked(check_mtu))

    @property
    def subnets(self) -> tuple[IPNetwork, ...]:
        return tuple(dict.fromkeys(a.network for a in self.address))


def interface_problems(iface: InterfaceConfig) -> Problems:
    if iface.mtu < 1280 and any(a.version == 6 for a in iface.address):
        return [("mtu", InvalidValue(iface.mtu, "expected 1280 or more with an IPv6 address"))]
    return []
