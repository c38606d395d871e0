"""The trio server: one nursery that owns every task, cancellation as the only shutdown path.

Tasks: the signal watcher; the nftables manager (table + forwarding sysctls, removed on the
way out); the data plane (trivpn/dataplane/: the TUN reader, which dispatches by destination
through the router; one receiver per UDP listener; per-session timer tasks for ToyVPN, one
timer task for all WireGuard peers); the status, UAPI and metrics sockets, each supervised
(trivpn/control/supervise.py): their failure is logged and they restart, the tunnel runs on;
so is the web admin ([web] listen), with the traffic samples behind its charts.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import gc
import logging
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import trio

from trivpn.config import Config, Endpoint, WebConfig
from trivpn.control import metrics, status_socket
from trivpn.control.supervise import supervise
from trivpn.control.uapi_server import serve_uapi
from trivpn.control.web.admin import Admin
from trivpn.control.web.app import create_app
from trivpn.control.web.credentials import WebCredentials
from trivpn.control.web.serve import no_login_warning, plain_http_warning, serve_web
from trivpn.control.web.traffic import TrafficSamples
from trivpn.daemon.egress import resolve_egress
from trivpn.daemon.errors import ServerError
from trivpn.daemon.keyfile import server_private_key
from trivpn.daemon.peer_routes import KernelRoutes
from trivpn.daemon.reload import reload_config
from trivpn.dataplane import data_thread
from trivpn.dataplane.data_thread import DataThread
from trivpn.dataplane.router import RouteOwner, Router
from trivpn.dataplane.toyvpn import SessionRoute, ToyVpnFront
from trivpn.dataplane.tun_reader import TunReader
from trivpn.dataplane.wireguard.front import WireGuardFront
from trivpn.dataplane.wireguard.policy import PendingUsage
from trivpn.net import link, nft, sysctl, udp
from trivpn.net.tun import Tun
from trivpn.proto import toyvpn
from trivpn.registry.fleet import FleetKeeper, session_store_opener
from trivpn.registry.store import AddressPlan
from trivpn.registry.sync import PeerSync, poll_interval, registry_opener
from trivpn.registry.usage_sync import UsageKeeper

log = logging.getLogger("trivpn")

CLEANUP_SECONDS = 5.0


def _listen(key: str, endpoint: Endpoint) -> udp.DatagramSocket:
    try:
        return udp.open_listener(endpoint)
    except OSError as e:
        raise ServerError(f"{key}: cannot listen on {endpoint}: {e.strerror}") from e


def _set_fwmark(sock: udp.DatagramSocket, mark: int) -> None:
    if not mark:
        return
    try:
        sock.set_mark(mark)
    except OSError as e:
        raise ServerError(f"wireguard.fwmark: cannot set {mark:#x}: {e.strerror}") from e


class Server:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.router: Router[RouteOwner] = Router()
        self.counters: collections.Counter[str] = collections.Counter()
        self.egress = ""
        self.toyvpn: toyvpn.ToyVpnServer | None = None
        self.wireguard: WireGuardFront | None = None
        self.peersync: PeerSync | None = None  # the registry's peers in the WireGuard front
        self.usage: UsageKeeper[PendingUsage] | None = None  # usage kept in the registry
        self.fleet: FleetKeeper | None = None  # a fleet's gateway: where the others see peers
        self.started = time.time()  # wall clock at start (the web admin's uptime)
        # Every UDP listener, for its udp_send_dropped count: a `wg set listen-port` moves the
        # WireGuard one to a new OS socket inside the same object, so the count carries on.
        self._sockets: list[udp.DatagramSocket] = []

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled (SIGINT/SIGTERM cancel it), releasing all on the way out."""
        cfg = self.cfg
        self.egress = resolve_egress(cfg) if cfg.nat.masquerade else cfg.nat.egress
        if cfg.nat.masquerade and not link.link_exists(self.egress):
            log.warning("egress interface %s does not exist (yet)", self.egress)
        # The signal watcher outlives the serving scope: a second Ctrl-C or SIGTERM during the
        # clean-up is absorbed instead of killing the process before the nft table and the
        # sysctls are restored.
        serving = trio.CancelScope()
        # Outside trio's receiver (just before it opens; after the clean-up, before the exit)
        # a stop signal is only noted: the default action would kill the process (exit -15, a
        # failed stop to a supervisor) or interrupt the clean-up. Process-wide, like the
        # receiver; ignored once served, as the interpreter's exit restores default actions
        # for Python handlers (not for SIG_IGN).
        early: list[int] = []
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda signum, _frame: early.append(signum))
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
            if early:
                log.info("%s: shutting down", signal.Signals(early[0]).name)
                serving.cancel()
            async with trio.open_nursery() as outer:
                outer.start_soon(self._watch_signals, signals, serving)
                with serving:
                    await self._serve(task_status)
                outer.cancel_scope.cancel()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)
        self._log_counters()

    async def _serve(self, task_status: trio.TaskStatus[None]) -> None:
        cfg = self.cfg
        async with trio.open_nursery() as nursery:
            await nursery.start(self._nft_manager)
            with contextlib.ExitStack() as stack:
                tun = Tun.open(cfg.interface.name, offload=True)
                stack.callback(tun.close)
                link.configure_interface(tun.name, cfg.interface.address, cfg.interface.mtu)
                log.info(
                    "interface %s up: %s, mtu %d",
                    tun.name,
                    ", ".join(map(str, cfg.interface.address)),
                    cfg.interface.mtu,
                )
                async with trio.open_nursery() as data_plane:
                    # the data path on its own OS thread, unless told to keep it on trio
                    thread = DataThread() if data_thread.enabled() else None
                    if thread is None:
                        reader = TunReader(tun, self.router, self.counters)
                        data_plane.start_soon(reader.run)
                    else:
                        reader = TunReader(tun, self.router, self.counters, clock=thread.clock)
                        thread.watch("the TUN", lambda: tun.fd, reader.forward_ready)
                    if cfg.wireguard.enabled:
                        sock = _listen("wireguard.listen", cfg.wireguard.listen)
                        stack.callback(sock.close)  # the socket a `wg set listen-port` made too
                        _set_fwmark(sock, cfg.wireguard.fwmark)
                        self._sockets.append(sock)
                        await self._start_wireguard(data_plane, sock, tun, reader, thread)
                    if cfg.toyvpn.enabled:
                        sock = _listen("toyvpn.listen", cfg.toyvpn.listen)
                        stack.callback(sock.close)
                        self._sockets.append(sock)
                        self._start_toyvpn(data_plane, sock, tun, reader, thread)
                    if thread is not None:
                        data_plane.start_soon(thread.run)
                        log.info("data path on its own thread")
                    else:
                        log.info("data path on trio (%s=0)", data_thread.ENV_SWITCH)
                    self._start_status(data_plane, tun.name)
                    if cfg.metrics.listen is not None:
                        await data_plane.start(self._serve_metrics, cfg.metrics.listen, tun.name)
                    if cfg.web.listen is not None:
                        await data_plane.start(self._serve_web, cfg.web)
                    # what start-up built (thousands of peers, say) lives as long as the
                    # server: a full collection (tens of ms held) need not walk it again
                    gc.freeze()
                    log.info("trivpn serving (nat egress %s)", self.egress or "off")
                    task_status.started()

    # -- the control plane -------------------------------------------------------------------

    def _start_status(self, nursery: trio.Nursery, ifname: str) -> None:
        """`trivpn status` through the control socket (off, with an error logged, if unusable)."""
        serve = functools.partial(status_socket.serve_control, self, ifname)
        nursery.start_soon(supervise, "control", serve)

    async def _serve_metrics(
        self, listen: Endpoint, ifname: str, *, task_status: trio.TaskStatus[Any]
    ) -> None:
        serve = functools.partial(
            metrics.serve_status_metrics, self, ifname, listen, node=self.fleet_node
        )
        await supervise("metrics", serve, task_status=task_status)

    async def _serve_web(self, web: WebConfig, *, task_status: trio.TaskStatus[Any]) -> None:
        """The web admin, supervised, and the traffic samples of its charts. The app (and
        its sessions) outlives a restart of the serving."""
        credentials = WebCredentials(self.cfg.state.dir)
        for warning in (plain_http_warning(web), no_login_warning(credentials)):
            if warning:
                log.warning("%s", warning)
        samples = TrafficSamples()
        admin = Admin(self, samples)
        app = create_app(admin, credentials, secure_cookies=web.tls_cert is not None)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(samples.run, lambda: self.wireguard)
                serve = functools.partial(serve_web, app, web)
                await supervise("web", serve, task_status=task_status)
        finally:
            admin.close()  # its registry connections

    async def _watch_signals(self, signals: AsyncIterator[int], serving: trio.CancelScope) -> None:
        async for signum in signals:
            name = signal.Signals(signum).name
            if serving.cancel_called:
                log.info("%s: already shutting down", name)
            elif signum == signal.SIGHUP:
                await self._reload()
            else:
                log.info("%s: shutting down", name)
                serving.cancel()

    async def _reload(self) -> None:
        if self.usage is not None:
            await self.usage.flush()  # what the peers counted, before the reload replaces them
        await reload_config(self)  # logs its own errors; never stops the server

    async def _nft_manager(self, *, task_status: trio.TaskStatus[None]) -> None:
        """Forwarding on and the `inet trivpn` table in place while the server runs."""
        subnets = self.cfg.interface.subnets
        saved = sysctl.enable_forwarding(
            ipv4=any(n.version == 4 for n in subnets), ipv6=any(n.version == 6 for n in subnets)
        )
        try:
            ruleset = nft.build_ruleset(subnets, self.egress, masquerade=self.cfg.nat.masquerade)
            nft.apply_ruleset(ruleset)
            log.info("nftables: table inet %s applied", nft.TABLE)
            _warn_forward_blockers(self.cfg.interface.name)
            task_status.started()
            await trio.sleep_forever()
        finally:
            with trio.move_on_after(CLEANUP_SECONDS, shield=True) as scope:
                await trio.to_thread.run_sync(nft.delete_table, abandon_on_cancel=True)
                log.info("nftables: table inet %s removed", nft.TABLE)
            if scope.cancelled_caught:
                log.error("nftables: removing table inet %s timed out", nft.TABLE)
            sysctl.restore(saved)

    def _log_counters(self) -> None:
        counts = collections.Counter(self.counters)
        counts["udp_send_dropped"] += sum(sock.dropped for sock in self._sockets)
        if self.toyvpn is not None:
            counts.update({f"toyvpn_{k}": v for k, v in self.toyvpn.counters.items()})
        if self.wireguard is not None:
            counts.update({f"wireguard_{k}": v for k, v in self.wireguard.device.counters.items()})
        counts = +counts  # only the counters that counted something
        if counts:
            log.info("counters: %s", ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))

    @property
    def fleet_node(self) -> str | None:
        """This gateway's name in a fleet (a [state] database set), else None."""
        return self.cfg.state.node if self.cfg.state.database is not None else None

    # -- the data plane ----------------------------------------------------------------------

    async def _start_wireguard(
        self,
        nursery: trio.Nursery,
        sock: udp.DatagramSocket,
        tun: Tun,
        reader: TunReader,
        thread: DataThread | None,
    ) -> None:
        cfg = self.cfg.wireguard
        front = WireGuardFront(
            cfg,
            server_private_key(cfg, self.cfg.state.dir),
            router=self.router,
            tun=tun,
            sock=sock,
            mtu=self.cfg.interface.mtu,
            counters=self.counters,
            after_tun_write=reader.tun_written,
        )
        self.wireguard = front
        log.info(
            "wireguard: listening on %s, public key %s, %d peer(s)%s",
            cfg.listen,
            front.public_key,
            len(cfg.peers),
            f", fwmark {cfg.fwmark:#x}" if cfg.fwmark else "",
        )
        self.peersync = PeerSync(
            front,
            registry_opener(self.cfg.state),
            cfg.peers,
            AddressPlan.from_config(self.cfg, front.device.public_key),
            poll_interval=poll_interval(self.cfg.state),
        )
        # one connection for both: the keeper's commits are not another process's
        self.usage = UsageKeeper(front.policies, self.peersync.with_registry)
        self.peersync.on_foreign_commit = self.usage.registry_changed
        # every key's usage loaded before the socket serves (registry peers' too, before the
        # sync adds them): a peer over its quota is blocked from its first packet after a
        # restart. Then flushed every few seconds, and once more on the way out.
        await nursery.start(supervise, "usage", self.usage.run)
        if thread is None:
            nursery.start_soon(front.receive_loop)
            nursery.start_soon(front.timer_loop)
        else:
            front.run_on_data_thread(thread.handoff, thread.wake)
            clock = thread.clock
            thread.watch("wireguard", lambda: sock.sock, lambda: front.receive_ready(clock))
            thread.run_timers(front.next_deadline, front.tick)
        nursery.start_soon(front.policy_loop)  # blocks peers at their expiry
        if self.fleet_node is not None:  # where the fleet's gateways see the peers
            self.fleet = FleetKeeper(
                front.device,
                self.fleet_node,
                session_store_opener(self.cfg.state),
                outage=self.peersync.outage,  # one outage, logged once, whoever finds it
            )
            nursery.start_soon(supervise, "fleet", self.fleet.run)
        # `wg show`, `wg set` on this interface
        nursery.start_soon(supervise, "uapi", functools.partial(serve_uapi, front, tun.name))
        # the peers' networks outside the interface subnets (a site's LAN) routed into the TUN
        nursery.start_soon(KernelRoutes(tun.name, self.cfg.interface.subnets, front).run)
        nursery.start_soon(self.peersync.run)  # registry peers in, `wg set` changes kept
        if self.cfg.state.database is not None:  # PostgreSQL pushes its commits
            from trivpn.registry.pg_listen import ChangeListener  # libpq only when named

            listener = ChangeListener.of(
                self.cfg.state,
                peers_changed=self.peersync.poke,
                usage_added=self.usage.others_added,
            )
            nursery.start_soon(supervise, "registry push", listener.run)

    def _start_toyvpn(
        self,
        nursery: trio.Nursery,
        sock: udp.DatagramSocket,
        tun: Tun,
        reader: TunReader,
        thread: DataThread | None,
    ) -> None:
        cfg = self.cfg.toyvpn
        log.warning(
            "ToyVPN is enabled on %s: it is UNENCRYPTED and its shared secret travels in "
            "cleartext; use it only for compatibility and labs",
            cfg.listen,
        )
        front = ToyVpnFront(
            cfg,
            mtu=self.cfg.interface.mtu,
            reserved=[a.ip for a in self.cfg.interface.address],
            router=self.router,
            tun=tun,
            sock=sock,
            counters=self.counters,
            after_tun_write=reader.tun_written,
        )
        self.toyvpn = front.protocol
        if thread is None:
            nursery.start_soon(front.receive_loop, nursery)
            return
        handoff, clock = thread.handoff, thread.clock

        def start_session(session: toyvpn.Session, route: SessionRoute) -> None:
            handoff(nursery.start_soon, front.session_task, session, route)

        thread.watch("toyvpn", lambda: sock.sock, lambda: front.receive_ready(clock, start_session))


def _warn_forward_blockers(tunnel: str) -> None:
    """Name another table's forward chain that would drop the tunnel's traffic (Docker's,
    firewalld's): our accept cannot override it, and "clients connect but reach nothing" is
    hard to diagnose otherwise."""
    try:
        blockers = nft.forward_blockers(nft.list_ruleset(), tunnel)
    except nft.NftError as e:
        log.debug("nftables: cannot list the ruleset: %s", e)
        return
    for chain in blockers:
        log.warning(
            "nftables: chain %s drops forwarded packets that none of its table's rules accept, "
            "so clients' traffic through %s is probably dropped there; accept it in that table "
            '(e.g. iifname "%s" accept; oifname "%s" ct state established,related accept)',
            chain,
            tunnel,
            tunnel,
            tunnel,
        )
