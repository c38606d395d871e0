"""The HTTP API (``/api/v1``, JSON): the login and what `Admin` does to peers and reads of the
server. Errors answer ``{"error": message, "field": the request field at fault or null}``.
Authentication, CSRF and the body bound are the app's guard's (`app.Guard`), not repeated here.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from trivpn.control.web.admin import Admin, AdminError
from trivpn.control.web.auth import (
    SESSION_COOKIE,
    Authenticator,
    LoggedIn,
    LoginLimited,
    LoginRefused,
)
from trivpn.control.web.credentials import CredentialsError
from trivpn.registry.clientconf import qr_code

log = logging.getLogger("trivpn")

API_PREFIX: Final = "/api/v1"
LOGIN_PATH: Final = API_PREFIX + "/session"

Handler = Callable[[Request], Awaitable[Response]]


class BadRequest(Exception):
    """A 400: ``str(e)`` says what is wrong, ``field`` names the field (or None)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def error(
    status: int,
    message: str,
    field: str | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    return JSONResponse({"error": message, "field": field, **extra}, status, headers=headers)


async def json_object(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except ValueError as e:  # also a body that is not UTF-8
        raise BadRequest(f"the body is not JSON: {e}") from e
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def _answering_errors(handler: Handler) -> Handler:
    async def handle(request: Request) -> Response:
        try:
            return await handler(request)
        except BadRequest as e:
            return error(400, str(e), e.field)
        except AdminError as e:
            if e.status >= 500:
                log.error("web: %s %s: %s", request.method, request.url.path, e)
            return error(e.status, str(e), e.field)
        except CredentialsError as e:
            log.error("web: %s", e)
            return error(
                500, "the web admin's credentials cannot be read; the server's log says why"
            )

    return handle


class Api:
    def __init__(self, admin: Admin, authenticator: Authenticator, *, secure_cookies: bool) -> None:
        self.admin = admin
        self.authenticator = authenticator
        self.secure_cookies = secure_cookies

    def mount(self) -> Mount:
        def route(path: str, handler: Handler, method: str) -> Route:
            return Route(path, _answering_errors(handler), methods=[method])

        return Mount(
            API_PREFIX,
            routes=[
                route("/session", self.login, "POST"),
                route("/session", self.logout, "DELETE"),
                route("/status", self.status, "GET"),
                route("/peers", self.peers, "GET"),
                route("/peers", self.add_peer, "POST"),
                route("/peers/{name}", self.peer, "GET"),
                route("/peers/{name}", self.update_peer, "PATCH"),
                route("/peers/{name}", self.remove_peer, "DELETE"),
                route("/peers/{name}/reset-usage", self.reset_usage, "POST"),
                route("/peers/{name}/traffic", self.traffic, "GET"),
            ],
        )

    # --- the session ----------------------------------------------------------------------

    async def login(self, request: Request) -> Response:
        body = await json_object(request)
        for key in body:
            if key not in ("password", "totp"):
                raise BadRequest(f"unknown field {key!r}; expected password and totp", key)
        password, totp = body.get("password"), body.get("totp")
        if not isinstance(password, str):
            raise BadRequest("expected a string", "password")
        if totp is not None and not isinstance(totp, str):
            raise BadRequest("expected a string or null", "totp")
        address = request.client.host if request.client else "unknown"
        result = await self.authenticator.login(address, password, totp or None)
        if isinstance(result, LoginLimited):
            return error(
                429,
                f"too many failed logins from here; try again in {result.retry_after} s",
                headers={"Retry-After": str(result.retry_after)},
            )
        if isinstance(result, LoginRefused):
            message = "a TOTP code is needed" if result.totp_required else "wrong password or code"
            return error(401, message, totp_required=result.totp_required)
        assert isinstance(result, LoggedIn)
        response = JSONResponse({"csrf_token": result.csrf_token})
        response.set_cookie(
            SESSION_COOKIE,
            result.session_id,
            path="/",
            secure=self.secure_cookies,
            httponly=True,
            samesite="strict",
        )
        return response

    async def logout(self, request: Request) -> Response:
        self.authenticator.logout(request)
        response = Response(status_code=204)
        response.delete_cookie(
            SESSION_COOKIE, path="/", secure=self.secure_cookies, httponly=True, samesite="strict"
        )
        return response

    # --- the server and its peers ---------------------------------------------------------

    async def status(self, request: Request) -> Response:
        return JSONResponse(await self.admin.status())

    async def peers(self, request: Request) -> Response:
        return JSONResponse({"peers": await self.admin.peers()})

    async def add_peer(self, request: Request) -> Response:
        new = await self.admin.add_peer(await json_object(request))
        qr_svg = await trio.to_thread.run_sync(_qr_svg, new.config)
        return JSONResponse({"peer": new.peer, "config": new.config, "qr_svg": qr_svg}, 201)

    async def peer(self, request: Request) -> Response:
        return JSONResponse(await self.admin.peer(request.path_params["name"]))

    async def update_peer(self, request: Request) -> Response:
        name = request.path_params["name"]
        return JSONResponse(await self.admin.update_peer(name, await json_object(request)))

    async def reset_usage(self, request: Request) -> Response:
        return JSONResponse(await self.admin.reset_usage(request.path_params["name"]))

    async def remove_peer(self, request: Request) -> Response:
        await self.admin.remove_peer(request.path_params["name"])
        return Response(status_code=204)

    async def traffic(self, request: Request) -> Response:
        return JSONResponse(await self.admin.traffic(request.path_params["name"]))


def _qr_svg(text: str) -> str:
    """For a page (no XML declaration, no size: its CSS sizes it), dark on light whatever the
    page's colours, for a phone's WireGuard app to scan. With its xmlns (svg_inline drops it):
    the page parses it as image/svg+xml, where an <svg> without it draws nothing."""
    out = io.BytesIO()
    qr_code(text).save(
        out, kind="svg", xmldecl=False, nl=False, omitsize=True, light="#fff", svgclass="qr"
    )
    return out.getvalue().decode()
