"""The control socket: `trivpn status` (and `peer list`) ask the running server how it is.

The server listens on ``/run/trivpn/<ifname>.sock`` (directory 0700, socket 0600; clients must
be root or the server's own user, checked with SO_PEERCRED). A client sends one request line,
``status``, and reads one JSON document (:func:`status_document`), then the server closes the
connection. Requests are bounded in size and time, connections in number. A stale socket that
a killed predecessor left is removed at start; a live one means another trivpn serves an
interface of that name, and then the control socket stays off while the VPN runs on.

The document never holds key material except public keys. Its shape (version 1)::

    {"version": 1, "time": <server wall clock, epoch seconds>,
     "interface": {"name", "address": [..], "mtu"},
     "nat": {"masquerade": bool, "egress": str},
     "wireguard": null | {"listen": "host:port", "listen_port", "public_key",
                          "peers": [{"name", "public_key", "endpoint", "latest_handshake",
                                     "rx_bytes", "tx_bytes", "rx_packets", "tx_packets",
                                     "handshakes", "allowed_ips",
                                     "persistent_keepalive", "state", "enabled",
                                     "expires"}]},
     "toyvpn": null | {"listen", "listen_port", "pool": {"network", "size", "in_use"},
                       "sessions": [{"endpoint", "address", "rx_bytes", "tx_bytes",
                                     "rx_packets", "tx_packets", "idle_seconds"}]},
     "counters": {"server": {..}, "wireguard": {..}, "toyvpn": {..}}}

``latest_handshake`` is epoch seconds or null (never); endpoints are ``host:port`` strings
(``[v6]:port``) or null; ``state`` is active, disabled or expired (trivpn.proto.policy),
``expires`` ISO 8601 in UTC or null.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Protocol

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
from trivpn.proto.toyvpn import ToyVpnServer
from trivpn.proto.wireguard import encode_key

log = logging.getLogger("trivpn")

MAX_REQUEST: Final = 256  # bytes; the only request is one short line
MAX_CONNECTIONS: Final = 8


# --- the document -----------------------------------------------------------------------------


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


def show_endpoint(addr: tuple[Any, ...] | None) -> str | None:
    return None if addr is None else format_endpoint(addr)


def status_document(
    server: StatusSource, ifname: str, *, now: float, wallclock: float
) -> dict[str, Any]:
    """The server's state as plain JSON values: ``now`` is trio's clock, ``wallclock`` epoch."""
    cfg = server.cfg
    counters: dict[str, dict[str, int]] = {"server": dict(server.counters)}
    doc: dict[str, Any] = {
        "version": DOCUMENT_VERSION,
        "time": wallclock,
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
            "peers": [
                {
                    "name": peer.name,
                    "public_key": encode_key(peer.public_key),
                    "endpoint": show_endpoint(peer.endpoint),
                    "latest_handshake": peer.last_handshake_time,
                    "rx_bytes": peer.rx_bytes,
                    "tx_bytes": peer.tx_bytes,
                    "rx_packets": peer.rx_packets,
                    "tx_packets": peer.tx_packets,
                    "handshakes": peer.handshakes,
                    "allowed_ips": [str(n) for n in peer.allowed_ips],
                    "persistent_keepalive": peer.persistent_keepalive or 0,
                    **policy_json(*front.peer_state(peer.public_key)),
                }
                for peer in front.device
            ],
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
            "sessions": [
                {
                    "endpoint": show_endpoint(s.addr),
                    "address": str(s.address),
                    "rx_bytes": s.rx_bytes,
                    "tx_bytes": s.tx_bytes,
                    "rx_packets": s.rx_packets,
                    "tx_packets": s.tx_packets,
                    "idle_seconds": max(0.0, now - s.last_recv),
                }
                for s in toy.sessions.values()
            ],
        }
        counters["toyvpn"] = dict(toy.counters)
    return doc


def live_document(server: StatusSource, ifname: str) -> dict[str, Any]:
    """The document now (call it from the trio thread that runs the server)."""
    return status_document(server, ifname, now=trio.current_time(), wallclock=time.time())


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
        await stream.send_all(_answer(request, server, ifname))


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


def _answer(request: bytes, server: StatusSource, ifname: str) -> bytes:
    if request == STATUS_REQUEST.strip():
        document = live_document(server, ifname)
    else:
        document = {"version": DOCUMENT_VERSION, "error": "unknown request; expected 'status'"}
    return json.dumps(document, separators=(",", ":")).encode() + b"\n"
