"""Interface addresses, MTU, state and routes over rtnetlink (pyroute2), never ``ip``.

Everything acts in the network namespace of the calling thread. Each call opens its own
short-lived netlink socket: these run at start-up and shutdown only, and a socket per call
cannot be left half-used by a cancelled caller.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Address,
    IPv6Interface,
    IPv6Network,
    ip_address,
)
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

_MAIN_TABLE = 254
_RTN_UNICAST = 1
_RT_SCOPE_LINK = 253
_RT_SCOPE_NOWHERE = 255  # in a delete request: match a route of any scope
_IFA_F_NODAD = 0x02
_IPV6_MIN_MTU = 1280


class LinkError(Exception):
    """A netlink request failed; the message names the interface or address involved."""


@contextmanager
def _netlink() -> Iterator[Any]:
    # groups=0: no multicast subscriptions, so no unread event backlog builds up.
    ipr = IPRoute(groups=0)
    try:
        yield ipr
    finally:
        ipr.close()


def _reason(exc: NetlinkError) -> str:
    return os.strerror(exc.code)


def _index(ipr: Any, name: str) -> int:
    try:
        found = ipr.link_lookup(ifname=name)
    except NetlinkError as exc:
        raise LinkError(f"cannot look up interface {name!r}: {_reason(exc)}") from exc
    if not found:
        raise LinkError(f"no interface named {name!r}")
    return int(found[0])


def _ifname(ipr: Any, index: int) -> str:
    links = ipr.get_links(index)
    if not links:
        raise LinkError(f"no interface with index {index}")
    return str(links[0].get("ifname"))


def _host_prefix(address: IPv4Address | IPv6Address) -> str:
    return f"{address}/{address.max_prefixlen}"


def link_exists(name: str) -> bool:
    with _netlink() as ipr:
        try:
            return bool(ipr.link_lookup(ifname=name))
        except NetlinkError:
            return False  # e.g. a name the kernel could never have (too long)


def link_kind(name: str) -> str | None:
    """What kind of device ``name`` is ("veth", "tun", "bridge"; "" for one without a kind,
    such as lo or a NIC), or None when there is no such device."""
    with _netlink() as ipr:
        try:
            found = ipr.link_lookup(ifname=name)
            links = ipr.get_links(found[0]) if found else []
        except NetlinkError:
            return None  # e.g. a name the kernel could never have
        if not links:
            return None
        info = links[0].get("IFLA_LINKINFO")
        kind = info.get("IFLA_INFO_KIND") if info else None
        return str(kind or "")


def configure_interface(
    name: str, addresses: Sequence[IPv4Interface | IPv6Interface], mtu: int
) -> None:
    """Set the MTU, add each address with its prefix, and bring the link up.

    Adding an address that is already there is not an error, so a restart is harmless.
    IPv6 addresses skip duplicate address detection: a TUN has no neighbours to ask, and
    waiting for DAD would only delay the tunnel's first packets.
    """
    with _netlink() as ipr:
        index = _index(ipr, name)
        try:
            ipr.link("set", index=index, mtu=mtu)
        except NetlinkError as exc:
            raise LinkError(f"cannot set MTU {mtu} on {name!r}: {_reason(exc)}") from exc
        for interface in addresses:
            _add_address(ipr, name, index, interface, mtu)
        try:
            ipr.link("set", index=index, state="up")
        except NetlinkError as exc:
            raise LinkError(f"cannot bring {name!r} up: {_reason(exc)}") from exc


def _add_address(
    ipr: Any, name: str, index: int, interface: IPv4Interface | IPv6Interface, mtu: int
) -> None:
    extra: dict[str, int] = {"flags": _IFA_F_NODAD} if interface.version == 6 else {}
    try:
        ipr.addr(
            "add",
            index=index,
            address=str(interface.ip),
            prefixlen=interface.network.prefixlen,
            **extra,
        )
    except NetlinkError as exc:
        if exc.code == errno.EEXIST:
            return
        hint = ""
        if interface.version == 6 and mtu < _IPV6_MIN_MTU:
            hint = f" (IPv6 needs an MTU of at least {_IPV6_MIN_MTU})"
        raise LinkError(f"cannot add {interface} to {name!r}: {_reason(exc)}{hint}") from exc


def add_route(name: str, network: IPv4Network | IPv6Network, *, metric: int | None = None) -> None:
    """Route ``network`` through the device ``name`` (main table, no gateway).

    An identical route already through this device is accepted as done; one through
    another device is an error rather than being silently taken over.
    """
    with _netlink() as ipr:
        index = _index(ipr, name)
        spec: dict[str, Any] = {"dst": str(network), "oif": index, "table": _MAIN_TABLE}
        if network.version == 4:
            spec["scope"] = _RT_SCOPE_LINK  # what `ip route add ... dev` picks: on-link
        if metric is not None:
            spec["priority"] = metric
        try:
            ipr.route("add", **spec)
        except NetlinkError as exc:
            if exc.code == errno.EEXIST and _has_route_via(ipr, network, index, metric):
                return
            raise LinkError(f"cannot route {network} via {name!r}: {_reason(exc)}") from exc


def _has_route_via(
    ipr: Any, network: IPv4Network | IPv6Network, index: int, metric: int | None
) -> bool:
    family = socket.AF_INET if network.version == 4 else socket.AF_INET6
    for route in ipr.route("dump", family=family):
        if (
            route.get("table") == _MAIN_TABLE
            and route["dst_len"] == network.prefixlen
            and _route_dst(route, network.version) == network.network_address
            and route.get("oif") == index
            and (metric is None or (route.get("priority") or 0) == metric)
        ):
            return True
    return False


def _route_dst(route: Any, version: int) -> IPv4Address | IPv6Address:
    dst = route.get("dst")
    if dst:
        return ip_address(dst)
    return IPv4Address(0) if version == 4 else IPv6Address(0)


def default_route_interface(family: int = socket.AF_INET) -> str | None:
    """The interface of the main table's default route (the lowest metric wins)."""
    with _netlink() as ipr:
        best: tuple[int, int] | None = None  # (metric, ifindex)
        for route in ipr.route("dump", family=family):
            if (
                route.get("table") != _MAIN_TABLE
                or route["dst_len"] != 0
                or route["type"] != _RTN_UNICAST
            ):
                continue
            index = _route_oif(route)
            metric = route.get("priority") or 0
            if index is not None and (best is None or metric < best[0]):
                best = (metric, index)
        return None if best is None else _ifname(ipr, best[1])


