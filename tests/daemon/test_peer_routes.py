"""trivpn.daemon.peer_routes: the routes wanted, and the task keeping them, with a fake netlink."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import AsyncIterator, Callable

import pytest
import trio
import trio.testing

from trivpn.config import IPAddress, IPNetwork
from trivpn.daemon.peer_routes import KernelRoutes, plan_routes

net = ipaddress.ip_network
SUBNETS = (net("10.8.0.0/24"), net("fd00:8::/64"))
IFNAME = "tvr0"


def nets(*texts: str) -> frozenset[IPNetwork]:
    return frozenset(net(t) for t in texts)


# -- the pure function -----------------------------------------------------------------------


def test_networks_inside_an_interface_subnet_need_no_route() -> None:
    plan = plan_routes(nets("10.8.0.2/32", "10.8.0.128/25", "10.8.0.0/24"), SUBNETS)
    assert plan.routes == frozenset() and plan.defaults == frozenset()


def test_networks_outside_the_subnets_are_routed_nested_ones_too() -> None:
    routed = nets("10.8.0.2/32", "192.168.50.0/24", "192.168.0.0/16", "10.0.0.0/8", "10.9.0.5/32")
    plan = plan_routes(routed, SUBNETS)
    # 10.0.0.0/8 holds the /24 subnet: it needs a route (the connected /24 stays more specific).
    assert plan.routes == nets("192.168.50.0/24", "192.168.0.0/16", "10.0.0.0/8", "10.9.0.5/32")


def test_ipv6_networks_are_planned_by_their_own_subnets() -> None:
    routed = nets("fd00:8::2/128", "fd00:50::/64", "fd00::/16", "::ffff:10.8.0.2/128")
    plan = plan_routes(routed, SUBNETS)
    assert plan.routes == nets("fd00:50::/64", "fd00::/16", "::ffff:10.8.0.2/128")
    only_v4 = plan_routes(nets("fd00:8::2/128"), (net("10.8.0.0/24"),))
    assert only_v4.routes == nets("fd00:8::2/128")


def test_default_routes_are_never_planned() -> None:
    plan = plan_routes(nets("0.0.0.0/0", "::/0", "0.0.0.0/1", "10.8.0.2/32"), SUBNETS)
    assert plan.routes == nets("0.0.0.0/1")
    assert plan.defaults == nets("0.0.0.0/0", "::/0")


def test_a_network_holding_a_peer_endpoint_is_never_planned() -> None:
    # `wg set … allowed-ips 0.0.0.0/1` on a server-side peer: routed in the kernel, it would
    # take the datagrams to every client into the tunnel
    endpoints = (ipaddress.ip_address("198.51.100.2"), ipaddress.ip_address("2001:db8::9"))
    routed = nets("0.0.0.0/1", "128.0.0.0/1", "192.168.50.0/24", "2001:db8::/32", "fd50::/64")
    plan = plan_routes(routed, SUBNETS, endpoints)
    assert plan.routes == nets("0.0.0.0/1", "192.168.50.0/24", "fd50::/64")
    assert plan.capturing == nets("128.0.0.0/1", "2001:db8::/32")


# -- the task --------------------------------------------------------------------------------


class FakeFront:
    """The two things KernelRoutes uses of WireGuardFront."""

    def __init__(self, *networks: str) -> None:
        self.networks = nets(*networks)
        self.endpoints: frozenset[IPAddress] = frozenset()
        self.on_routes_change: Callable[[], None] | None = None

    def routed_networks(self) -> frozenset[IPNetwork]:
        return self.networks

    def peer_endpoints(self) -> frozenset[IPAddress]:
        return self.endpoints

    def set(self, *networks: str) -> None:
        self.networks = nets(*networks)
        if self.on_routes_change is not None:
            self.on_routes_change()


class FakeNetlink:
    """add/delete recorded as calls; a network in ``failing`` raises, as netlink would."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, IPNetwork]] = []
        self.failing: set[IPNetwork] = set()
        self.sets: list[frozenset[IPNetwork]] = []  # what the nft routed sets were set to
        self.nft_failing = False
        self.syncs = 0

    def set_routed(self, networks: frozenset[IPNetwork]) -> None:
        self.sets.append(networks)
        if self.nft_failing:
            raise OSError("no table inet trivpn")

    def add(self, ifname: str, network: IPNetwork) -> None:
        self._call("add", ifname, network)

    def delete(self, ifname: str, network: IPNetwork) -> None:
        self._call("delete", ifname, network)

    def _call(self, action: str, ifname: str, network: IPNetwork) -> None:
        self.calls.append((action, ifname, network))
        if network in self.failing:
            raise OSError(f"cannot {action} {network}")

    async def run_in_thread(self, func: Callable[[], None]) -> None:
        # Inline rather than in a real thread: MockClock must not jump past the work.
        self.syncs += 1
        await trio.lowlevel.checkpoint()
        func()

    def take(self) -> list[tuple[str, str]]:
        calls = [(action, str(network)) for action, _, network in self.calls]
        self.calls.clear()
        return calls


