"""Routes and interface set-up over netlink, in a namespace with a veth and default routes."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Address, IPv6Network
from typing import Any

import pytest
from support.netlab import Netns, veth

NsCall = Callable[..., dict[str, Any]]

pytestmark = pytest.mark.root

GATEWAY4 = IPv4Address("192.0.2.2")
GATEWAY6 = IPv6Address("2001:db8:1::2")  # the IPv6 documentation prefix stands in for TEST-NET


@pytest.fixture
def routed(make_netns: Callable[[str], Netns]) -> Netns:
    """host ns: up0 192.0.2.1/24 + 2001:db8:1::1/64, default routes via the peer ns."""
    host, peer = make_netns("tvlh"), make_netns("tvlp")
    veth(host, "up0", peer, "down0")
    host.run("ip", "addr", "add", "192.0.2.1/24", "dev", "up0")
    host.run("ip", "-6", "addr", "add", "2001:db8:1::1/64", "dev", "up0", "nodad")
    host.run("ip", "route", "add", "default", "via", str(GATEWAY4))
    host.run("ip", "-6", "route", "add", "default", "via", str(GATEWAY6))
    return host


def ip_json(ns: Netns, *args: str) -> Any:
    return json.loads(ns.run("ip", "-j", *args).stdout)


def test_default_route_interface(routed: Netns, netns: Netns, ns_call: NsCall) -> None:
    assert ns_call(routed, "link.default_route_interface") == {"ok": "up0"}
    assert ns_call(routed, "link.default_route_interface", socket.AF_INET6) == {"ok": "up0"}
    assert ns_call(netns, "link.default_route_interface") == {"ok": None}


def test_default_route_interface_prefers_the_lowest_metric(
    routed: Netns, make_netns: Callable[[str], Netns], ns_call: NsCall
) -> None:
    veth(routed, "up1", make_netns("tvlq"), "down1")
    routed.run("ip", "addr", "add", "198.51.100.1/24", "dev", "up1")
    routed.run("ip", "route", "del", "default")
    routed.run("ip", "route", "add", "default", "via", str(GATEWAY4), "metric", "10")
    routed.run("ip", "route", "add", "default", "via", "198.51.100.2", "metric", "5")
    assert ns_call(routed, "link.default_route_interface") == {"ok": "up1"}


def test_route_get(routed: Netns, ns_call: NsCall) -> None:
    assert ns_call(routed, "link.route_get", IPv4Address("203.0.113.5")) == {
        "ok": ["up0", "192.0.2.2"]
    }
    assert ns_call(routed, "link.route_get", IPv4Address("192.0.2.77")) == {"ok": ["up0", None]}
    assert ns_call(routed, "link.route_get", IPv6Address("2001:db8:99::1")) == {
        "ok": ["up0", "2001:db8:1::2"]
    }


def test_route_get_without_a_route(netns: Netns, ns_call: NsCall) -> None:
    outcome = ns_call(netns, "link.route_get", IPv4Address("203.0.113.5"))
    assert outcome == {
        "error": "LinkError",
        "message": "no route to 203.0.113.5: Network is unreachable",
    }


def test_host_route_pin_and_delete(routed: Netns, ns_call: NsCall) -> None:
    endpoint = IPv4Address("203.0.113.7")
    pin = ns_call(routed, "link.add_host_route", endpoint, ifname="up0", gateway=GATEWAY4)
    assert pin == {"ok": None}
    (route,) = ip_json(routed, "route", "show", "203.0.113.7/32")
    assert (route["dst"], route["dev"], route["gateway"]) == ("203.0.113.7", "up0", "192.0.2.2")
    # pinning again replaces rather than failing
    assert ns_call(routed, "link.add_host_route", endpoint, ifname="up0", gateway=GATEWAY4) == {
        "ok": None
    }
    assert len(ip_json(routed, "route", "show", "203.0.113.7/32")) == 1

    assert ns_call(routed, "link.delete_host_route", endpoint) == {"ok": None}
    assert ip_json(routed, "route", "show", "203.0.113.7/32") == []
    assert ns_call(routed, "link.delete_host_route", endpoint) == {"ok": None}


def test_host_route_on_link_and_ipv6(routed: Netns, ns_call: NsCall) -> None:
    assert ns_call(routed, "link.add_host_route", IPv4Address("192.0.2.9"), ifname="up0") == {
        "ok": None
    }
    (route,) = ip_json(routed, "route", "show", "192.0.2.9/32")
    assert route["dev"] == "up0"
    assert "gateway" not in route
    assert route["scope"] == "link"
    assert ns_call(routed, "link.delete_host_route", IPv4Address("192.0.2.9")) == {"ok": None}
    assert ip_json(routed, "route", "show", "192.0.2.9/32") == []  # a link-scope route goes too

    endpoint6 = IPv6Address("2001:db8:77::1")
    pin = ns_call(routed, "link.add_host_route", endpoint6, ifname="up0", gateway=GATEWAY6)
    assert pin == {"ok": None}
    (route6,) = ip_json(routed, "-6", "route", "show", "2001:db8:77::1/128")
    assert (route6["dev"], route6["gateway"]) == ("up0", "2001:db8:1::2")
    assert ns_call(routed, "link.delete_host_route", endpoint6) == {"ok": None}
    assert ip_json(routed, "-6", "route", "show", "2001:db8:77::1/128") == []


def test_host_route_on_a_missing_interface(routed: Netns, ns_call: NsCall) -> None:
    outcome = ns_call(routed, "link.add_host_route", IPv4Address("192.0.2.9"), ifname="nope0")
    assert outcome == {"error": "LinkError", "message": "no interface named 'nope0'"}


def test_add_route_via_device(routed: Netns, ns_call: NsCall) -> None:
    assert ns_call(routed, "link.add_route", "up0", IPv4Network("10.20.0.0/16"), metric=7) == {
        "ok": None
    }
    assert ns_call(routed, "link.add_route", "up0", IPv6Network("fd00:20::/48")) == {"ok": None}
    (route,) = ip_json(routed, "route", "show", "10.20.0.0/16")
    assert (route["dev"], route["metric"], route["scope"]) == ("up0", 7, "link")
    (route6,) = ip_json(routed, "-6", "route", "show", "fd00:20::/48")
    assert route6["dev"] == "up0"
    # the same route again is already done, not an error
    assert ns_call(routed, "link.add_route", "up0", IPv4Network("10.20.0.0/16"), metric=7) == {
        "ok": None
    }
    assert len(ip_json(routed, "route", "show", "10.20.0.0/16")) == 1


def test_add_route_refuses_to_take_over_another_devices_route(
    routed: Netns, ns_call: NsCall
) -> None:
    routed.run("ip", "route", "add", "10.30.0.0/16", "dev", "lo")
    outcome = ns_call(routed, "link.add_route", "up0", IPv4Network("10.30.0.0/16"))
    assert outcome == {
        "error": "LinkError",
        "message": "cannot route 10.30.0.0/16 via 'up0': File exists",
    }


def test_configure_interface_and_link_exists(routed: Netns, ns_call: NsCall) -> None:
    routed.run("ip", "link", "set", "up0", "down")
    addresses = [IPv4Interface("10.9.0.1/24"), IPv4Interface("10.9.1.1/24")]
    assert ns_call(routed, "link.configure_interface", "up0", addresses, 1420) == {"ok": None}
    # again: addresses already present are fine
    assert ns_call(routed, "link.configure_interface", "up0", addresses, 1420) == {"ok": None}
    (link,) = ip_json(routed, "addr", "show", "dev", "up0")
    assert link["mtu"] == 1420
    assert "UP" in link["flags"]
    assert {"10.9.0.1", "10.9.1.1"} <= {a["local"] for a in link["addr_info"]}
    assert ns_call(routed, "link.link_exists", "up0") == {"ok": True}
    assert ns_call(routed, "link.link_exists", "nope0") == {"ok": False}
    assert ns_call(routed, "link.link_exists", "x" * 40) == {"ok": False}


def test_configure_interface_errors_name_what_failed(routed: Netns, ns_call: NsCall) -> None:
    assert ns_call(routed, "link.configure_interface", "nope0", [], 1400) == {
        "error": "LinkError",
        "message": "no interface named 'nope0'",
    }
    assert ns_call(routed, "link.configure_interface", "up0", [], 40) == {
        "error": "LinkError",
        "message": "cannot set MTU 40 on 'up0': Invalid argument",
    }