def _route_oif(route: Any) -> int | None:
    oif = route.get("oif")
    if oif:
        return int(oif)
    for hop in route.get("multipath") or ():  # ECMP: take the first next hop's device
        if hop.get("oif"):
            return int(hop["oif"])
    return None


def route_get(
    address: IPv4Address | IPv6Address,
) -> tuple[str, IPv4Address | IPv6Address | None]:
    """The (interface, gateway or None when on-link) the kernel would use for ``address``."""
    with _netlink() as ipr:
        try:
            answer = ipr.route("get", dst=str(address))
        except NetlinkError as exc:
            raise LinkError(f"no route to {address}: {_reason(exc)}") from exc
        route = answer[0]
        index = route.get("oif")
        if not index:
            raise LinkError(f"the route to {address} has no outgoing interface")
        return _ifname(ipr, int(index)), _gateway(route)


def _gateway(route: Any) -> IPv4Address | IPv6Address | None:
    gateway = route.get("gateway")
    if gateway:
        return ip_address(gateway)
    via = route.get("via")  # RTA_VIA: a gateway of the other family (IPv4 via IPv6)
    if isinstance(via, dict) and via.get("addr"):
        return ip_address(via["addr"])
    return None


def add_host_route(
    address: IPv4Address | IPv6Address,
    *,
    ifname: str,
    gateway: IPv4Address | IPv6Address | None = None,
) -> None:
    """Pin a /32 or /128 route to ``address`` through ``ifname`` (and ``gateway``).

    It replaces a route to the same host left by an earlier run, which is the point of a
    pin: the tunnel's endpoint must keep going out the physical interface.
    """
    with _netlink() as ipr:
        index = _index(ipr, ifname)
        spec: dict[str, Any] = {"dst": _host_prefix(address), "oif": index, "table": _MAIN_TABLE}
        if gateway is not None:
            spec["gateway"] = str(gateway)
        elif address.version == 4:
            spec["scope"] = _RT_SCOPE_LINK
        try:
            ipr.route("replace", **spec)
        except NetlinkError as exc:
            via = f" via {gateway}" if gateway is not None else ""
            raise LinkError(
                f"cannot pin a route to {address}{via} on {ifname!r}: {_reason(exc)}"
            ) from exc


def delete_host_route(address: IPv4Address | IPv6Address) -> None:
    """Remove the /32 or /128 route to ``address``; nothing to remove is fine."""
    with _netlink() as ipr:
        spec: dict[str, Any] = {"dst": _host_prefix(address), "table": _MAIN_TABLE}
        _delete_route(ipr, spec, address.version, f"the route to {address}")


def delete_route(name: str, network: IPv4Network | IPv6Network) -> None:
    """Remove the route to ``network`` through the device ``name`` (main table).

    A route already gone is fine, and so is a device already gone: its routes went with it.
    """
    with _netlink() as ipr:
        try:
            found = ipr.link_lookup(ifname=name)
        except NetlinkError as exc:
            raise LinkError(f"cannot look up interface {name!r}: {_reason(exc)}") from exc
        if not found:
            return
        spec: dict[str, Any] = {"dst": str(network), "oif": int(found[0]), "table": _MAIN_TABLE}
        _delete_route(ipr, spec, network.version, f"the route to {network} via {name!r}")


def _delete_route(ipr: IPRoute, spec: dict[str, Any], version: int, what: str) -> None:
    """Delete the route ``spec`` describes; a route already gone is fine."""
    if version == 4:
        spec = {**spec, "scope": _RT_SCOPE_NOWHERE}  # any scope, as `ip route del`: pyroute2 says 0
    try:
        ipr.route("del", **spec)
    except NetlinkError as exc:
        if exc.code in (errno.ESRCH, errno.ENOENT):
            return
        raise LinkError(f"cannot delete {what}: {_reason(exc)}") from exc
