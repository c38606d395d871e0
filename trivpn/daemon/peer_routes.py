"""Kernel routes for the networks of WireGuard peers (a site's LAN behind a peer).

The kernel hands a packet to the TUN only if one of its routes says so. The interface's own
subnets are connected routes already; every other network routed to a peer (its allowed_ips)
needs a route through the TUN, as wg-quick adds one per allowed-ip. ``KernelRoutes`` keeps
those routes in step with the WireGuard front while the server runs. Two kinds are never
added, as they would take the server's own traffic into the tunnel: a default route, and a
network that holds a peer's endpoint (the tunnel's datagrams to that peer would loop back into
the tunnel: `0.0.0.0/1` given to a server-side peer would cut every client off).

The same networks fill the routed sets of trivpn's nftables table (trivpn.net.nft), so that a
site's LAN reaches the outside through the server, masqueraded, as the tunnel subnets do.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import NamedTuple, Protocol

import trio

from trivpn.config import IPAddress, IPNetwork, by_version
from trivpn.dataplane.loglimit import LogLimiter
from trivpn.net import link, nft

log = logging.getLogger("trivpn")

# Changes within this window (a reload, a registry sync, a `wg syncconf`) make one sync.
SETTLE_SECONDS = 0.05
FAILURE_LOG_INTERVAL = 60.0

RouteFunction = Callable[[str, IPNetwork], None]
SetFunction = Callable[[frozenset[IPNetwork]], None]
ThreadRunner = Callable[[Callable[[], None]], Awaitable[object]]


class RoutePlan(NamedTuple):
    routes: frozenset[IPNetwork]  # the kernel routes wanted through the TUN
    defaults: frozenset[IPNetwork]  # default routes left out: inside the tunnel only
    capturing: frozenset[IPNetwork] = frozenset()  # left out: they hold a peer's endpoint


def plan_routes(
    routed: Iterable[IPNetwork],
    subnets: Iterable[IPNetwork],
    endpoints: Iterable[IPAddress] = (),
) -> RoutePlan:
    """The kernel routes that ``routed`` networks need beside the connected ``subnets``,
    less those that would capture the tunnel's own datagrams to the peers' ``endpoints``."""
    subnets = tuple(subnets)
    endpoints = tuple(endpoints)
    routes: set[IPNetwork] = set()
    defaults: set[IPNetwork] = set()
    capturing: set[IPNetwork] = set()
    for network in routed:
        if network.prefixlen == 0:
            defaults.add(network)
        elif any(_inside(network, subnet) for subnet in subnets):
            continue
        elif any(address in network for address in endpoints):
            capturing.add(network)
        else:
            routes.add(network)
    return RoutePlan(frozenset(routes), frozenset(defaults), frozenset(capturing))


def _inside(network: IPNetwork, subnet: IPNetwork) -> bool:
    if network.version != subnet.version:
        return False
    return network.subnet_of(subnet)  # type: ignore[arg-type]  # same version, checked above


class RoutedFront(Protocol):
    """What KernelRoutes needs of the WireGuard front."""

    on_routes_change: Callable[[], None] | None

    def routed_networks(self) -> frozenset[IPNetwork]: ...

    def peer_endpoints(self) -> frozenset[IPAddress]: ...


class KernelRoutes:
    """Keeps a route through ``ifname`` for each of ``front``'s networks outside ``subnets``.

    ``add_route``, ``delete_route`` and ``run_in_thread`` are the netlink edge (tests fake it).
    A route that fails is logged and tried again at the next change; the server goes on.
    """

    def __init__(
        self,
        ifname: str,
        subnets: Iterable[IPNetwork],
        front: RoutedFront,
        *,
        add_route: RouteFunction = link.add_route,
        delete_route: RouteFunction = link.delete_route,
        set_routed: SetFunction = nft.set_routed_networks,
        run_in_thread: ThreadRunner = trio.to_thread.run_sync,
    ) -> None:
        self.ifname = ifname
        self.subnets = tuple(subnets)
        self.front = front
        self.installed: set[IPNetwork] = set()  # routes this task added and did not delete
        self._add = add_route
        self._delete = delete_route
        self._set_routed = set_routed
        self.in_nft: frozenset[IPNetwork] = frozenset()  # what the routed sets hold
        self._run_in_thread = run_in_thread
        self._dirty = trio.Event()
        self._warned: set[IPNetwork] = set()
        self._limiter = LogLimiter(log, FAILURE_LOG_INTERVAL)

    def _mark_dirty(self) -> None:
        # Called by the front in the middle of its changes: no I/O, no blocking, just a flag.
        self._dirty.set()

    async def run(self) -> None:
        """Sync at once (the front has its start-up peers), then after each burst of changes.

        Cancellation removes nothing: routes through the TUN go with the device.
        """
        self.front.on_routes_change = self._mark_dirty
        self._dirty.set()
        try:
            while True:
                await self._dirty.wait()
                await trio.sleep(SETTLE_SECONDS)
                self._dirty = trio.Event()  # a change from now on asks for another sync
                await self.sync()
        finally:
            if self.front.on_routes_change == self._mark_dirty:
                self.front.on_routes_change = None

    async def sync(self) -> None:
        """Add the routes wanted and not installed; delete those installed and not wanted."""
        front = self.front
        plan = plan_routes(front.routed_networks(), self.subnets, front.peer_endpoints())
        self._warn_left_out(
            plan.defaults,
            "; trivpn adds no default route to {ifname}, which would take the server's own traffic",
        )
        self._warn_left_out(
            plan.capturing,
            ": it holds a peer's endpoint, and a route to it through {ifname} would loop the "
            "tunnel's own datagrams",
        )
        to_delete = sorted(self.installed - plan.routes, key=by_version)
        to_add = sorted(plan.routes - self.installed, key=by_version)
        sets_due = plan.routes != self.in_nft
        if not to_delete and not to_add and not sets_due:
            return
        failures: list[tuple[str, IPNetwork, Exception]] = []
        nft_failure: list[Exception] = []

        def apply() -> None:
            # In a worker thread, as netlink blocks; it touches only these lists.
            for action, func, networks in (
                ("delete", self._delete, to_delete),
                ("add", self._add, to_add),
            ):
                for network in networks:
                    try:
                        func(self.ifname, network)
                    except Exception as exc:  # one route's failure is not fatal
                        failures.append((action, network, exc))
            if sets_due:
                try:
                    self._set_routed(plan.routes)
                except Exception as exc:
                    nft_failure.append(exc)

        await self._run_in_thread(apply)
        self._record(to_delete, to_add, failures)
        if sets_due and not nft_failure:
            self.in_nft = plan.routes
        for exc in nft_failure:
            self._limiter.warning(
                "nft",
                trio.current_time(),
                "nftables: cannot set the routed peer networks (tried again at the next peer "
                "change): %s",
                exc,
            )

    def _record(
        self,
        deleted: list[IPNetwork],
        added: list[IPNetwork],
        failures: list[tuple[str, IPNetwork, Exception]],
    ) -> None:
        failed = {(action, network) for action, network, _ in failures}
        for network in deleted:
            if ("delete", network) not in failed:
                self.installed.discard(network)
                log.info("kernel route: %s via %s removed", network, self.ifname)
        for network in added:
            if ("add", network) not in failed:
                self.installed.add(network)
                log.info("kernel route: %s via %s added", network, self.ifname)
        now = trio.current_time()
        for action, network, exc in failures:
            self._limiter.warning(
                f"{action} {network}",
                now,
                "kernel route: cannot %s %s via %s (tried again at the next peer change): %s",
                action,
                network,
                self.ifname,
                exc,
            )

    def _warn_left_out(self, networks: frozenset[IPNetwork], why: str) -> None:
        """Once per network: it is routed to its peer, but not by the kernel into the TUN."""
        for network in sorted(networks - self._warned, key=by_version):
            self._warned.add(network)
            log.warning(
                "kernel route: %s is routed to a peer inside the tunnel only%s",
                network,
                why.format(ifname=self.ifname),
            )