@pytest.fixture
def netlink() -> FakeNetlink:
    return FakeNetlink()


def routes_of(front: FakeFront, netlink: FakeNetlink) -> KernelRoutes:
    return KernelRoutes(
        IFNAME,
        SUBNETS,
        front,
        add_route=netlink.add,
        delete_route=netlink.delete,
        set_routed=netlink.set_routed,
        run_in_thread=netlink.run_in_thread,
    )


@pytest.fixture
async def running(
    nursery: trio.Nursery, netlink: FakeNetlink
) -> AsyncIterator[tuple[FakeFront, KernelRoutes]]:
    front = FakeFront("10.8.0.2/32", "192.168.50.0/24")
    task = routes_of(front, netlink)
    nursery.start_soon(task.run)
    await trio.sleep(1)
    yield front, task


async def test_start_up_routes_the_fronts_networks_once(
    autojump_clock: trio.testing.MockClock,
    netlink: FakeNetlink,
    running: tuple[FakeFront, KernelRoutes],
) -> None:
    front, task = running
    assert netlink.take() == [("add", "192.168.50.0/24")]
    assert netlink.syncs == 1
    assert task.installed == nets("192.168.50.0/24")
    assert front.on_routes_change is not None
    await trio.sleep(10)
    assert netlink.syncs == 1  # nothing changed: no netlink at all


async def test_a_burst_of_changes_makes_one_sync(
    autojump_clock: trio.testing.MockClock,
    netlink: FakeNetlink,
    running: tuple[FakeFront, KernelRoutes],
) -> None:
    front, task = running
    netlink.take()
    front.set("10.8.0.2/32", "192.168.50.0/24", "192.168.60.0/24")
    front.set("10.8.0.2/32", "192.168.50.0/24", "192.168.60.0/24", "fd00:60::/64")
    await trio.sleep(0.01)  # still one moment: a registry sync awaits in between
    front.set("10.8.0.2/32", "192.168.50.0/24", "192.168.60.0/24", "fd00:60::/64", "10.7.0.0/16")
    await trio.sleep(1)
    assert netlink.syncs == 2
    added = [("add", "10.7.0.0/16"), ("add", "192.168.60.0/24"), ("add", "fd00:60::/64")]
    assert netlink.take() == added
    assert task.installed == nets(
        "192.168.50.0/24", "10.7.0.0/16", "192.168.60.0/24", "fd00:60::/64"
    )


async def test_a_network_that_left_is_deleted(
    autojump_clock: trio.testing.MockClock,
    netlink: FakeNetlink,
    running: tuple[FakeFront, KernelRoutes],
) -> None:
    front, task = running
    netlink.take()
    front.set("10.8.0.2/32", "192.168.51.0/24")  # replaced, as a `wg set … allowed-ips` does
    await trio.sleep(1)
    assert netlink.take() == [("delete", "192.168.50.0/24"), ("add", "192.168.51.0/24")]
    assert all(ifname == IFNAME for _, ifname, _ in netlink.calls)
    front.set()  # the peer removed
    await trio.sleep(1)
    assert netlink.take() == [("delete", "192.168.51.0/24")]
    assert task.installed == frozenset()


