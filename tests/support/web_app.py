"""The web admin's app in process: an httpx client on its ASGI app (under pytest-trio), a clock
the test moves, the password hashed at libsodium's least cost, and a login."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import httpx
import nacl.pwhash
import pytest
from starlette.applications import Starlette

from trivpn.control.web import credentials
from trivpn.control.web.app import create_app
from trivpn.control.web.credentials import WebCredentials

PASSWORD = "correct horse battery"
START = 1_700_000_000.0
CLIENT = ("192.0.2.10", 50000)


@attrs.define
class Clock:
    now: float = START

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def fast_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Argon2id at its least cost, so a login takes microseconds, not 0.2 s."""
    monkeypatch.setattr(credentials, "OPSLIMIT", nacl.pwhash.argon2id.OPSLIMIT_MIN)
    monkeypatch.setattr(credentials, "MEMLIMIT", nacl.pwhash.argon2id.MEMLIMIT_MIN)


def make_credentials(state_dir: Path) -> WebCredentials:
    creds = WebCredentials(state_dir)
    creds.set_password(PASSWORD)
    return creds


def make_app(
    admin: Any, creds: WebCredentials, clock: Callable[[], float], *, secure: bool = False
) -> Starlette:
    return create_app(admin, creds, secure_cookies=secure, clock=clock)


def client(app: Starlette, address: tuple[str, int] = CLIENT) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=address)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def login(http: httpx.AsyncClient, password: str = PASSWORD, **extra: Any) -> str:
    """Logs in (the cookie stays in ``http``); the CSRF token."""
    answer = await http.post("/api/v1/session", json={"password": password, **extra})
    assert answer.status_code == 200, answer.text
    token = answer.json()["csrf_token"]
    assert isinstance(token, str) and len(token) >= 40
    http.headers["X-CSRF-Token"] = token
    return token
