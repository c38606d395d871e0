"""The control socket: `trivpn status` (and `peer list`) ask the running server how it is.

The server listens on ``/run/trivpn/<ifname>.sock`` (directory 0700, socket 0600; clients must
be root or the server's own user, checked with SO_PEERCRED). A client sends one request line,
``status``, and reads one JSON document (:func:`status_document`), then the server closes the
connection. Requests are bounded in size and time, connections in number. A stale socket that
a killed predecessor left is removed at start; a live one means another trivpn serves an
interface of that name, and then the control socket stays off while the VPN runs on.

The document never holds key material except public keys. Its shape (version 1)::

    {"version": 1, "time": <server wall clock, epoch seconds>,
     "node": null | <this gateway's [state] node, in a fleet>,
     "interface": {"name", "address": [..], "mtu"},
     "nat": {"masquerade": bool, "egress": str},
     "wireguard": null | {"listen": "host:port", "listen_port", "public_key",
                          "peers": [{"name", "public_key", "endpoint", "latest_handshake",
                                     "rx_bytes", "tx_bytes", "rx_packets", "tx_packets",
                                     "handshakes", "allowed_ips",
                                     "persistent_keepalive", "state", "enabled",
                                     "expires", "quota_bytes", "quota_period",
                                     "rate_down_bps", "rate_up_bps", "usage_bytes",
                                     "lifetime_rx_bytes", "lifetime_tx_bytes", "node"}]},
     "toyvpn": null | {"listen", "listen_port", "pool": {"network", "size", "in_use"},
                       "sessions": [{"endpoint", "address", "rx_bytes", "tx_bytes",
                                     "rx_packets", "tx_packets", "idle_seconds"}]},
     "counters": {"server": {..}, "wireguard": {..}, "toyvpn": {..}}}

``latest_handshake`` is epoch seconds or null (never); endpoints are ``host:port`` strings
(``[v6]:port``) or null; ``state`` is active, disabled, expired or over_quota
(trivpn.proto.policy), ``expires`` ISO 8601 in UTC or null; ``quota_*`` and ``rate_*_bps``
null when unset. ``usage_bytes`` is what counts against the quota (its period's bytes, else
those since the last reset) and ``lifetime_*_bytes`` every byte ever, both across restarts
(trivpn.proto.usage: the stored record plus what is not stored yet). A peer's ``node`` is
the gateway its live session is on, the one of its latest handshake in the fleet
(trivpn.registry.sessions.live_node; null before any handshake, and outside a fleet).
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

import trio

from trivpn.config import Config
from trivpn.control import unixsock
from trivpn.control.status_client import (
    DOCUMENT_VERSION,
    REQUEST_TIMEOUT,
    STATUS_REQUEST,
    socket_path,
)
from trivpn.dataplane.wireguard.front import WireGuardFront
from trivpn.proto.endpoints import format_endpoint
from trivpn.proto.policy import policy_json
from trivpn.proto.toyvpn import Session, ToyVpnServer
from trivpn.proto.usage import usage_json
from trivpn.proto.wireguard import Peer, encode_key
from trivpn.registry.sessions import Session as FleetSession
from trivpn.registry.sessions import live_node

log = logging.getLogger("trivpn")

_T = TypeVar("_T")
_R = TypeVar("_R")

MAX_REQUEST: Final = 256  # bytes; the only request is one short line
MAX_CONNECTIONS: Final = 8
SLICE: Final = 200  # peers or sessions read or encoded between two checkpoints (~5 ms)


# --- the document -----------------------------------------------------------------------------


class FleetView(Protocol):
    """A fleet's gateway (trivpn.registry.fleet.FleetKeeper): its node, and each peer's latest
    session on any gateway as last read."""

    @property
    def node(self) -> str: ...
    @property
    def latest(self) -> Mapping[bytes, FleetSession]: ...


class StatusSource(Protocol):
    """What the document reads of the running server (trivpn.daemon.server.Server), which
    sits above this layer: it is passed in, never imported."""

    @property
    def cfg(self) -> Config: ...
    @property
    def counters(self) -> Mapping[str, int]: ...
    @property
    def egress(self) -> str: ...
    @property
    def wireguard(self) -> WireGuardFront | None: ...
    @property
    def toyvpn(self) -> ToyVpnServer | None: ...
    @property
    def fleet(self) -> FleetView | None: ...


def show_endpoint(addr: tuple[Any, ...] | None) -> str | None:
    return None if addr is None else format_endpoint(addr)


def status_document(
    server: StatusSource, ifname: str, *, now: float, wallclock: float
) -> dict[str, Any]:
    """The server's state as plain JSON values: ``now`` is trio's clock, ``wallclock`` epoch."""
    doc = document_shell(server, ifname, now=now, wallclock=wallclock)
    if server.wireguard is not None:
        front = server.wireguard
        fleet = server.fleet
        doc["wireguard"]["peers"] = [
            peer_entry(front, peer, wallclock, fleet) for peer in front.device
        ]
    if server.toyvpn is not None:
        sessions = server.toyvpn.sessions.values()
        doc["toyvpn"]["sessions"] = [session_entry(s, now) for s in sessions]
    return doc


def document_shell(
    server: StatusSource, ifname: str, *, now: float, wallclock: float
) -> dict[str, Any]:
    """The document with empty lists of peers and sessions: all that costs no walk."""
    cfg = server.cfg
    counters: dict[str, dict[str, int]] = {"server": dict(server.counters)}
    doc: dict[str, Any] = {
        "version": DOCUMENT_VERSION,
        "time": wallclock,
        "node": None if server.fleet is None else server.fleet.node,
        "interface": {
            "name": ifname,
            "address": [str(a) for a in cfg.interface.address],
            "mtu": cfg.interface.mtu,
        },
        "nat": {"masquerade": cfg.nat.masquerade, "egress": server.egress},
        "wireguard": None,
        "toyvpn": None,
        "counters": counters,
    }
    front = server.wireguard
    if front is not None:
        doc["wireguard"] = {
            "listen": str(cfg.wireguard.listen),
            "listen_port": front.listen_port,
            "public_key": front.public_key,
            "peers": [],
        }
        counters["wireguard"] = dict(front.device.counters)
    toy = server.toyvpn
    if toy is not None:
        doc["toyvpn"] = {
            "listen": str(cfg.toyvpn.listen),
            "listen_port": cfg.toyvpn.listen.port,
            "pool": {
                "network": str(cfg.toyvpn.pool),
                "size": toy.pool.size,
                "in_use": toy.pool.in_use,
            },
            "sessions": [],
        }
        counters["toyvpn"] = dict(toy.counters)
    return doc


def peer_entry(
    front: WireGuardFront, peer: Peer, wallclock: float, fleet: FleetView | None = None
) -> dict[str, Any]:
    state, policy = front.peer_state(peer.public_key)
    live = peer.last_handshake_time
    node = None if fleet is None else live_node(fleet.latest.get(peer.public_key), live, fleet.node)
    return {
        "name": peer.name,
        "public_key": encode_key(peer.public_key),
        "endpoint": show_endpoint(peer.endpoint),
        "latest_handshake": live,
        "rx_bytes": peer.rx_bytes,
        "tx_bytes": peer.tx_bytes,
        "rx_packets": peer.rx_packets,
        "tx_packets": peer.tx_packets,
        "handshakes": peer.handshakes,
        "allowed_ips": [str(n) for n in peer.allowed_ips],
        "persistent_keepalive": peer.persistent_keepalive or 0,
        **policy_json(state, policy),
        **usage_json(front.peer_usage(peer.public_key), policy, wallclock),
        "node": node,
    }


def session_entry(session: Session, now: float) -> dict[str, Any]:
    return {
        "endpoint": show_endpoint(session.addr),
        "address": str(session.address),
        "rx_bytes": session.rx_bytes,
        "tx_bytes": session.tx_bytes,
        "rx_packets": session.rx_packets,
        "tx_packets": session.tx_packets,
        "idle_seconds": max(0.0, now - session.last_recv),
    }


async def in_slices(items: Iterable[_T], entry: Callable[[_T], _R]) -> list[_R]:
    """``[entry(item) for item in items]`` with a checkpoint every SLICE items, so that a
    walk over thousands of peers never holds the loop (forwarding waits on no request).
    ``items`` must be a copy when the walk may change it: other tasks run in between."""
    result: list[_R] = []
    for item in items:
        result.append(entry(item))
        if len(result) % SLICE == 0:
            await trio.sleep(0)
    return result


async def live_document(server: StatusSource, ifname: str) -> dict[str, Any]:
    """The document now, its peers and sessions read in slices (call it from the trio
    thread that runs the server). Each entry is one peer's or session's state at one
    moment; the document as a whole spans the few milliseconds between the slices."""
    now = trio.current_time()
    wallclock = time.time()
    front, toy = server.wireguard, server.toyvpn
    doc = document_shell(server, ifname, now=now, wallclock=wallclock)
    if front is not None:
        doc["wireguard"]["peers"] = await in_slices(
            front.device,
            functools.partial(peer_entry, front, wallclock=wallclock, fleet=server.fleet),
        )
    if toy is not None:
        sessions = list(toy.sessions.values())
        doc["toyvpn"]["sessions"] = await in_slices(sessions, lambda s: session_entry(s, now))
    return doc


async def encode_document(document: dict[str, Any]) -> bytes:
    """``json.dumps(document)`` (compact, one line) with checkpoints between slices of the
    peers and sessions: encoding 10,000 peers at once holds the loop tens of ms."""
    shell = dict(document)
    lists: dict[str, list[Any]] = {}
    for section, key in (("wireguard", "peers"), ("toyvpn", "sessions")):
        if shell.get(section) is not None:
            placeholder = f"\0{section}.{key}"  # a NUL: in no name, key or address
            lists[_compact(placeholder)] = shell[section][key]
            shell[section] = {**shell[section], key: placeholder}
    text = _compact(shell)
    for placeholder, items in lists.items():
        encoded = await in_slices(items, _compact)
        text = text.replace(placeholder, "[" + ",".join(encoded) + "]", 1)
    return text.encode() + b"\n"


def _compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


# --- the server side --------------------------------------------------------------------------


async def serve_control(
    server: StatusSource,
    ifname: str,
    *,
    directory: Path | None = None,
    timeout: float = REQUEST_TIMEOUT,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Answer `trivpn status` on the interface's control socket until cancelled.

    A socket that cannot be set up is logged and the task ends: the VPN itself runs on.
    """
    path = socket_path(ifname, directory)
    await unixsock.serve_unix(
        path,
        functools.partial(_exchange, server, ifname),
        name="control",
        ready=f"`trivpn status` answers on {path}",
        unavailable=f"`trivpn status` cannot reach {ifname}",
        directory_rule=unixsock.DirectoryRule.PRIVATE,
        max_connections=MAX_CONNECTIONS,
        timeout=timeout,
        task_status=task_status,
    )


async def _exchange(
    server: StatusSource, ifname: str, stream: trio.SocketStream, _deadline: trio.CancelScope
) -> None:
    """One request, one answer, all within the connection's deadline."""
    request = await _read_request(stream)
    if request is not None:
        await stream.send_all(await _answer(request, server, ifname))


async def _read_request(stream: trio.SocketStream) -> bytes | None:
    """One line of at most MAX_REQUEST bytes; None if the client hung up or sent too much."""
    data = b""
    while b"\n" not in data:
        chunk = await stream.receive_some(MAX_REQUEST)
        if not chunk:
            return None
        data += chunk
        if len(data) > MAX_REQUEST:
            log.warning("control: a request over %d bytes; closed", MAX_REQUEST)
            return None
    return data.partition(b"\n")[0].strip()


async def _answer(request: bytes, server: StatusSource, ifname: str) -> bytes:
    if request == STATUS_REQUEST.strip():
        document = await live_document(server, ifname)
    else:
        document = {"version": DOCUMENT_VERSION, "error": "unknown request; expected 'status'"}
    return await encode_document(document)
