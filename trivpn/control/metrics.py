"""Prometheus metrics: the status document as the text exposition format, served over HTTP.

At each scrape the server's live state is read (the control socket's status document of a
:class:`StatusSource`, built on the trio thread in slices of peers) and prometheus_client's
``generate_latest`` writes the text, family by family and a slice of peers at a time, with a
checkpoint between slices so that forwarding never waits for a scrape. A small trio task
answers ``GET /metrics`` on ``[metrics] listen``: one request per connection, bounded in size,
time and number of connections; a request head must arrive within HEAD_TIMEOUT, and when
every slot is taken the oldest connection still sending its head is shed, so that slow
clients cannot starve a scrape.

WireGuard peers are labelled by name and public key, and in a fleet (a [state] database set)
by ``node`` too, the gateway their live session is on; ToyVPN sessions by tunnel address (a
counter restarts when a new session takes an address, which Prometheus treats as a reset).
Per WireGuard peer: bytes and transport packets each way, completed handshakes, and the
time of the latest one; its expiry and whether (and why) it is blocked; its quota (peers
with one) and its usage (what counts against the quota: its period's bytes, else the bytes
since the last reset, across restarts).
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Final

import attrs
import trio
from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from trivpn import __version__
from trivpn.config import Endpoint
from trivpn.control.accept import RefusalLog, RetryingListener
from trivpn.control.connection_slots import ConnectionSlots
from trivpn.control.status_socket import StatusSource, live_document
from trivpn.proto.policy import PeerState

log = logging.getLogger("trivpn")

Document = Mapping[str, Any]
Render = Callable[[], Awaitable[bytes]]  # the exposition text, made at each scrape

# The classic text format, which every Prometheus reads (our names need nothing newer).
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
MAX_REQUEST_HEAD: Final = 8192
HEAD_TIMEOUT: Final = 2.0  # seconds a client has to send its request head
REQUEST_TIMEOUT: Final = 10.0  # seconds for the whole exchange, the answer's sending included
MAX_CONNECTIONS: Final = 64
PEER_SLICE: Final = 50  # peers whose families are made and written between checkpoints (~5 ms)

# Counters of the protocol cores that count events, not dropped packets.
NOT_DROPS: Final = frozenset({"cookie_sent", "control", "handshakes", "expired"})
# Shown at 0 before the first one, so that dashboards and alerts see the series exist.
USUAL_DROPS: Final = {
    "wireguard": (
        "bad_mac1",
        "replay",
        "unknown_index",
        "spoofed_source",
        "malformed",
        "decrypt_failed",
        "unknown_peer",
        "ratelimited",
        "blocked",
        "rate_limited",
    ),
    "toyvpn": (
        "bad_secret",
        "spoofed_source",
        "not_ipv4",
        "malformed",
        "unknown_endpoint",
        "pool_full",
        "rate_limited",
    ),
}
# The server's own counters: (protocol, reason) for the drops among them.
SERVER_DROPS: Final = {
    "tun_no_route": ("tun", "no_route"),
    "tun_write_dropped": ("tun", "write_failed"),
    "send_error": ("server", "send_error"),
    "receive_error": ("toyvpn", "receive_error"),
    "wireguard_receive_error": ("wireguard", "receive_error"),
}


# trivpn_peer_blocked's reasons: every state that blocks
BLOCK_REASONS: Final = tuple(str(s) for s in PeerState if s.blocked)


class MetricsError(Exception):
    """The metrics endpoint cannot listen; the message names the key and the reason."""


# --- the exposition -------------------------------------------------------------------------


def _is_malformed_detail(reason: str) -> bool:
    """WireGuard counts a malformed datagram twice: as "malformed" and by what was wrong."""
    return reason.startswith("malformed_") and reason != "malformed_inner"


def _drops(doc: Document) -> CounterMetricFamily:
    family = CounterMetricFamily(
        "trivpn_packets_dropped",
        "Datagrams and packets dropped, by protocol and reason.",
        labels=("protocol", "reason"),
    )
    counts: dict[tuple[str, str], int] = {}
    groups: Mapping[str, Mapping[str, int]] = doc.get("counters", {})
    for protocol in ("wireguard", "toyvpn"):
        if doc.get(protocol) is None:
            continue
        for reason in USUAL_DROPS[protocol]:
            counts[protocol, reason] = 0
        for reason, value in groups.get(protocol, {}).items():
            if reason not in NOT_DROPS and not _is_malformed_detail(reason):
                counts[protocol, reason] = value
    for key, value in groups.get("server", {}).items():
        label = SERVER_DROPS.get(key, ("server", key))
        counts[label] = counts.get(label, 0) + value
    for (protocol, reason), value in sorted(counts.items()):
        family.add_metric((protocol, reason), value)
    return family


def _peer_labels(node: str | None) -> tuple[str, ...]:
    return ("name", "public_key") if node is None else ("name", "public_key", "node")


def _peer_values(peer: Mapping[str, Any], node: str | None) -> tuple[str, ...]:
    values = (peer["name"] or "", peer["public_key"])
    return values if node is None else (*values, node)


def _wireguard(
    doc: Document, peers: Sequence[Mapping[str, Any]] | None, node: str | None
) -> Iterator[Metric]:
    """The WireGuard families; the per-peer ones of ``peers`` only when given (a slice)."""
    wg = doc["wireguard"]
    counters: Mapping[str, int] = doc.get("counters", {}).get("wireguard", {})
    yield GaugeMetricFamily(
        "trivpn_wireguard_peers", "WireGuard peers configured.", len(wg["peers"])
    )
    if peers is None:
        peers = wg["peers"]
    labels = _peer_labels(node)
    rx = CounterMetricFamily(
        "trivpn_wireguard_peer_receive_bytes",
        "Bytes received from the peer (UDP payload, handshakes included).",
        labels=labels,
    )
    tx = CounterMetricFamily(
        "trivpn_wireguard_peer_transmit_bytes",
        "Bytes sent to the peer (UDP payload, handshakes included).",
        labels=labels,
    )
    rx_packets = CounterMetricFamily(
        "trivpn_wireguard_peer_receive_packets",
        "Transport data messages received from the peer (keepalives included).",
        labels=labels,
    )
    tx_packets = CounterMetricFamily(
        "trivpn_wireguard_peer_transmit_packets",
        "Transport data messages sent to the peer (keepalives included).",
        labels=labels,
    )
    handshakes = CounterMetricFamily(
        "trivpn_wireguard_peer_handshakes",
        "Handshakes completed with the peer, in either role.",
        labels=labels,
    )
    latest = GaugeMetricFamily(
        "trivpn_wireguard_peer_latest_handshake_seconds",
        "Unix time of the peer's latest completed handshake; 0 if none yet.",
        labels=labels,
    )
    for peer in peers:
        values = _peer_values(peer, node)
        rx.add_metric(values, peer["rx_bytes"])
        tx.add_metric(values, peer["tx_bytes"])
        rx_packets.add_metric(values, peer["rx_packets"])
        tx_packets.add_metric(values, peer["tx_packets"])
        handshakes.add_metric(values, peer["handshakes"])
        latest.add_metric(values, peer["latest_handshake"] or 0)
    yield from (rx, tx, rx_packets, tx_packets, handshakes, latest)
    yield from _peer_policy(peers, node)
    yield CounterMetricFamily(
        "trivpn_wireguard_cookie_replies",
        "Handshakes answered with a cookie reply because the server was under load.",
        counters.get("cookie_sent", 0),
    )
    malformed = CounterMetricFamily(
        "trivpn_wireguard_malformed",
        "Malformed WireGuard datagrams by what was wrong (all of them count as dropped).",
        labels=("kind",),
    )
    for reason, value in sorted(counters.items()):
        if _is_malformed_detail(reason):
            malformed.add_metric((reason.removeprefix("malformed_"),), value)
    yield malformed


def _peer_policy(peers: Sequence[Mapping[str, Any]], node: str | None) -> Iterator[Metric]:
    """Expiry, block state, quota and usage per peer (trivpn.proto.policy): a series per
    blocking reason, 0 or 1, so that an alert sees every peer's series exist."""
    labels = _peer_labels(node)
    expiry = GaugeMetricFamily(
        "trivpn_peer_expiry_timestamp_seconds",
        "Unix time at which the peer expires (blocked from then on); only peers with an expiry.",
        labels=labels,
    )
    blocked = GaugeMetricFamily(
        "trivpn_peer_blocked",
        "1 if the peer is blocked for this reason (no handshake, no traffic), else 0.",
        labels=(*labels, "reason"),
    )
    quota = GaugeMetricFamily(
        "trivpn_peer_quota_bytes",
        "The peer's traffic quota (received plus sent) per its period (`trivpn peer show`); "
        "only peers with one.",
        labels=labels,
    )
    usage = GaugeMetricFamily(
        "trivpn_peer_usage_bytes",
        "Bytes that count against the peer's quota: its period's, else since the last reset.",
        labels=labels,
    )
    for peer in peers:
        values = _peer_values(peer, node)
        expires = peer.get("expires")
        if expires is not None:
            expiry.add_metric(values, datetime.datetime.fromisoformat(expires).timestamp())
        state = peer.get("state", PeerState.ACTIVE)
        for reason in BLOCK_REASONS:
            blocked.add_metric((*values, reason), int(state == reason))
        quota_bytes = peer.get("quota_bytes")
        if quota_bytes is not None:
            quota.add_metric(values, quota_bytes)
        usage.add_metric(values, peer.get("usage_bytes", 0))
    yield from (expiry, blocked, quota, usage)


