"""Prometheus exposition of the status document, and the small HTTP endpoint serving it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from support.status_doc import NOW, document, fake_server

import trivpn
from trivpn.config import Endpoint
from trivpn.control import metrics
from trivpn.control.accept import RefusalLog
from trivpn.control.connection_slots import ConnectionSlots


def source(doc: dict[str, Any]) -> Callable[[], Awaitable[dict[str, Any]]]:
    async def read() -> dict[str, Any]:
        return doc

    return read


def samples(doc: dict[str, Any]) -> dict[str, list[Sample]]:
    """Samples by family name, parsed back with prometheus_client's own parser."""
    text = trio.run(metrics.renderer(source(doc))).decode()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def value(found: dict[str, list[Sample]], family: str, **labels: str) -> float:
    matching = [s.value for s in found[family] if s.labels == labels]
    assert len(matching) == 1, (family, labels, found.get(family))
    return matching[0]


def test_peer_metrics_have_names_and_labels() -> None:
    found = samples(document())
    alice = {"name": "alice", "public_key": "A" * 43 + "="}
    unnamed = {"name": "", "public_key": "B" * 43 + "="}
    assert value(found, "trivpn_wireguard_peer_receive_bytes", **alice) == 1536
    assert value(found, "trivpn_wireguard_peer_transmit_bytes", **alice) == 3 * 1024**2
    assert value(found, "trivpn_wireguard_peer_receive_packets", **alice) == 12
    assert value(found, "trivpn_wireguard_peer_transmit_packets", **alice) == 2200
    assert value(found, "trivpn_wireguard_peer_handshakes", **alice) == 3
    assert value(found, "trivpn_wireguard_peer_handshakes", **unnamed) == 0
    assert value(found, "trivpn_wireguard_peer_latest_handshake_seconds", **alice) == NOW - 63
    assert value(found, "trivpn_wireguard_peer_latest_handshake_seconds", **unnamed) == 0
    assert value(found, "trivpn_wireguard_peers") == 2
    # counters carry the _total suffix on the wire
    assert {s.name for s in found["trivpn_wireguard_peer_receive_bytes"]} == {
        "trivpn_wireguard_peer_receive_bytes_total"
    }
    assert value(found, "trivpn_info", version=trivpn.__version__, interface="tv0") == 1


def test_toyvpn_metrics() -> None:
    found = samples(document())
    assert value(found, "trivpn_toyvpn_sessions") == 1
    assert value(found, "trivpn_toyvpn_pool_addresses") == 126
    assert value(found, "trivpn_toyvpn_pool_addresses_in_use") == 1
    session = {"address": "10.8.0.129"}
    assert value(found, "trivpn_toyvpn_session_receive_bytes", **session) == 100
    assert value(found, "trivpn_toyvpn_session_transmit_bytes", **session) == 2048
    assert value(found, "trivpn_toyvpn_session_receive_packets", **session) == 1
    assert value(found, "trivpn_toyvpn_session_transmit_packets", **session) == 2


def test_drops_by_protocol_and_reason() -> None:
    doc = document()
    doc["counters"] = {
        "server": {"tun_no_route": 4, "wireguard_receive_error": 1},
        "wireguard": {
            "bad_mac1": 2,
            "malformed": 3,
            "malformed_too_short": 2,
            "malformed_unknown_type": 1,
            "malformed_inner": 5,
            "cookie_sent": 7,
        },
        "toyvpn": {"spoofed_source": 6, "handshakes": 9, "control": 8, "expired": 1},
    }
    found = samples(doc)
    drops = "trivpn_packets_dropped"
    assert value(found, drops, protocol="wireguard", reason="bad_mac1") == 2
    assert value(found, drops, protocol="wireguard", reason="malformed") == 3
    assert value(found, drops, protocol="wireguard", reason="malformed_inner") == 5
    assert value(found, drops, protocol="wireguard", reason="receive_error") == 1
    assert value(found, drops, protocol="wireguard", reason="replay") == 0  # seen before any
    assert value(found, drops, protocol="toyvpn", reason="spoofed_source") == 6
    assert value(found, drops, protocol="toyvpn", reason="malformed") == 0
    assert value(found, drops, protocol="tun", reason="no_route") == 4
    reasons = {s.labels["reason"] for s in found[drops]}
    # events are not drops, and a malformed datagram is not counted twice
    assert not reasons & {"cookie_sent", "handshakes", "control", "expired", "malformed_too_short"}
    assert value(found, "trivpn_wireguard_malformed", kind="too_short") == 2
    assert value(found, "trivpn_wireguard_cookie_replies") == 7
    assert value(found, "trivpn_toyvpn_handshakes") == 9
    assert value(found, "trivpn_toyvpn_sessions_expired") == 1


def test_disabled_protocols_export_nothing_of_theirs() -> None:
    doc = document()
    doc["wireguard"] = None
    doc["toyvpn"] = None
    doc["counters"] = {"server": {}}
    found = samples(doc)
    assert not any(name.startswith(("trivpn_wireguard", "trivpn_toyvpn")) for name in found)
    assert found["trivpn_packets_dropped"] == []


