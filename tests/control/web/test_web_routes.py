"""The web app's guard on every route: no auth, no answer (401 under /api, 303 to the login
page elsewhere) but on the public paths; CSRF on a session's state-changing requests; bodies
bounded; the security headers on every response, errors and static files too."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount, Route
from support.fake_admin import FakeAdmin
from support.web_app import Clock, client, fast_hashing, login, make_app, make_credentials

from trivpn.control.web import app as web_app
from trivpn.control.web.credentials import WebCredentials

PEER = "alice-laptop"  # one of the fake admin's peers
STATIC_FILE = "/static/app.css"
PUBLIC = {
    ("POST", "/api/v1/session"),
    ("GET", "/login"),
    ("HEAD", "/login"),
    ("GET", STATIC_FILE),
    ("HEAD", STATIC_FILE),
}
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; img-src 'self' data:; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
}


@pytest.fixture
def creds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> WebCredentials:
    fast_hashing(monkeypatch)
    return make_credentials(tmp_path / "state")


@pytest.fixture
def admin() -> FakeAdmin:
    return FakeAdmin()


@pytest.fixture
def app(admin: FakeAdmin, creds: WebCredentials) -> Starlette:
    return make_app(admin, creds, Clock())


def walk(routes: list[BaseRoute], prefix: str = "") -> Iterator[tuple[str, str]]:
    """Every (method, path) the routes answer, path parameters filled in with a peer's name;
    a mount of an app (the static files) by a file in it, with every method."""
    for route in routes:
        if isinstance(route, Route):
            path = re.sub(r"\{[^}]+\}", PEER, prefix + route.path)
            for method in sorted(route.methods or ()):
                yield method, path
        elif isinstance(route, Mount) and route.routes:
            yield from walk(route.routes, prefix + route.path)
        elif isinstance(route, Mount):
            assert prefix + route.path == "/static", route
            for method in ("GET", "HEAD", "POST", "PATCH", "PUT", "DELETE"):
                yield method, STATIC_FILE
        else:
            pytest.fail(f"a route the walk does not know: {route!r}")


def test_the_walk_sees_every_api_route_and_page(app: Starlette) -> None:
    seen = set(walk(app.routes))
    api = {(m, p) for m, p in seen if p.startswith("/api/") and m != "HEAD"}
    assert len(api) == 10
    assert {("GET", "/peers"), ("GET", "/server"), ("GET", f"/peers/{PEER}")} <= seen
    assert {("GET", "/login"), ("GET", STATIC_FILE)} <= seen
    assert (web_app.STATIC / STATIC_FILE.removeprefix("/static/")).is_file()


async def test_every_route_refuses_without_auth_but_the_public_ones(
    app: Starlette, admin: FakeAdmin
) -> None:
    rows = await admin.peers()
    public_seen = set()
    async with client(app) as http:
        for method, path in walk(app.routes):
            answer = await http.request(method, path)
            if (method, path) in PUBLIC:
                public_seen.add((method, path))
                assert answer.status_code not in (401, 303), (method, path)
            elif path.startswith("/api/"):
                assert answer.status_code == 401, (method, path)
                if method != "HEAD":
                    assert answer.json()["error"].startswith("log in"), (method, path)
            else:
                assert answer.status_code == 303, (method, path)
                assert answer.headers["location"] == "/login", (method, path)
    assert public_seen == PUBLIC
    assert admin.calls == [] and await admin.peers() == rows


@pytest.mark.parametrize(
    ("path", "status"), [("/api/v1/nothing", 401), ("/api", 401), ("/nothing", 303)]
)
async def test_paths_of_no_route_refuse_without_auth_too(
    app: Starlette, path: str, status: int
) -> None:
    async with client(app) as http:
        assert (await http.get(path)).status_code == status
        assert (await http.post(path)).status_code == status


async def test_a_session_needs_its_csrf_token_on_every_state_changing_request(
    app: Starlette, admin: FakeAdmin
) -> None:
    async with client(app) as http:
        token = await login(http)
        del http.headers["X-CSRF-Token"]
        unsafe = [(m, p) for m, p in walk(app.routes) if m in web_app.UNSAFE_METHODS]
        assert len(unsafe) >= 6
        for method, path in unsafe:
            if (method, path) in PUBLIC:
                continue
            for headers in ({}, {"X-CSRF-Token": token[:-1] + "x"}, {"X-CSRF-Token": ""}):
                answer = await http.request(method, path, headers=headers)
                assert answer.status_code == 403, (method, path, headers)
                assert answer.json() == {
                    "error": "missing or wrong X-CSRF-Token header",
                    "field": None,
                }
        assert admin.calls == []
        reset = f"/api/v1/peers/{PEER}/reset-usage"
        answer = await http.post(reset, headers={"X-CSRF-Token": token})
        assert answer.status_code == 200
        assert admin.calls == [("reset", PEER)]
        # the login needs none: it is how a session gets its token
        assert (await http.post("/api/v1/session", json={"password": "x"})).status_code == 401


async def test_an_api_token_needs_no_csrf_token(
    app: Starlette, admin: FakeAdmin, creds: WebCredentials
) -> None:
    token = creds.add_token("ci", 0)
    async with client(app) as http:
        answer = await http.post(
            f"/api/v1/peers/{PEER}/reset-usage", headers={"Authorization": f"Bearer {token}"}
        )
        assert answer.status_code == 200
    assert admin.calls == [("reset", PEER)]


# --- bodies -------------------------------------------------------------------------------


def _body_of(size: int) -> bytes:
    head, tail = b'{"name": "', b'"}'
    return head + b"a" * (size - len(head) - len(tail)) + tail


async def test_a_body_over_64_kib_is_413_and_reaches_nothing(
    app: Starlette, admin: FakeAdmin
) -> None:
    async with client(app) as http:
        await login(http)
        json_type = {"Content-Type": "application/json"}
        answer = await http.post("/api/v1/peers", content=_body_of(web_app.MAX_BODY + 1),
                                 headers=json_type)  # fmt: skip
        assert answer.status_code == 413
        assert answer.json() == {"error": "request body over 65536 bytes", "field": None}

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
            body = _body_of(web_app.MAX_BODY + 1)
            for start in range(0, len(body), 4096):
                yield body[start : start + 4096]

        answer = await http.post("/api/v1/peers", content=chunks(), headers=json_type)
        assert "content-length" not in answer.request.headers
        assert answer.status_code == 413
        assert answer.json()["error"] == "request body over 65536 bytes"
        assert admin.calls == []
        answer = await http.post("/api/v1/peers", content=_body_of(web_app.MAX_BODY),
                                 headers=json_type)  # fmt: skip
        assert answer.status_code == 201
        login_body = b'{"password": "' + b"x" * web_app.MAX_BODY + b'"}'
        assert (await http.post("/api/v1/session", content=login_body)).status_code == 413


# --- headers ------------------------------------------------------------------------------


class Failing(FakeAdmin):
    async def status(self) -> dict[str, Any]:
        raise RuntimeError("a bug")


async def test_security_headers_on_every_kind_of_response(
    creds: WebCredentials, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(Failing(), creds, Clock())
    async with client(app) as anonymous, client(app) as http:
        await login(http)
        answers: dict[str, httpx.Response] = {
            "200 api": await http.get("/api/v1/peers"),
            "200 page": await http.get("/peers"),
            "200 static": await anonymous.get(STATIC_FILE),
            "303": await anonymous.get("/peers"),
            "401": await anonymous.get("/api/v1/peers"),
            "403": await http.post("/api/v1/peers", headers={"X-CSRF-Token": "wrong"}),
            "404 api": await http.get("/api/v1/nothing"),
            "404 page": await http.get("/nothing"),
            "404 static": await anonymous.get("/static/nothing.css"),
            "405": await http.put("/api/v1/peers"),
            "413": await http.post("/api/v1/peers", content=_body_of(web_app.MAX_BODY + 1)),
            "500": await http.get("/api/v1/status"),
        }
    for what, answer in answers.items():
        assert answer.status_code == int(what.split()[0]), (what, answer.text)
        for name, value in SECURITY_HEADERS.items():
            assert answer.headers.get(name) == value, (what, name)
        static = answer.request.url.path.startswith("/static/")
        assert (answer.headers.get("cache-control") == "no-store") != static, what
    assert answers["404 api"].json() == {"error": "Not Found", "field": None}
    assert answers["405"].json() == {"error": "Method Not Allowed", "field": None}
    assert answers["500"].json() == {"error": "the server failed; its log says why", "field": None}
    assert "web: GET /api/v1/status failed" in caplog.messages