def _toyvpn(doc: Document) -> Iterator[Metric]:
    toy = doc["toyvpn"]
    counters: Mapping[str, int] = doc.get("counters", {}).get("toyvpn", {})
    sessions = toy["sessions"]
    yield GaugeMetricFamily("trivpn_toyvpn_sessions", "ToyVPN sessions open.", len(sessions))
    yield GaugeMetricFamily(
        "trivpn_toyvpn_pool_addresses", "Addresses in the ToyVPN pool.", toy["pool"]["size"]
    )
    yield GaugeMetricFamily(
        "trivpn_toyvpn_pool_addresses_in_use",
        "Addresses of the ToyVPN pool held by sessions.",
        toy["pool"]["in_use"],
    )
    yield CounterMetricFamily(
        "trivpn_toyvpn_handshakes", "ToyVPN sessions opened.", counters.get("handshakes", 0)
    )
    yield CounterMetricFamily(
        "trivpn_toyvpn_sessions_expired",
        "ToyVPN sessions ended by the idle timeout.",
        counters.get("expired", 0),
    )
    families = {
        (key, direction): CounterMetricFamily(
            f"trivpn_toyvpn_session_{direction}_{unit}",
            f"{unit.capitalize()} {'received from' if direction == 'receive' else 'sent to'} "
            "the ToyVPN client (IP packets).",
            labels=("address",),
        )
        for key, unit in (("bytes", "bytes"), ("packets", "packets"))
        for direction in ("receive", "transmit")
    }
    for session in sessions:
        for (key, direction), family in families.items():
            prefix = "rx" if direction == "receive" else "tx"
            family.add_metric((session["address"],), session[f"{prefix}_{key}"])
    yield from families.values()


