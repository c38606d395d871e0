"""Serving the web admin: Hypercorn's HTTP/1.1 and HTTP/2 connections on trio, bounded.

Hypercorn parses HTTP and runs the ASGI app; the listening and accepting are ours, as for the
metrics endpoint, so that the same limits hold: accept(2) through a shortage of descriptors
(:class:`~trivpn.control.accept.RetryingListener`) and a bound on open connections where a
newcomer sheds the oldest connection still waiting for its request
(:class:`~trivpn.control.connection_slots.ConnectionSlots`): held-open, half-sent requests
cannot lock the operator out. A request's head (and the TLS handshake) must arrive within
HEAD_SECONDS of the connection or of the previous answer (Hypercorn's keep-alive timer, which
runs until a whole head is parsed), so a slow client holds its slot briefly even when there is
room. Hypercorn's access log is off; its errors go to the ``trivpn.web`` logger.
"""

from __future__ import annotations

import ipaddress
import logging
import ssl
from typing import Any, Final, cast

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.events import Event, Updated
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ASGIFramework
from hypercorn.utils import wrap_app
from starlette.types import ASGIApp

from trivpn.config import Endpoint, WebConfig
from trivpn.control.accept import RefusalLog, RetryingListener
from trivpn.control.connection_slots import ConnectionSlots, Slot
from trivpn.control.web.credentials import CredentialsError, WebCredentials

log = logging.getLogger("trivpn")

MAX_CONNECTIONS: Final = 64  # open at once; browsers open about 6 per origin
HEAD_SECONDS: Final = 10.0  # to send a request's head after connecting or the last answer
READ_SECONDS: Final = 30.0  # of silence from a client in the middle of a request


class WebServeError(Exception):
    """The admin cannot serve (its address is taken, its TLS files unreadable)."""


def plain_http_warning(web: WebConfig) -> str | None:
    """The warning for an admin served without TLS beyond the loopback, else None."""
    if web.listen is None or web.tls_cert is not None:
        return None
    if ipaddress.ip_address(web.listen.host).is_loopback:
        return None
    return (
        f"web: serving plain HTTP on {web.listen}, beyond the loopback: the password and the "
        "session cookie cross the network unencrypted; set [web] tls_cert and tls_key, or "
        "listen on 127.0.0.1 and reach it through an SSH tunnel"
    )


def no_login_warning(credentials: WebCredentials) -> str | None:
    """The warning for an admin nobody can log in to yet (no password, no token), else None:
    said at start, so that an operator facing a refused login knows the next step."""
    try:
        if credentials.has_password() or credentials.tokens():
            return None
    except CredentialsError as e:
        return f"web: {e}"
    return (
        "web: no admin password or API token is set, so nobody can log in yet; "
        "set one with `trivpn web passwd`"
    )


def hypercorn_config(web: WebConfig) -> HypercornConfig:
    config = HypercornConfig()
    config.accesslog = None
    config.errorlog = logging.getLogger("trivpn.web")
    config.keep_alive_timeout = HEAD_SECONDS
    config.ssl_handshake_timeout = HEAD_SECONDS
    config.read_timeout = int(READ_SECONDS)
    config.include_server_header = False
    if web.tls_cert is not None and web.tls_key is not None:
        config.certfile, config.keyfile = str(web.tls_cert), str(web.tls_key)
    return config


def tls_context(config: HypercornConfig, listen: Endpoint) -> ssl.SSLContext | None:
    """Hypercorn's TLS context (TLS 1.2+, h2 and http/1.1 by ALPN), None for plain HTTP."""
    try:
        return config.create_ssl_context()
    except (OSError, ssl.SSLError) as e:
        raise WebServeError(f"web: cannot use the TLS files for {listen}: {e}") from e


class _Connection(TCPServer):
    """Hypercorn's connection, telling the slots when it waits for a request (idle: it may
    be shed) and when it has one (busy)."""

    def __init__(
        self, *args: Any, slots: ConnectionSlots, slot: Slot, scope: trio.CancelScope
    ) -> None:
        super().__init__(*args)
        self._slots, self._slot, self._scope = slots, slot, scope

    async def protocol_send(self, event: Event) -> None:
        if isinstance(event, Updated):
            if event.idle:
                self._slots.idle(self._slot, self._scope)
            else:
                self._slots.busy(self._slot)
        await super().protocol_send(event)


async def serve_web(
    app: ASGIApp,
    web: WebConfig,
    *,
    max_connections: int = MAX_CONNECTIONS,
    task_status: trio.TaskStatus[Endpoint] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``web.listen`` (HTTPS when its TLS files are set) until cancelled.

    ``task_status.started`` gets the address bound (its port when ``listen``'s is 0).
    Raises WebServeError, before that, when the address or the TLS files cannot be used.
    """
    if web.listen is None:
        raise WebServeError("web: no [web] listen address")
    listen = web.listen
    config = hypercorn_config(web)
    context = tls_context(config, listen)
    try:
        sockets = await trio.open_tcp_listeners(listen.port, host=listen.host)
    except OSError as e:
        raise WebServeError(f"web.listen: cannot listen on {listen}: {e.strerror or e}") from e
    listeners: list[trio.abc.Listener[Any]] = []
    for sock in sockets:
        retrying = RetryingListener(sock, "web")
        listeners.append(
            retrying
            if context is None
            else trio.SSLListener(retrying, context, https_compatible=True)
        )
    bound = sockets[0].socket.getsockname()
    address = Endpoint(ipaddress.ip_address(bound[0]).compressed, bound[1])
    scheme = "http" if context is None else "https"
    log.info("web: serving %s://%s/", scheme, address)

    # the same callable; hypercorn types its scope as TypedDicts, starlette as a mapping
    asgi = wrap_app(cast(ASGIFramework, app), config.wsgi_max_body_size, "asgi")
    worker = WorkerContext(None)
    slots = ConnectionSlots(max_connections)
    refusals = RefusalLog("web")

    async def handle(stream: trio.abc.Stream) -> None:
        slot = slots.admit()
        if slot is None:
            refusals.refused("every connection is busy answering; refusing one")
            await trio.aclose_forcefully(stream)
            return
        try:
            with trio.CancelScope() as scope:
                slots.idle(slot, scope)
                connection = _Connection(
                    asgi, config, worker, {}, stream, slots=slots, slot=slot, scope=scope
                )
                await connection.run()
            if slot.shed:
                refusals.refused("connections full; shed the oldest idle one")
                await trio.aclose_forcefully(stream)
        except Exception:
            log.exception("web: serving a connection failed")
        finally:
            slots.release(slot)

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handle, listeners)
        task_status.started(address)
