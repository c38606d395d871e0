"""Serving the web admin on the loopback: Hypercorn answers over real TCP, a client that sends
half a request head neither blocks another nor keeps its connection, a full house sheds the
oldest waiting connection, TLS when the files are set, and a failure restarts under supervise.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import ssl
import subprocess
from pathlib import Path

import pytest
import trio
import trio.testing
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from support import web_app

from trivpn.config import Endpoint, WebConfig
from trivpn.control.supervise import Backoff, supervise
from trivpn.control.web import serve
from trivpn.control.web.credentials import WebCredentials
from trivpn.control.web.serve import (
    WebServeError,
    no_login_warning,
    plain_http_warning,
    serve_web,
)

LOOPBACK = WebConfig(listen=Endpoint("127.0.0.1", 0))


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"hello {request.url.path}")


def tiny_app() -> Starlette:
    return Starlette(routes=[Route("/{path:path}", hello)])


async def receive_all(stream: trio.abc.Stream) -> bytes:
    data = b""
    while chunk := await stream.receive_some(65536):
        data += chunk
    return data


async def get(address: Endpoint, path: str = "/") -> bytes:
    """A whole HTTP/1.0 exchange: the answer ends when the server closes."""
    stream = await trio.open_tcp_stream(address.host, address.port)
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        return await receive_all(stream)


async def test_answers_on_the_loopback() -> None:
    async with trio.open_nursery() as nursery:
        address = await nursery.start(serve_web, tiny_app(), LOOPBACK)
        assert address.host == "127.0.0.1" and address.port > 0
        answer = await get(address, "/peers")
        assert answer.startswith(b"HTTP/1.1 200")
        assert answer.endswith(b"hello /peers")
        assert b"\r\nserver:" not in answer.lower()  # no version advertised
        nursery.cancel_scope.cancel()


async def test_half_a_head_blocks_nobody_and_is_cut_off(
    mock_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        address = await nursery.start(serve_web, tiny_app(), LOOPBACK)
        slow = await trio.open_tcp_stream(address.host, address.port)
        await slow.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Half: ")
        # answered while the clock stands still: the slow one holds nothing up
        assert (await get(address, "/other")).endswith(b"hello /other")
        await trio.testing.wait_all_tasks_blocked()
        mock_clock.jump(serve.HEAD_SECONDS + 0.1)
        # still waiting for the rest of its head at the deadline: closed without an answer
        assert await receive_all(slow) == b""
        await slow.aclose()
        nursery.cancel_scope.cancel()


async def test_a_full_house_sheds_the_oldest_waiting_connection() -> None:
    async with trio.open_nursery() as nursery:
        address = await nursery.start(
            functools.partial(serve_web, tiny_app(), LOOPBACK, max_connections=2)
        )
        first = await trio.open_tcp_stream(address.host, address.port)
        second = await trio.open_tcp_stream(address.host, address.port)
        await first.send_all(b"GET / HTTP/1.1\r\n")
        await second.send_all(b"GET / HTTP/1.1\r\n")
        await trio.sleep(0.1)  # both admitted, waiting for their heads
        with trio.fail_after(5):
            assert (await get(address, "/third")).endswith(b"hello /third")
            assert await receive_all(first) == b""  # the oldest made room
        await second.send_all(b"Host: x\r\nConnection: close\r\n\r\n")
        with trio.fail_after(5):
            assert (await receive_all(second)).endswith(b"hello /")
        for stream in (first, second):
            await stream.aclose()
        nursery.cancel_scope.cancel()


async def test_a_taken_address_is_an_error_before_start() -> None:
    async with trio.open_nursery() as nursery:
        address = await nursery.start(serve_web, tiny_app(), LOOPBACK)
        with pytest.raises(WebServeError, match=r"web.listen: cannot listen on 127.0.0.1:\d+"):
            await nursery.start(serve_web, tiny_app(), WebConfig(listen=address))
        nursery.cancel_scope.cancel()


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"),
            *("-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1"),
            *("-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_https_with_the_tls_files(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    web = WebConfig(listen=Endpoint("127.0.0.1", 0), tls_cert=cert, tls_key=key)
    client = ssl.create_default_context(cafile=str(cert))
    async with trio.open_nursery() as nursery:
        address = await nursery.start(serve_web, tiny_app(), web)
        stream = await trio.open_ssl_over_tcp_stream(
            address.host, address.port, ssl_context=client, https_compatible=True
        )
        async with stream:
            await stream.send_all(b"GET /tls HTTP/1.0\r\nHost: x\r\n\r\n")
            answer = b""
            with contextlib.suppress(trio.BrokenResourceError):  # a TLS close without notify
                while chunk := await stream.receive_some(65536):
                    answer += chunk
        assert answer.endswith(b"hello /tls")
        nursery.cancel_scope.cancel()


async def test_unreadable_tls_files_are_an_error(tmp_path: Path) -> None:
    web = WebConfig(
        listen=Endpoint("127.0.0.1", 0), tls_cert=tmp_path / "no.pem", tls_key=tmp_path / "no"
    )
    with pytest.raises(WebServeError, match="cannot use the TLS files"):
        await serve_web(tiny_app(), web)


def test_plain_http_beyond_the_loopback_is_warned() -> None:
    assert plain_http_warning(LOOPBACK) is None
    assert plain_http_warning(WebConfig(listen=Endpoint("::1", 51821))) is None
    assert plain_http_warning(WebConfig()) is None
    warning = plain_http_warning(WebConfig(listen=Endpoint("0.0.0.0", 51821)))
    assert warning is not None and "0.0.0.0:51821" in warning and "tls_cert" in warning
    tls = WebConfig(listen=Endpoint("0.0.0.0", 51821), tls_cert=Path("c"), tls_key=Path("k"))
    assert plain_http_warning(tls) is None


def test_an_admin_nobody_can_log_in_to_is_warned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    web_app.fast_hashing(monkeypatch)
    creds = WebCredentials(tmp_path)
    warning = no_login_warning(creds)
    assert warning is not None and "trivpn web passwd" in warning
    creds.add_token("ci", 0.0)
    assert no_login_warning(creds) is None
    creds.remove_token("ci")
    creds.set_password("a long enough password")
    assert no_login_warning(creds) is None
    (tmp_path / "web" / "tokens.json").write_text("not json")
    (tmp_path / "web" / "password").unlink()
    damaged = no_login_warning(creds)
    assert damaged is not None and "tokens.json" in damaged


async def test_a_failure_restarts_under_supervise(caplog: pytest.LogCaptureFixture) -> None:
    """An app whose failure ends the server (here: one raised by the task) restarts, on the
    same address once it is free again."""
    runs = 0
    fail = trio.Event()

    async def failing(*, task_status: trio.TaskStatus[Endpoint]) -> None:
        nonlocal runs
        runs += 1
        async with trio.open_nursery() as nursery:
            address = await nursery.start(serve_web, tiny_app(), web)
            task_status.started(address)
            if runs == 1:
                await fail.wait()
                raise RuntimeError("boom")

    web = WebConfig(listen=Endpoint("127.0.0.1", 0))
    with caplog.at_level(logging.ERROR, logger="trivpn"):
        async with trio.open_nursery() as nursery:
            first = await nursery.start(
                functools.partial(supervise, "web", failing, backoff=Backoff(first=0.01))
            )
            web = WebConfig(listen=first)  # the restart binds the same port again
            assert (await get(first)).endswith(b"hello /")
            fail.set()
            with trio.fail_after(5):
                while runs < 2:
                    await trio.sleep(0.01)
                await trio.sleep(0.05)
                assert (await get(first, "/again")).endswith(b"hello /again")
            nursery.cancel_scope.cancel()
    assert "web: failed (RuntimeError: boom); restarting in 0.01 s" in caplog.text