def collect(
    doc: Document, peers: Sequence[Mapping[str, Any]] | None = None, *, node: str | None = None
) -> Iterator[Metric]:
    """Every metric family of one status document; the per-peer families of ``peers`` only,
    when given (a slice of the document's); labelled with this gateway's ``node`` when given
    (a fleet's)."""
    info = GaugeMetricFamily(
        "trivpn_info", "trivpn's version and interface (always 1).", labels=("version", "interface")
    )
    info.add_metric((__version__, doc["interface"]["name"]), 1)
    yield info
    if doc.get("wireguard") is not None:
        yield from _wireguard(doc, peers, node)
    if doc.get("toyvpn") is not None:
        yield from _toyvpn(doc)
    yield _drops(doc)


class _Families:
    """What generate_latest needs of a registry: these families."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


def _is_per_peer(family: Metric) -> bool:
    return bool(family.samples) and "public_key" in family.samples[0].labels


async def render_document(doc: Document, *, node: str | None = None) -> bytes:
    """The exposition text of ``doc``, the per-peer families made and written a slice of
    peers at a time with a checkpoint between: prometheus_client writes 10,000 peers' six
    families in one synchronous call of hundreds of ms. Each family's text is
    prometheus_client's; a family that continues in a later slice drops its HELP and TYPE."""
    wg = doc.get("wireguard")
    peers: Sequence[Mapping[str, Any]] = [] if wg is None else wg["peers"]
    texts: list[list[bytes]] = []
    for start in range(0, max(len(peers), 1), PEER_SLICE):
        families = collect(doc, peers[start : start + PEER_SLICE], node=node)
        for i, family in enumerate(families):
            text = generate_latest(_Families([family]))
            if start == 0:
                texts.append([text])
            elif _is_per_peer(family):
                texts[i].append(text.split(b"\n", 2)[2])  # the samples: HELP, TYPE once
        await trio.sleep(0)
    return b"".join(part for family in texts for part in family)


def renderer(source: Callable[[], Awaitable[Document]], *, node: str | None = None) -> Render:
    """The exposition text of ``source``'s document, made anew at each call."""

    async def render() -> bytes:
        return await render_document(await source(), node=node)

    return render


# --- HTTP -----------------------------------------------------------------------------------

_REASONS: Final = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
}
_TEXT: Final = "text/plain; charset=utf-8"


