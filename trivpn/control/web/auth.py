"""Who may use the web admin: cookie sessions (with a CSRF token each), API tokens, and the
login (its rate limit per source address, Argon2id in a worker thread, TOTP without replay).

Sessions live in memory only, so a restart logs everyone out. A session id is 32 random bytes
held by its SHA-256 alone: the table never holds what a cookie carries, and a lookup by digest
leaks nothing useful through its timing. Secrets (password, code, token, cookie) are never
logged.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import math
import secrets
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

import attrs
import trio
from starlette.requests import HTTPConnection

from trivpn.control.web.credentials import WebCredentials

log = logging.getLogger("trivpn")

SESSION_COOKIE: Final = "trivpn_session"
CSRF_HEADER: Final = "X-CSRF-Token"
SESSION_BYTES: Final = 32
SESSION_IDLE: Final = 12 * 3600.0  # seconds without a request before a session ends
MAX_SESSIONS: Final = 1000  # beyond, the least recently used one is dropped
LOGIN_BURST: Final = 10  # failed logins an address may make at once ...
LOGIN_REFILL: Final = 30.0  # ... and one more each this many seconds
MAX_ADDRESSES: Final = 10_000  # the limiter's table; ~100 bytes an entry
HASH_THREADS: Final = 2  # Argon2id at 64 MiB each: at most this many at a time


@attrs.frozen
class Auth:
    """Who made a request, for handlers and pages (``request.state.auth``)."""

    who: str  # "session", or "token NAME"
    csrf_token: str | None = None  # a cookie session's; None for an API token


def request_auth(request: HTTPConnection) -> Auth | None:
    """The request's `Auth` as the app's middleware set it (None on a public path)."""
    auth = request.state.auth
    assert auth is None or isinstance(auth, Auth)
    return auth


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


@attrs.define
class _Session:
    csrf_token: str
    last_used: float


class Sessions:
    """Cookie sessions in memory, by the SHA-256 of their id; idle ones expire."""

    def __init__(
        self, clock: Callable[[], float], *, idle: float = SESSION_IDLE, most: int = MAX_SESSIONS
    ) -> None:
        self._clock = clock
        self._idle = idle
        self._most = most
        self._table: OrderedDict[bytes, _Session] = OrderedDict()  # least recently used first

    def __len__(self) -> int:
        return len(self._table)

    def create(self) -> tuple[str, str]:
        """A new session: its id (for the cookie) and its CSRF token."""
        session_id = secrets.token_urlsafe(SESSION_BYTES)
        csrf_token = secrets.token_urlsafe(SESSION_BYTES)
        self._table[_digest(session_id)] = _Session(csrf_token, self._clock())
        while len(self._table) > self._most:
            self._table.popitem(last=False)
        return session_id, csrf_token

    def csrf_token(self, session_id: str) -> str | None:
        """The CSRF token of a live session (and its idle timer restarted), else None."""
        key = _digest(session_id)
        session = self._table.get(key)
        if session is None:
            return None
        now = self._clock()
        if now - session.last_used >= self._idle:
            del self._table[key]
            return None
        session.last_used = now
        self._table.move_to_end(key)
        return session.csrf_token

    def remove(self, session_id: str) -> None:
        self._table.pop(_digest(session_id), None)


@attrs.define
class _Bucket:
    level: float  # failures still allowed now
    updated: float


def limiter_key(address: str) -> str:
    """An IPv6 client by its /64 (one host's usual share: it may hold all of them)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class LoginLimiter:
    """Failed logins per source address: a bucket of ``burst`` refilled one per ``refill``
    seconds. A login takes one before its password is checked (so parallel guesses count)
    and gives it back when it succeeds."""

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        burst: int = LOGIN_BURST,
        refill: float = LOGIN_REFILL,
        most: int = MAX_ADDRESSES,
    ) -> None:
        self._clock = clock
        self._burst = burst
        self._refill = refill
        self._most = most
        self._table: OrderedDict[str, _Bucket] = OrderedDict()  # least recently failed first

    def _level(self, bucket: _Bucket, now: float) -> float:
        return min(float(self._burst), bucket.level + (now - bucket.updated) / self._refill)

    def take(self, address: str) -> float | None:
        """None when ``address`` may try; else the seconds until it may (Retry-After)."""
        key = limiter_key(address)
        now = self._clock()
        bucket = self._table.get(key)
        level = float(self._burst) if bucket is None else self._level(bucket, now)
        if level < 1:
            return (1 - level) * self._refill
        if bucket is None:
            self._make_room(now)
            bucket = self._table[key] = _Bucket(level, now)
        bucket.level, bucket.updated = level - 1, now
        self._table.move_to_end(key)
        return None

    def give_back(self, address: str) -> None:
        bucket = self._table.get(limiter_key(address))
        if bucket is not None:
            bucket.level = min(float(self._burst), bucket.level + 1)

    def _make_room(self, now: float) -> None:
        if len(self._table) < self._most:
            return
        # a full bucket is the same as none: drop those first; then the least recently failed
        for key in [k for k, b in self._table.items() if self._level(b, now) >= self._burst]:
            del self._table[key]
        while len(self._table) >= self._most:
            self._table.popitem(last=False)


