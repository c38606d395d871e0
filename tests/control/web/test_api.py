"""The HTTP API over `Admin` (a fake here: tests/control/web/test_admin.py tests the real one):
each route's answer and its errors as ``{"error", "field"}``, and a new peer's config in its
201 alone — never in a later answer or the log."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.fake_admin import FakeAdmin
from support.web_app import Clock, client, fast_hashing, login, make_app, make_credentials

from trivpn.control.web.admin import AdminError, NewPeer
from trivpn.registry.clientconf import qr_code

PEER = "alice-laptop"
STATIC = "carol@office"  # the fake's peer of the config file
LIMIT_FIELDS = ("expires", "quota", "rate", "rate_down", "rate_up")


class ApiAdmin(FakeAdmin):
    """The fake admin refusing as `Admin` does: 404 unknown peer, 409 a static peer's change
    or a name in use, 400 an unknown field or a value it cannot read."""

    def _known(self, name: str) -> None:
        if name not in self.rows:
            raise AdminError(404, f"no peer named {name!r}")

    def _check(self, body: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
        for field, value in body.items():
            if field not in allowed:
                raise AdminError(400, f"{field}: unknown field", field)
            if value == "lots":
                raise AdminError(400, f"{field}: 'lots' is not a size", field)

    def _not_static(self, name: str) -> None:
        self._known(name)
        if self.rows[name]["source"] == "config":
            raise AdminError(409, "a peer of the config file; set it there and reload")

    async def peer(self, name: str) -> dict[str, Any]:
        self._known(name)
        return await super().peer(name)

    async def add_peer(self, body: Mapping[str, Any]) -> NewPeer:
        self._check(body, ("name", *LIMIT_FIELDS))
        if body["name"] in self.rows:
            raise AdminError(409, f"a peer named {body['name']!r} exists")
        return await super().add_peer(body)

    async def update_peer(self, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        self._check(body, ("enabled", *LIMIT_FIELDS))
        self._not_static(name)
        return await super().update_peer(name, body)

    async def reset_usage(self, name: str) -> dict[str, Any]:
        self._known(name)
        return await super().reset_usage(name)

    async def remove_peer(self, name: str) -> None:
        self._not_static(name)
        await super().remove_peer(name)

    async def traffic(self, name: str) -> dict[str, Any]:
        self._known(name)
        return await super().traffic(name)


@pytest.fixture
def admin() -> ApiAdmin:
    return ApiAdmin()


@pytest.fixture
async def http(
    admin: ApiAdmin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[httpx.AsyncClient]:
    fast_hashing(monkeypatch)
    app = make_app(admin, make_credentials(tmp_path / "state"), Clock())
    async with client(app) as http:
        await login(http)
        yield http


def not_found(name: str) -> dict[str, Any]:
    return {"error": f"no peer named {name!r}", "field": None}


async def test_status(http: httpx.AsyncClient, admin: ApiAdmin) -> None:
    answer = await http.get("/api/v1/status")
    assert answer.status_code == 200
    assert answer.json() == await admin.status()
    assert answer.headers["cache-control"] == "no-store"


async def test_peers_and_a_peer(http: httpx.AsyncClient, admin: ApiAdmin) -> None:
    answer = await http.get("/api/v1/peers")
    assert answer.status_code == 200
    assert answer.json() == {"peers": await admin.peers()}
    assert [row["name"] for row in answer.json()["peers"]][:2] == [PEER, "bob-phone"]
    answer = await http.get(f"/api/v1/peers/{STATIC}")
    assert answer.status_code == 200
    assert answer.json() == await admin.peer(STATIC)
    answer = await http.get("/api/v1/peers/nobody")
    assert (answer.status_code, answer.json()) == (404, not_found("nobody"))


async def test_add_answers_the_config_and_its_qr_code_once_and_never_again(
    http: httpx.AsyncClient, admin: ApiAdmin, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    body = {"name": "erin", "quota": "50GiB/month", "rate_down": "20Mbit", "expires": None}
    answer = await http.post("/api/v1/peers", json=body)
    assert answer.status_code == 201
    assert answer.headers["cache-control"] == "no-store"
    new = answer.json()
    assert set(new) == {"peer", "config", "qr_svg"}
    assert admin.calls == [("add", body)]
    assert new["peer"] == await admin.peer("erin")
    config = new["config"]
    private_key = config.split("PrivateKey = ", 1)[1].split("\n", 1)[0]
    assert len(private_key) == 44
    # the inline SVG of the config's QR code, with its xmlns: without it the page's
    # DOMParser makes no SVG element of it, and the browser draws nothing
    svg, xmlns = new["qr_svg"], ' xmlns="http://www.w3.org/2000/svg"'
    assert svg.startswith(f'<svg{xmlns} viewBox="0 0 ') and "style" not in svg  # the CSP
    assert svg.replace(xmlns, "", 1) == qr_code(config).svg_inline(
        omitsize=True, light="#fff", svgclass="qr"
    )
    later = [
        await http.get("/api/v1/peers/erin"),
        await http.get("/api/v1/peers"),
        await http.get("/api/v1/status"),
        await http.get("/api/v1/peers/erin/traffic"),
        await http.patch("/api/v1/peers/erin", json={"enabled": False}),
        await http.post("/api/v1/peers/erin/reset-usage"),
        await http.post("/api/v1/peers", json={"name": "erin"}),  # 409
        await http.get("/peers/erin"),
        await http.get("/peers"),
    ]
    for answer in later:
        assert answer.status_code in (200, 409), answer.request.url
        assert private_key not in answer.text, answer.request.url
        assert "PrivateKey" not in answer.text, answer.request.url
    assert private_key not in caplog.text and "PrivateKey" not in caplog.text


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"name": "erin", "quota": "lots"}, 400, "quota"),
        ({"name": "erin", "disabled": True}, 400, "disabled"),
        ({"name": PEER}, 409, None),
    ],
)
async def test_add_refused(
    http: httpx.AsyncClient, admin: ApiAdmin, body: dict[str, Any], status: int, field: str
) -> None:
    rows = await admin.peers()
    answer = await http.post("/api/v1/peers", json=body)
    assert answer.status_code == status
    error = answer.json()
    assert set(error) == {"error", "field"} and error["field"] == field
    assert error["error"]
    assert await admin.peers() == rows


@pytest.mark.parametrize("content", [b"", b"{", b"\xff", b"[]", b'"erin"', b"null"])
async def test_a_body_that_is_not_a_json_object_is_400(
    http: httpx.AsyncClient, admin: ApiAdmin, content: bytes
) -> None:
    for method, path in (("POST", "/api/v1/peers"), ("PATCH", f"/api/v1/peers/{PEER}")):
        answer = await http.request(method, path, content=content)
        assert answer.status_code == 400, (method, content)
        assert answer.json()["field"] is None
        assert answer.json()["error"].startswith(("the body is not JSON", "the body must be"))
    assert admin.calls == []


async def test_update(http: httpx.AsyncClient, admin: ApiAdmin) -> None:
    answer = await http.patch(f"/api/v1/peers/{PEER}", json={"enabled": False})
    assert answer.status_code == 200
    assert answer.json() == await admin.peer(PEER)
    assert (answer.json()["enabled"], answer.json()["state"]) == (False, "disabled")
    assert admin.calls == [("update", (PEER, {"enabled": False}))]


@pytest.mark.parametrize(
    ("name", "body", "status", "field"),
    [
        (PEER, {"rate_up": "lots"}, 400, "rate_up"),
        (PEER, {"name": "bob"}, 400, "name"),
        ("nobody", {"enabled": True}, 404, None),
        (STATIC, {"enabled": False}, 409, None),
    ],
)
async def test_update_refused(
    http: httpx.AsyncClient,
    admin: ApiAdmin,
    name: str,
    body: dict[str, Any],
    status: int,
    field: str | None,
) -> None:
    rows = await admin.peers()
    answer = await http.patch(f"/api/v1/peers/{name}", json=body)
    assert (answer.status_code, answer.json()["field"]) == (status, field)
    if status == 409:
        assert answer.json()["error"] == "a peer of the config file; set it there and reload"
    assert await admin.peers() == rows


async def test_reset_usage(http: httpx.AsyncClient, admin: ApiAdmin) -> None:
    for name in (PEER, STATIC):  # a static peer's usage resets too, as in the CLI
        answer = await http.post(f"/api/v1/peers/{name}/reset-usage")
        assert answer.status_code == 200
        assert answer.json()["usage_bytes"] == 0
        assert answer.json() == await admin.peer(name)
    answer = await http.post("/api/v1/peers/nobody/reset-usage")
    assert (answer.status_code, answer.json()) == (404, not_found("nobody"))
    assert admin.calls == [("reset", PEER), ("reset", STATIC)]


async def test_remove(http: httpx.AsyncClient, admin: ApiAdmin) -> None:
    answer = await http.delete(f"/api/v1/peers/{PEER}")
    assert (answer.status_code, answer.content) == (204, b"")
    assert PEER not in admin.rows
    answer = await http.get(f"/api/v1/peers/{PEER}")
    assert (answer.status_code, answer.json()) == (404, not_found(PEER))
    answer = await http.delete(f"/api/v1/peers/{PEER}")
    assert (answer.status_code, answer.json()) == (404, not_found(PEER))
    answer = await http.delete(f"/api/v1/peers/{STATIC}")
    assert answer.status_code == 409
    assert STATIC in admin.rows
    assert admin.calls == [("remove", PEER)]


async def test_traffic(http: httpx.AsyncClient, admin: ApiAdmin) -> None:
    answer = await http.get(f"/api/v1/peers/{PEER}/traffic")
    assert answer.status_code == 200
    assert answer.json() == await admin.traffic(PEER)
    assert answer.json()["interval"] == 10 and len(answer.json()["samples"]) == 360
    answer = await http.get("/api/v1/peers/nobody/traffic")
    assert (answer.status_code, answer.json()) == (404, not_found("nobody"))


class BusyAdmin(ApiAdmin):
    async def peers(self) -> list[dict[str, Any]]:
        raise AdminError(503, "the peer registry is busy; try again")


async def test_a_registry_failure_keeps_its_status_and_is_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fast_hashing(monkeypatch)
    app = make_app(BusyAdmin(), make_credentials(tmp_path / "state"), Clock())
    async with client(app) as http:
        await login(http)
        answer = await http.get("/api/v1/peers")
    assert answer.status_code == 503
    assert answer.json() == {"error": "the peer registry is busy; try again", "field": None}
    assert "web: GET /api/v1/peers: the peer registry is busy; try again" in caplog.messages