def test_each_scrape_reads_the_state_anew() -> None:
    doc = document()
    render = metrics.renderer(source(doc))
    before = trio.run(render)
    doc["wireguard"]["peers"][0]["rx_bytes"] = 9999
    after = trio.run(render)
    assert b"9999.0" not in before and b"9999.0" in after


# --- HTTP -----------------------------------------------------------------------------------


async def render_stub() -> bytes:
    return b"# metrics\n"


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET /metrics HTTP/1.1\r\nHost: x", b"200"),
        (b"GET /metrics?x=1 HTTP/1.0", b"200"),
        (b"GET / HTTP/1.1", b"200"),
        (b"GET /other HTTP/1.1", b"404"),
        (b"POST /metrics HTTP/1.1", b"405"),
        (b"garbage", b"400"),
        (b"GET /metrics SMTP", b"400"),
    ],
)
async def test_respond_status(head: bytes, status: bytes) -> None:
    answer = await metrics.respond(head, render_stub)
    assert answer.startswith(b"HTTP/1.1 " + status + b" ")


async def test_respond_metrics_body_and_headers() -> None:
    answer = await metrics.respond(b"GET /metrics HTTP/1.1", render_stub)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert body == b"# metrics\n"
    assert f"Content-Type: {metrics.CONTENT_TYPE}".encode() in head
    assert b"Content-Length: 10" in head
    head_only = await metrics.respond(b"HEAD /metrics HTTP/1.1", render_stub)
    assert head_only.endswith(b"\r\n\r\n") and b"Content-Length: 10" in head_only


async def test_respond_render_failure_is_500() -> None:
    async def broken() -> bytes:
        raise RuntimeError("boom")

    answer = await metrics.respond(b"GET /metrics HTTP/1.1", broken)
    assert answer.startswith(b"HTTP/1.1 500 ")


async def fetch(port: int, request: bytes) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request)
        chunks = []
        while chunk := await stream.receive_some(65536):
            chunks.append(chunk)
    return b"".join(chunks)


async def test_serve_metrics_answers_over_loopback() -> None:
    render = metrics.renderer(source(document()))
    with trio.socket.socket() as probe:  # find a free port on loopback
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: metrics.serve_metrics(
                render, Endpoint("127.0.0.1", port), task_status=task_status
            )
        )
        answer = await fetch(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK")
        families = {f.name for f in text_string_to_metric_families(body.decode())}
        assert "trivpn_wireguard_peer_receive_bytes" in families
        # a head over the bound gets a 400 (sent whole, so that no unread data resets it)
        answer = await fetch(port, b"GET /" + b"x" * (metrics.MAX_REQUEST_HEAD + 800))
        assert answer.startswith(b"HTTP/1.1 400 ")
        nursery.cancel_scope.cancel()


async def test_serve_status_metrics_reads_the_servers_status_document() -> None:
    with trio.socket.socket() as probe:
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: metrics.serve_status_metrics(
                fake_server(), "tvc0", Endpoint("127.0.0.1", port), task_status=task_status
            )
        )
        answer = await fetch(port, b"GET /metrics HTTP/1.1\r\n\r\n")
        nursery.cancel_scope.cancel()
    text = answer.partition(b"\r\n\r\n")[2].decode()
    found = {f.name: f.samples for f in text_string_to_metric_families(text)}
    received = found["trivpn_wireguard_peer_receive_bytes"]
    assert [(s.labels["name"], s.value) for s in received] == [("alice", 1000)]
    assert found["trivpn_info"][0].labels["interface"] == "tvc0"


async def test_serve_metrics_port_in_use_names_the_key() -> None:
    with trio.socket.socket() as taken:
        await taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(metrics.MetricsError, match=r"metrics\.listen: cannot listen on"):
            await metrics.serve_metrics(render_stub, Endpoint("127.0.0.1", port))


def limits(capacity: int = 1) -> metrics.Limits:
    return metrics.Limits(ConnectionSlots(capacity), RefusalLog("metrics"), 10.0, 2.0)


async def test_a_silent_client_is_cut_off_after_the_head_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, server = trio.testing.memory_stream_pair()
    shared = limits()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(metrics.handle_connection, server, render_stub, shared)
        await client.send_all(b"GET /metrics HTTP/1.1\r\n")  # never the blank line
        start = trio.current_time()
        assert await client.receive_some(100) == b""  # closed without an answer
        assert trio.current_time() - start == pytest.approx(2.0)
    assert shared.slots.in_use == 0


async def test_connections_beyond_the_bound_are_closed_at_once() -> None:
    shared = limits()
    busy = shared.slots.admit()  # answering, so not shed
    assert busy is not None
    client, server = trio.testing.memory_stream_pair()
    await metrics.handle_connection(server, render_stub, shared)
    assert await client.receive_some(100) == b""
    assert shared.slots.in_use == 1