async def respond(head: bytes, render: Render) -> bytes:
    """The whole HTTP/1.1 response to a request head (request line and headers)."""
    request_line = head.split(b"\r\n", 1)[0]
    parts = request_line.split()
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
        return _response(400, _TEXT, b"bad request\n")
    method, target = parts[0], parts[1].split(b"?", 1)[0]
    if method not in (b"GET", b"HEAD"):
        return _response(405, _TEXT, b"only GET\n", extra=b"Allow: GET, HEAD\r\n")
    if target == b"/metrics":
        try:
            status, ctype, body = 200, CONTENT_TYPE, await render()
        except Exception:
            log.exception("metrics: rendering failed")
            status, ctype, body = 500, _TEXT, b"rendering the metrics failed\n"
    elif target == b"/":
        status, ctype, body = 200, _TEXT, b"trivpn: metrics at /metrics\n"
    else:
        status, ctype, body = 404, _TEXT, b"not found; metrics at /metrics\n"
    return _response(status, ctype, body, head_only=method == b"HEAD")


def _response(
    status: int, ctype: str, body: bytes, *, extra: bytes = b"", head_only: bool = False
) -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
        f"Content-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n"
    ).encode()
    return head + extra + b"\r\n" + (b"" if head_only else body)


async def _read_head(stream: trio.abc.ReceiveStream) -> bytes | None:
    """Bytes up to the blank line ending the request head; None if cut short or too long."""
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > MAX_REQUEST_HEAD:
            return None
        chunk = await stream.receive_some(MAX_REQUEST_HEAD)
        if not chunk:
            return None
        data += chunk
    return data.partition(b"\r\n\r\n")[0]


async def serve_status_metrics(
    server: StatusSource,
    ifname: str,
    endpoint: Endpoint,
    *,
    node: str | None = None,
    task_status: trio.TaskStatus[list[RetryingListener[trio.SocketStream]]] = (
        trio.TASK_STATUS_IGNORED
    ),
) -> None:
    """:func:`serve_metrics` of the running server's status document; per-peer series
    labelled with ``node`` when given (a fleet's gateway)."""
    render = renderer(lambda: live_document(server, ifname), node=node)
    await serve_metrics(render, endpoint, task_status=task_status)


async def serve_metrics(
    render: Render,
    endpoint: Endpoint,
    *,
    timeout: float = REQUEST_TIMEOUT,
    head_timeout: float = HEAD_TIMEOUT,
    max_connections: int = MAX_CONNECTIONS,
    task_status: trio.TaskStatus[list[RetryingListener[trio.SocketStream]]] = (
        trio.TASK_STATUS_IGNORED
    ),
) -> None:
    """Serve ``render()`` at http://endpoint/metrics until cancelled.

    Raises MetricsError, before ``task_status.started``, when the address cannot be bound.
    """
    try:
        listeners = await trio.open_tcp_listeners(endpoint.port, host=endpoint.host)
    except OSError as e:
        raise MetricsError(f"metrics.listen: cannot listen on {endpoint}: {e.strerror or e}") from e
    log.info("metrics: serving http://%s/metrics", endpoint)
    limits = Limits(ConnectionSlots(max_connections), RefusalLog("metrics"), timeout, head_timeout)

    async def handle(stream: trio.SocketStream) -> None:
        await handle_connection(stream, render, limits)

    # trio.serve_listeners would retry EMFILE too, but log each retry with a traceback.
    retrying = [RetryingListener(listener, "metrics") for listener in listeners]
    await trio.serve_listeners(handle, retrying, task_status=task_status)


@attrs.frozen
class Limits:
    """What one endpoint's connections share: their slots, the refusal log, the deadlines."""

    slots: ConnectionSlots
    refusals: RefusalLog
    timeout: float = REQUEST_TIMEOUT
    head_timeout: float = HEAD_TIMEOUT


async def handle_connection(stream: trio.abc.Stream, render: Render, limits: Limits) -> None:
    """One request, one answer, then close; a client slower than the deadlines is cut off."""
    slot = limits.slots.admit()
    if slot is None:
        limits.refusals.refused("every connection is busy answering; refusing one")
        await stream.aclose()
        return
    try:
        async with stream:
            with trio.move_on_after(limits.timeout):
                with trio.move_on_after(limits.head_timeout) as waiting:
                    limits.slots.idle(slot, waiting)
                    head = await _read_head(stream)
                limits.slots.busy(slot)
                if slot.shed:
                    limits.refusals.refused("connections full; shed the oldest idle one")
                    return
                if waiting.cancelled_caught:
                    return  # no head in time: closed without an answer
                if head is None:
                    await stream.send_all(_response(400, _TEXT, b"bad request\n"))
                else:
                    await stream.send_all(await respond(head, render))
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
        log.debug("metrics: connection failed: %s", e)
    except Exception:
        log.exception("metrics: serving a connection failed")
    finally:
        limits.slots.release(slot)