@attrs.frozen
class LoggedIn:
    session_id: str
    csrf_token: str


@attrs.frozen
class LoginRefused:
    totp_required: bool  # the password was right; a TOTP code is needed too


@attrs.frozen
class LoginLimited:
    retry_after: int  # seconds


LoginResult = LoggedIn | LoginRefused | LoginLimited


class Authenticator:
    """Logs in and out, and says who made a request."""

    def __init__(self, credentials: WebCredentials, clock: Callable[[], float]) -> None:
        self.credentials = credentials
        self.sessions = Sessions(clock)
        self.limiter = LoginLimiter(clock)
        self.hashing = trio.CapacityLimiter(HASH_THREADS)  # Argon2id's worker threads
        self._clock = clock  # the wall clock: TOTP steps are of Unix time
        self._last_totp_step = -1  # a code's step must be later than this: no replay

    def authenticate(self, request: HTTPConnection) -> Auth | None:
        """A request's bearer token, else its session cookie; None for neither (a bad
        Authorization header is None, not a fallback to the cookie)."""
        header = request.headers.get("authorization")
        if header is not None:
            scheme, _, token = header.partition(" ")
            name = (
                self.credentials.verify_token(token.strip()) if scheme.lower() == "bearer" else None
            )
            return None if name is None else Auth(f"token {name}")
        session_id = request.cookies.get(SESSION_COOKIE)
        if not session_id:
            return None
        csrf_token = self.sessions.csrf_token(session_id)
        return None if csrf_token is None else Auth("session", csrf_token)

    async def login(self, address: str, password: str, totp: str | None) -> LoginResult:
        wait = self.limiter.take(address)  # before the hash: parallel guesses count too
        if wait is not None:
            return LoginLimited(max(1, math.ceil(wait)))
        ok = await trio.to_thread.run_sync(
            self.credentials.verify_password, password, limiter=self.hashing
        )
        if ok and self.credentials.totp_enabled():
            if totp is None:
                self.limiter.give_back(address)  # the first of two steps, not a failure
                return LoginRefused(totp_required=True)
            ok = self._totp_fresh(totp)
        if not ok:
            log.warning("web: login from %s refused", address)
            return LoginRefused(totp_required=False)
        self.limiter.give_back(address)
        log.info("web: login from %s", address)
        return LoggedIn(*self.sessions.create())

    def _totp_fresh(self, code: str) -> bool:
        step = self.credentials.verify_totp(code, self._clock())
        if step is None or step <= self._last_totp_step:
            return False
        self._last_totp_step = step
        return True

    def logout(self, request: HTTPConnection) -> None:
        session_id = request.cookies.get(SESSION_COOKIE)
        if session_id:
            self.sessions.remove(session_id)


def csrf_matches(auth: Auth, header: str | None) -> bool:
    """A cookie session's state-changing request carries its CSRF token (compared in constant
    time); an API token's needs none (no browser sends it on its own)."""
    if auth.csrf_token is None:
        return True
    return header is not None and hmac.compare_digest(header.encode(), auth.csrf_token.encode())