async def test_a_failure_is_logged_once_and_retried_at_the_next_change(
    autojump_clock: trio.testing.MockClock,
    netlink: FakeNetlink,
    running: tuple[FakeFront, KernelRoutes],
    caplog: pytest.LogCaptureFixture,
) -> None:
    front, task = running
    netlink.take()
    netlink.failing = {net("192.168.60.0/24"), net("192.168.50.0/24")}
    front.set("10.8.0.2/32", "192.168.60.0/24", "192.168.61.0/24")
    with caplog.at_level(logging.WARNING, logger="trivpn"):
        await trio.sleep(1)
    assert netlink.take() == [
        ("delete", "192.168.50.0/24"),
        ("add", "192.168.60.0/24"),
        ("add", "192.168.61.0/24"),
    ]
    # The failed delete stays installed and the failed add is not: both are tried again.
    assert task.installed == nets("192.168.50.0/24", "192.168.61.0/24")
    failures = [r.getMessage() for r in caplog.records if "kernel route: cannot" in r.message]
    assert len(failures) == 2 and "192.168.60.0/24 via tvr0" in " ".join(failures)

    caplog.clear()
    front.set("10.8.0.2/32", "192.168.60.0/24", "192.168.61.0/24", "10.8.0.3/32")
    with caplog.at_level(logging.WARNING, logger="trivpn"):
        await trio.sleep(1)
    assert netlink.take() == [("delete", "192.168.50.0/24"), ("add", "192.168.60.0/24")]
    assert not [r for r in caplog.records if "kernel route" in r.message]  # rate-limited

    netlink.failing.clear()
    front.set("10.8.0.2/32", "192.168.60.0/24", "192.168.61.0/24")
    await trio.sleep(1)
    assert netlink.take() == [("delete", "192.168.50.0/24"), ("add", "192.168.60.0/24")]
    assert task.installed == nets("192.168.60.0/24", "192.168.61.0/24")


async def test_a_default_route_is_warned_about_once_and_never_added(
    autojump_clock: trio.testing.MockClock,
    netlink: FakeNetlink,
    running: tuple[FakeFront, KernelRoutes],
    caplog: pytest.LogCaptureFixture,
) -> None:
    front, task = running
    netlink.take()
    with caplog.at_level(logging.WARNING, logger="trivpn"):
        front.set("10.8.0.2/32", "192.168.50.0/24", "0.0.0.0/0")
        await trio.sleep(1)
        front.set("10.8.0.2/32", "0.0.0.0/0", "10.8.0.3/32")
        await trio.sleep(1)
    warnings = [r.getMessage() for r in caplog.records if "tunnel only" in r.message]
    assert len(warnings) == 1 and "0.0.0.0/0" in warnings[0]
    assert netlink.take() == [("delete", "192.168.50.0/24")]
    assert task.installed == frozenset()


async def test_cancelled_it_removes_nothing_and_lets_go_of_the_front(
    autojump_clock: trio.testing.MockClock, netlink: FakeNetlink
) -> None:
    front = FakeFront("192.168.50.0/24")
    task = routes_of(front, netlink)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(task.run)
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert netlink.take() == [("add", "192.168.50.0/24")]
    assert front.on_routes_change is None
    front.set("192.168.51.0/24")  # no task to tell: nothing happens
    assert netlink.calls == []


async def test_a_route_that_comes_to_hold_a_peer_endpoint_is_deleted_and_named(
    autojump_clock: trio.testing.MockClock,
    netlink: FakeNetlink,
    running: tuple[FakeFront, KernelRoutes],
    caplog: pytest.LogCaptureFixture,
) -> None:
    front, task = running
    netlink.take()
    front.endpoints = frozenset({ipaddress.ip_address("192.168.50.7")})  # a peer roamed there
    with caplog.at_level(logging.WARNING, logger="trivpn"):
        front.set("10.8.0.2/32", "192.168.50.0/24")  # the front reports the endpoint change
        await trio.sleep(1)
    assert netlink.take() == [("delete", "192.168.50.0/24")]
    assert task.installed == frozenset()
    assert "192.168.50.0/24 is routed to a peer inside the tunnel only: it holds" in caplog.text


async def test_the_nft_routed_sets_follow_and_a_failure_is_retried(
    autojump_clock: trio.testing.MockClock,
    netlink: FakeNetlink,
    running: tuple[FakeFront, KernelRoutes],
) -> None:
    front, task = running
    assert netlink.sets == [nets("192.168.50.0/24")] and task.in_nft == nets("192.168.50.0/24")
    netlink.nft_failing = True
    front.set("10.8.0.2/32", "192.168.50.0/24", "10.7.0.0/16")
    await trio.sleep(1)
    assert task.in_nft == nets("192.168.50.0/24")  # not applied: asked again next time
    netlink.nft_failing = False
    front.set("10.8.0.2/32", "192.168.50.0/24", "10.7.0.0/16", "10.8.0.3/32")  # same routes
    await trio.sleep(1)
    assert netlink.sets[-1] == nets("192.168.50.0/24", "10.7.0.0/16") == task.in_nft
    calls = len(netlink.sets)
    front.set("10.8.0.2/32", "192.168.50.0/24", "10.7.0.0/16")  # routes as they are
    await trio.sleep(1)
    assert len(netlink.sets) == calls
