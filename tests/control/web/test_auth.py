"""The web admin's auth: sessions (idle expiry, bounded table), the login's rate limit per
address, TOTP without replay, the password hashed in at most two threads, and logs without
secrets."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import pyotp
import pytest
import trio
import trio.testing
from support.web_app import (
    CLIENT,
    PASSWORD,
    Clock,
    client,
    fast_hashing,
    login,
    make_app,
    make_credentials,
)

from trivpn.control.web import auth
from trivpn.control.web.auth import LoginLimiter, Sessions, limiter_key
from trivpn.control.web.credentials import WebCredentials

RFC_SECRET = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
OTHER = ("198.51.100.7", 40000)


class StatusOnly:
    async def status(self) -> dict[str, Any]:
        return {"interface": "tun0"}


@pytest.fixture
def creds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> WebCredentials:
    fast_hashing(monkeypatch)
    return make_credentials(tmp_path / "state")


@pytest.fixture
def clock() -> Clock:
    return Clock()


def trivpn_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """trivpn's log lines (not httpx's, which another test may have let through)."""
    return [r.getMessage() for r in caplog.records if r.name == "trivpn"]


# --- sessions -----------------------------------------------------------------------------


def test_a_session_has_its_own_csrf_token_and_is_held_by_digest(clock: Clock) -> None:
    sessions = Sessions(clock)
    first, first_csrf = sessions.create()
    second, second_csrf = sessions.create()
    assert len({first, first_csrf, second, second_csrf}) == 4
    assert sessions.csrf_token(first) == first_csrf
    assert sessions.csrf_token(second) == second_csrf
    assert sessions.csrf_token(first + "x") is None
    assert first.encode() not in repr(sessions._table).encode()


def test_a_session_ends_after_12_hours_idle_and_use_keeps_it(clock: Clock) -> None:
    sessions = Sessions(clock)
    used, csrf = sessions.create()
    idle, _ = sessions.create()
    clock.advance(auth.SESSION_IDLE - 1)
    assert sessions.csrf_token(used) == csrf
    clock.advance(1)
    assert sessions.csrf_token(idle) is None
    assert sessions.csrf_token(used) == csrf  # its idle time started again a second ago
    clock.advance(auth.SESSION_IDLE)
    assert sessions.csrf_token(used) is None
    assert len(sessions) == 0


def test_at_most_1000_sessions_the_least_recently_used_dropped(clock: Clock) -> None:
    sessions = Sessions(clock)
    ids = [sessions.create()[0] for _ in range(auth.MAX_SESSIONS)]
    assert sessions.csrf_token(ids[0]) is not None  # used: now the most recent
    sessions.create()
    assert len(sessions) == auth.MAX_SESSIONS
    assert sessions.csrf_token(ids[1]) is None
    assert sessions.csrf_token(ids[0]) is not None
    assert sessions.csrf_token(ids[2]) is not None


# --- the login limiter --------------------------------------------------------------------


def test_the_limiter_allows_10_then_one_each_30_seconds(clock: Clock) -> None:
    limiter = LoginLimiter(clock)
    assert [limiter.take("192.0.2.1") for _ in range(10)] == [None] * 10
    assert limiter.take("192.0.2.1") == pytest.approx(30)
    assert limiter.take("192.0.2.2") is None  # another address: its own bucket
    clock.advance(20)
    assert limiter.take("192.0.2.1") == pytest.approx(10)
    clock.advance(10)
    assert limiter.take("192.0.2.1") is None
    assert limiter.take("192.0.2.1") == pytest.approx(30)
    limiter.give_back("192.0.2.1")
    assert limiter.take("192.0.2.1") is None


def test_the_limiter_table_is_bounded_refilled_buckets_dropped_first(clock: Clock) -> None:
    limiter = LoginLimiter(clock, most=3)
    for _ in range(10):
        limiter.take("10.0.0.1")  # empty
    limiter.take("10.0.0.2")
    clock.advance(30)  # 10.0.0.2 full again, 10.0.0.1 has one
    limiter.take("10.0.0.3")
    limiter.take("10.0.0.4")  # the table is full: 10.0.0.2 (full) goes, not 10.0.0.1
    assert len(limiter._table) == 3
    assert limiter.take("10.0.0.1") is None
    assert limiter.take("10.0.0.1") is not None
    for address in ("10.0.0.5", "10.0.0.6"):  # none full: the least recently failed go
        limiter.take(address)
    assert len(limiter._table) == 3


def test_the_limiter_counts_an_ipv6_host_by_its_64() -> None:
    assert limiter_key("2001:db8:1:2:aaaa::1") == limiter_key("2001:db8:1:2:bbbb::2")
    assert limiter_key("2001:db8:1:2::1") != limiter_key("2001:db8:1:3::1")
    assert limiter_key("::ffff:192.0.2.1") == limiter_key("192.0.2.1") == "192.0.2.1"
    assert limiter_key("unknown") == "unknown"


# --- the login, in the app ----------------------------------------------------------------


async def test_login_sets_a_strict_httponly_cookie_and_logs_no_secret(
    creds: WebCredentials, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "trivpn")
    async with client(make_app(StatusOnly(), creds, clock)) as http:
        answer = await http.post("/api/v1/session", json={"password": PASSWORD})
        assert answer.status_code == 200
        cookie = answer.headers["set-cookie"]
        session_id = http.cookies[auth.SESSION_COOKIE]
        assert cookie.startswith(f"{auth.SESSION_COOKIE}={session_id};")
        attributes = {a.strip().lower() for a in cookie.split(";")[1:]}
        assert attributes == {"httponly", "path=/", "samesite=strict"}
        assert (await http.get("/api/v1/status")).json() == {"interface": "tun0"}
    assert trivpn_lines(caplog) == [f"web: login from {CLIENT[0]}"]
    for secret in (PASSWORD, session_id, answer.json()["csrf_token"]):
        assert secret not in caplog.text


async def test_the_cookie_is_secure_when_served_over_tls(
    creds: WebCredentials, clock: Clock
) -> None:
    async with client(make_app(StatusOnly(), creds, clock, secure=True)) as http:
        answer = await http.post("/api/v1/session", json={"password": PASSWORD})
        assert "secure" in {a.strip().lower() for a in answer.headers["set-cookie"].split(";")}


async def test_a_wrong_password_is_refused_and_logged_without_it(
    creds: WebCredentials, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "trivpn")
    async with client(make_app(StatusOnly(), creds, clock)) as http:
        answer = await http.post("/api/v1/session", json={"password": "guess 12345"})
        assert answer.status_code == 401
        assert answer.json() == {
            "error": "wrong password or code",
            "field": None,
            "totp_required": False,
        }
        assert "set-cookie" not in answer.headers
        assert (await http.get("/api/v1/status")).status_code == 401
    assert trivpn_lines(caplog) == [f"web: login from {CLIENT[0]} refused"]
    assert "guess 12345" not in caplog.text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "password"),
        ({"password": 5}, "password"),
        ({"password": PASSWORD, "totp": 123456}, "totp"),
        ({"password": PASSWORD, "user": "admin"}, "user"),
        ([PASSWORD], None),
    ],
)
async def test_a_malformed_login_is_400_naming_the_field(
    creds: WebCredentials, clock: Clock, body: Any, field: str | None
) -> None:
    async with client(make_app(StatusOnly(), creds, clock)) as http:
        answer = await http.post("/api/v1/session", json=body)
        assert answer.status_code == 400
        assert answer.json()["field"] == field
        assert auth.SESSION_COOKIE not in http.cookies
        not_json = await http.post("/api/v1/session", content=b"{password")
        assert not_json.status_code == 400 and not_json.json()["field"] is None


async def test_logins_are_limited_per_address_with_retry_after(
    creds: WebCredentials, clock: Clock
) -> None:
    app = make_app(StatusOnly(), creds, clock)
    async with client(app) as http, client(app, OTHER) as other:
        for _ in range(auth.LOGIN_BURST):
            answer = await http.post("/api/v1/session", json={"password": "wrong password"})
            assert answer.status_code == 401
        answer = await http.post("/api/v1/session", json={"password": PASSWORD})
        assert answer.status_code == 429  # the right password too: nothing is checked now
        assert answer.headers["retry-after"] == "30"
        assert answer.json()["error"] == "too many failed logins from here; try again in 30 s"
        assert auth.SESSION_COOKIE not in http.cookies
        await login(other)  # another address is not held back
        clock.advance(29)
        answer = await http.post("/api/v1/session", json={"password": PASSWORD})
        assert (answer.status_code, answer.headers["retry-after"]) == (429, "1")
        clock.advance(1)
        await login(http)
        # a success gives back what it took: the one failure allowed now is still there
        answer = await http.post("/api/v1/session", json={"password": "wrong password"})
        assert answer.status_code == 401
        answer = await http.post("/api/v1/session", json={"password": "wrong password"})
        assert answer.status_code == 429


async def test_at_most_two_passwords_are_hashed_at_a_time_off_the_trio_thread(
    creds: WebCredentials, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    trio_thread = threading.get_ident()
    threads: set[int] = set()

    def slow_verify(text: str) -> bool:
        threads.add(threading.get_ident())
        release.wait(10)
        return text == PASSWORD

    monkeypatch.setattr(creds, "verify_password", slow_verify)
    app = make_app(StatusOnly(), creds, clock)
    answers: list[int] = []

    async def attempt(number: int) -> None:
        async with client(app, (f"192.0.2.{number}", 1)) as http:
            answer = await http.post("/api/v1/session", json={"password": PASSWORD})
            answers.append(answer.status_code)

    async with trio.open_nursery() as nursery:
        for number in range(5):
            nursery.start_soon(attempt, number)
        await trio.testing.wait_all_tasks_blocked()
        for authenticator in _authenticators(app):
            stats = authenticator.hashing.statistics()
            assert (stats.borrowed_tokens, stats.tasks_waiting) == (2, 3)
        release.set()
    assert answers == [200] * 5
    assert trio_thread not in threads


def _authenticators(app: Any) -> list[auth.Authenticator]:
    found = [m.kwargs["authenticator"] for m in app.user_middleware]
    assert len(found) == 1
    return found


# --- TOTP ---------------------------------------------------------------------------------


@pytest.fixture
def with_totp(creds: WebCredentials) -> WebCredentials:
    creds.enable_totp("admin@test")
    (creds.directory / "totp").write_text(RFC_SECRET + "\n")
    return creds


async def test_totp_required_accepted_and_a_code_not_accepted_twice(
    with_totp: WebCredentials, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "trivpn")
    totp = pyotp.TOTP(RFC_SECRET)
    app = make_app(StatusOnly(), with_totp, clock)
    async with client(app) as http:
        answer = await http.post("/api/v1/session", json={"password": PASSWORD})
        assert answer.status_code == 401
        assert answer.json() == {
            "error": "a TOTP code is needed",
            "field": None,
            "totp_required": True,
        }
        for body in ({"password": "wrong password"}, {"password": "wrong password",
                                                      "totp": totp.at(clock.now)}):  # fmt: skip
            answer = await http.post("/api/v1/session", json=body)
            assert answer.json() == {
                "error": "wrong password or code",
                "field": None,
                "totp_required": False,  # says nothing of the code before the password
            }
        wrong = totp.at(clock.now + 300)
        answer = await http.post("/api/v1/session", json={"password": PASSWORD, "totp": wrong})
        assert (answer.status_code, answer.json()["error"]) == (401, "wrong password or code")
        code = totp.at(clock.now)
        await login(http, totp=code)
    async with client(app, OTHER) as other:
        replay = await other.post("/api/v1/session", json={"password": PASSWORD, "totp": code})
        assert (replay.status_code, replay.json()["error"]) == (401, "wrong password or code")
        # the step before now is within the drift allowed, but older than the one used
        earlier = totp.at(clock.now - 30)
        answer = await other.post("/api/v1/session", json={"password": PASSWORD, "totp": earlier})
        assert answer.status_code == 401
        clock.advance(30)
        await login(other, totp=totp.at(clock.now))
    assert code not in caplog.text and PASSWORD not in caplog.text


# --- sessions and tokens in the app -------------------------------------------------------


async def test_logout_ends_the_session_at_once(creds: WebCredentials, clock: Clock) -> None:
    async with client(make_app(StatusOnly(), creds, clock)) as http:
        await login(http)
        session_id = http.cookies[auth.SESSION_COOKIE]
        answer = await http.delete("/api/v1/session")
        assert answer.status_code == 204
        assert auth.SESSION_COOKIE not in http.cookies  # the browser is told to drop it
        http.cookies[auth.SESSION_COOKIE] = session_id  # a copy kept: refused all the same
        assert (await http.get("/api/v1/status")).status_code == 401


async def test_an_idle_session_expires(creds: WebCredentials, clock: Clock) -> None:
    async with client(make_app(StatusOnly(), creds, clock)) as http:
        await login(http)
        clock.advance(auth.SESSION_IDLE - 1)
        assert (await http.get("/api/v1/status")).status_code == 200
        clock.advance(auth.SESSION_IDLE - 1)
        assert (await http.get("/api/v1/status")).status_code == 200
        clock.advance(auth.SESSION_IDLE)
        assert (await http.get("/api/v1/status")).status_code == 401


async def test_a_session_is_lost_when_the_server_restarts(
    creds: WebCredentials, clock: Clock
) -> None:
    async with client(make_app(StatusOnly(), creds, clock)) as http:
        await login(http)
        cookie = http.cookies[auth.SESSION_COOKIE]
    async with client(make_app(StatusOnly(), creds, clock)) as http:
        http.cookies[auth.SESSION_COOKIE] = cookie
        assert (await http.get("/api/v1/status")).status_code == 401


async def test_a_bearer_token_works_until_it_is_removed(
    creds: WebCredentials, clock: Clock
) -> None:
    token = creds.add_token("ci", clock.now)
    async with client(make_app(StatusOnly(), creds, clock)) as http:
        bearer = {"Authorization": f"Bearer {token}"}
        assert (await http.get("/api/v1/status", headers=bearer)).status_code == 200
        wrong = {"Authorization": f"Bearer {token[:-1]}x"}
        assert (await http.get("/api/v1/status", headers=wrong)).status_code == 401
        basic = {"Authorization": f"Basic {token}"}
        assert (await http.get("/api/v1/status", headers=basic)).status_code == 401
        creds.remove_token("ci")
        assert (await http.get("/api/v1/status", headers=bearer)).status_code == 401


async def test_a_bad_bearer_token_is_not_rescued_by_a_session_cookie(
    creds: WebCredentials, clock: Clock
) -> None:
    async with client(make_app(StatusOnly(), creds, clock)) as http:
        await login(http)
        assert (await http.get("/api/v1/status")).status_code == 200
        answer = await http.get("/api/v1/status", headers={"Authorization": "Bearer nope"})
        assert answer.status_code == 401


async def test_the_password_step_of_a_totp_login_is_not_a_failure(
    with_totp: WebCredentials, clock: Clock
) -> None:
    async with client(make_app(StatusOnly(), with_totp, clock)) as http:
        for _ in range(auth.LOGIN_BURST + 2):
            answer = await http.post("/api/v1/session", json={"password": PASSWORD})
            assert (answer.status_code, answer.json()["totp_required"]) == (401, True)
        await login(http, totp=pyotp.TOTP(RFC_SECRET).at(clock.now))