async def test_when_full_the_oldest_idle_connection_makes_room(
    autojump_clock: trio.testing.MockClock,
) -> None:
    shared = limits(capacity=2)
    pairs = [trio.testing.memory_stream_pair() for _ in range(3)]
    async with trio.open_nursery() as nursery:
        for _client, server in pairs:
            nursery.start_soon(metrics.handle_connection, server, render_stub, shared)
            await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        assert await pairs[0][0].receive_some(100) == b""  # the oldest, shed
        assert trio.current_time() == start
        await pairs[2][0].send_all(b"GET /metrics HTTP/1.1\r\n\r\n")  # the newcomer
        assert (await pairs[2][0].receive_some(1000)).startswith(b"HTTP/1.1 200 OK")
        assert trio.current_time() == start
        assert await pairs[1][0].receive_some(100) == b""  # the other, at its head deadline
        assert trio.current_time() - start == pytest.approx(2.0)
    assert shared.slots.in_use == 0


async def test_refused_connections_are_logged_once_per_interval_with_a_count(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    shared = limits()
    assert shared.slots.admit() is not None  # answering: every newcomer is refused
    for _ in range(1000):  # one each 1/32 s (exact in binary): lines at 0, 10, 20 and 30 s
        _client, server = trio.testing.memory_stream_pair()
        await metrics.handle_connection(server, render_stub, shared)
        await trio.sleep(1 / 32)
    refused = "metrics: every connection is busy answering; refusing one"
    assert caplog.messages == [refused] + [f"{refused} (319 similar suppressed)"] * 3


async def free_port() -> int:
    with trio.socket.socket() as probe:
        await probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def hold_half_sent(port: int, count: int) -> list[trio.SocketStream]:
    held = []
    for _ in range(count):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"GET /metrics HTTP/1.1\r\n")  # and never the blank line
        held.append(stream)
    await trio.testing.wait_all_tasks_blocked()
    return held


@pytest.mark.parametrize("max_connections", [metrics.MAX_CONNECTIONS, 8])
async def test_half_sent_requests_held_open_do_not_delay_a_scrape(
    autojump_clock: trio.testing.MockClock, max_connections: int
) -> None:
    # 32 slow clients: within the default bound, and four times a bound of 8 (then shed)
    port = await free_port()
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: metrics.serve_metrics(
                render_stub,
                Endpoint("127.0.0.1", port),
                max_connections=max_connections,
                task_status=task_status,
            )
        )
        held = await hold_half_sent(port, 32)
        start = trio.current_time()
        answer = await fetch(port, b"GET /metrics HTTP/1.1\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200 OK")
        assert trio.current_time() - start < metrics.HEAD_TIMEOUT
        for stream in held:
            await stream.aclose()
        nursery.cancel_scope.cancel()


def test_peer_expiry_and_blocked_by_reason() -> None:
    doc = document()
    doc["counters"]["wireguard"]["blocked"] = 4
    found = samples(doc)
    alice = {"name": "alice", "public_key": "A" * 43 + "="}
    unnamed = {"name": "", "public_key": "B" * 43 + "="}
    expiry = "trivpn_peer_expiry_timestamp_seconds"
    assert value(found, expiry, **alice) == 1_801_440_000  # 2027-02-01T00:00:00Z
    assert [s.labels for s in found[expiry]] == [alice]  # only peers with an expiry
    blocked = "trivpn_peer_blocked"
    assert value(found, blocked, **alice, reason="disabled") == 0
    assert value(found, blocked, **alice, reason="expired") == 0
    assert value(found, blocked, **unnamed, reason="disabled") == 1
    assert value(found, blocked, **unnamed, reason="expired") == 0
    assert value(found, blocked, **unnamed, reason="over_quota") == 0
    drops = "trivpn_packets_dropped"
    assert value(found, drops, protocol="wireguard", reason="blocked") == 4
    doc["counters"]["wireguard"] = {}
    assert value(samples(doc), drops, protocol="wireguard", reason="blocked") == 0  # seen early


def test_quota_and_usage_per_peer_and_rate_limited_drops() -> None:
    doc = document()
    alice, unnamed = doc["wireguard"]["peers"]
    alice.update(quota_bytes=50 * 1024**3, quota_period="month", usage_bytes=7 * 1024**3)
    unnamed.update(quota_bytes=None, quota_period=None, usage_bytes=1234)
    doc["counters"]["wireguard"] = {"rate_limited": 4}
    found = samples(doc)
    alice_labels = {"name": "alice", "public_key": "A" * 43 + "="}
    unnamed_labels = {"name": "", "public_key": "B" * 43 + "="}
    assert value(found, "trivpn_peer_quota_bytes", **alice_labels) == 50 * 1024**3
    assert [s.labels for s in found["trivpn_peer_quota_bytes"]] == [alice_labels]  # only quotas
    assert value(found, "trivpn_peer_usage_bytes", **alice_labels) == 7 * 1024**3
    assert value(found, "trivpn_peer_usage_bytes", **unnamed_labels) == 1234
    drops = "trivpn_packets_dropped"
    assert value(found, drops, protocol="wireguard", reason="rate_limited") == 4
    assert value(found, drops, protocol="toyvpn", reason="rate_limited") == 0  # before any
