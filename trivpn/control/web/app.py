"""The web admin's ASGI app: the API (`api`), the pages (`pages`), the static files, and one
guard in front of them all that authenticates, checks CSRF, bounds request bodies and puts the
security headers on every response (errors and static files too).

Public without auth: the login (``POST /api/v1/session``), the login page and ``/static/``.
Any other path refuses an unauthenticated request: 401 JSON under ``/api``, else 303 to the
login page — a route added later is guarded without saying so.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

import jinja2
from starlette.applications import Starlette
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from trivpn.control.web import pages
from trivpn.control.web.admin import Admin
from trivpn.control.web.api import LOGIN_PATH, Api, error
from trivpn.control.web.auth import CSRF_HEADER, Authenticator, csrf_matches
from trivpn.control.web.credentials import WebCredentials

log = logging.getLogger("trivpn")

HERE: Final = Path(__file__).parent
TEMPLATES: Final = HERE / "templates"
STATIC: Final = HERE / "static"
LOGIN_PAGE: Final = "/login"
MAX_BODY: Final = 64 * 1024  # bytes: the API takes a few small fields
UNSAFE_METHODS: Final = frozenset({"POST", "PATCH", "PUT", "DELETE"})
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def create_app(
    admin: Admin,
    credentials: WebCredentials,
    *,
    secure_cookies: bool,
    clock: Callable[[], float] = time.time,
) -> Starlette:
    """The app; ``secure_cookies`` when served over TLS. ``app.state`` holds ``admin`` and
    ``templates`` (a Jinja2 environment with autoescape) for the pages."""
    authenticator = Authenticator(credentials, clock)
    api = Api(admin, authenticator, secure_cookies=secure_cookies)
    app = Starlette(
        routes=[
            api.mount(),
            *pages.page_routes(),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        middleware=[Middleware(Guard, authenticator=authenticator)],
        exception_handlers={HTTPException: _http_error},
    )
    app.state.admin = admin
    app.state.templates = Jinja2Templates(
        env=jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES),
            autoescape=True,
            undefined=jinja2.StrictUndefined,  # a misspelt name fails the page tests
        )
    )
    return app


def is_api(path: str) -> bool:
    return path == "/api" or path.startswith("/api/")


def is_public(method: str, path: str) -> bool:
    if method == "POST" and path == LOGIN_PATH:
        return True
    return method in ("GET", "HEAD") and (path == LOGIN_PAGE or path.startswith("/static/"))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if is_api(request.url.path):
        return error(exc.status_code, exc.detail, headers=exc.headers)
    return PlainTextResponse(exc.detail, exc.status_code, headers=exc.headers)


class Guard:
    """The middleware in front of every route (see the module's docstring)."""

    def __init__(self, app: ASGIApp, authenticator: Authenticator) -> None:
        self.app = app
        self.authenticator = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # answers name peers (and a page carries its session's CSRF token): not kept by a
        # browser or a proxy; the static files, the same for everyone, may be
        cached = scope["path"].startswith("/static/")
        started = False

        async def send_secured(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                headers.update(SECURITY_HEADERS)
                if not cached:
                    headers["Cache-Control"] = "no-store"
            await send(message)

        try:
            refusal = self._refusal(scope)
            if refusal is None:
                await self.app(scope, _bounded(receive), send_secured)
                return
        except Exception:
            if started:
                raise
            log.exception("web: %s %s failed", scope["method"], scope["path"])
            refusal = error(500, "the server failed; its log says why")
        await refusal(scope, receive, send_secured)

    def _refusal(self, scope: Scope) -> Response | None:
        """The answer to a request that may not go on (and ``state.auth`` set for one that
        may), or None."""
        request = Request(scope)
        method, path = request.method, scope["path"]
        public = is_public(method, path)
        auth = self.authenticator.authenticate(request)
        request.state.auth = auth
        if auth is None and not public:
            if is_api(path):
                return error(401, "log in, or send an API token (Authorization: Bearer …)")
            return RedirectResponse(LOGIN_PAGE, status_code=303)
        unsafe = method in UNSAFE_METHODS and not public
        if auth is not None and unsafe and not csrf_matches(auth, request.headers.get(CSRF_HEADER)):
            return error(403, f"missing or wrong {CSRF_HEADER} header")
        length = Headers(scope=scope).get("content-length", "")
        if length.isdigit() and int(length) > MAX_BODY:
            return error(413, f"request body over {MAX_BODY} bytes")
        return None


def _bounded(receive: Receive) -> Receive:
    """``receive`` that refuses a body beyond `MAX_BODY` (one sent without a length)."""
    total = 0

    async def bounded() -> Message:
        nonlocal total
        message = await receive()
        if message["type"] == "http.request":
            total += len(message.get("body", b""))
            if total > MAX_BODY:
                raise HTTPException(413, f"request body over {MAX_BODY} bytes")
        return message

    return bounded
