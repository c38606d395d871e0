"""mac1/mac2, cookie replies, and the "under load" decision (WireGuard paper, 5.3 and 5.4.7).

mac1 = MAC(HASH("mac1----" || receiver's static public key), msg up to mac1) proves the
sender knows whom it is talking to and is checked before any DH. Under load a responder
also demands mac2 = MAC(cookie, msg up to mac2), where the cookie is MAC(secret, source
address) with a secret rotated every two minutes, and sends the cookie, encrypted with
XChaCha20-Poly1305 under HASH("cookie--" || its public key), to anyone who lacks it.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
from collections.abc import Callable
from typing import Final

from . import crypto
from .messages import CookieReply, pack_cookie_reply
from .timers import COOKIE_REFRESH_TIME

Address = tuple[str, int]
RandomBytes = Callable[[int], bytes]

UNDER_LOAD_AFTER_TIME: Final = 1.0  # stay under load this long after the rate was exceeded
# Per source IP once under load: the reference implementations' 20 per second, burst 5.
RATELIMIT_PER_SECOND: Final = 20.0
RATELIMIT_BURST: Final = 5.0
_RATELIMIT_GC_INTERVAL: Final = 1.0
_NO_MAC2: Final = bytes(16)


@functools.lru_cache(maxsize=4096)  # parsing the text costs more than the cookie's MAC
def address_bytes(addr: Address) -> bytes:
    """The source identity a cookie is bound to: packed IP then big-endian port."""
    return ipaddress.ip_address(addr[0]).packed + int(addr[1]).to_bytes(2, "big")


def mac1_key(public_key: bytes) -> bytes:
    return crypto.hash_(crypto.LABEL_MAC1, public_key)


def cookie_key(public_key: bytes) -> bytes:
    return crypto.hash_(crypto.LABEL_COOKIE, public_key)


class CookieChecker:
    """The receiving side, one per device: checks mac1/mac2 and makes cookie replies."""

    def __init__(self, our_public_key: bytes, rng: RandomBytes) -> None:
        self._mac1_key = mac1_key(our_public_key)
        self._encryption_key = cookie_key(our_public_key)
        self._rng = rng
        self._secret = b""
        self._secret_born = float("-inf")

    def check_mac1(self, msg: bytes) -> bool:
        expected = crypto.mac(self._mac1_key, msg[:-32])
        return hmac.compare_digest(expected, msg[-32:-16])

    def check_mac2(self, msg: bytes, source: bytes, now: float) -> bool:
        if now - self._secret_born > COOKIE_REFRESH_TIME:
            return False  # every cookie we ever gave out is stale
        if msg[-16:] == _NO_MAC2:
            return False  # a sender without a cookie (a flood's, mostly): no MACs to compute
        cookie = crypto.mac(self._secret, source)
        return hmac.compare_digest(crypto.mac(cookie, msg[:-16]), msg[-16:])

    def create_reply(self, msg: bytes, receiver: int, source: bytes, now: float) -> bytes:
        """The type-3 reply to handshake message ``msg`` (whose sender index is ``receiver``)."""
        if now - self._secret_born > COOKIE_REFRESH_TIME:
            self._secret = self._rng(32)
            self._secret_born = now
        cookie = crypto.mac(self._secret, source)
        nonce = self._rng(crypto.XNONCE_LEN)
        sealed = crypto.xaead_encrypt(self._encryption_key, nonce, cookie, msg[-32:-16])
        return pack_cookie_reply(receiver, nonce, sealed)


class CookieGenerator:
    """The sending side, one per peer: adds mac1/mac2 to what we send it, takes its cookies."""

    def __init__(self, peer_public_key: bytes) -> None:
        self._mac1_key = mac1_key(peer_public_key)
        self._decryption_key = cookie_key(peer_public_key)
        self._last_mac1: bytes | None = None
        self._cookie = b""
        self._cookie_born = float("-inf")

    def add_macs(self, msg: bytes, now: float) -> bytes:
        """``msg`` (an initiation or response with zero macs) with mac1 and maybe mac2 set."""
        body = msg[:-32]
        mac1 = crypto.mac(self._mac1_key, body)
        self._last_mac1 = mac1
        if now - self._cookie_born > COOKIE_REFRESH_TIME:
            return body + mac1 + bytes(16)
        return body + mac1 + crypto.mac(self._cookie, body + mac1)

    def consume_reply(self, reply: CookieReply, now: float) -> bool:
        """Store the cookie if the reply answers the last message we sent; False if not."""
        if self._last_mac1 is None:
            return False
        try:
            cookie = crypto.xaead_decrypt(
                self._decryption_key, reply.nonce, reply.encrypted_cookie, self._last_mac1
            )
        except crypto.CryptoError:
            return False
        self._cookie = cookie
        self._cookie_born = now
        return True

    @property
    def has_cookie(self) -> bool:
        return bool(self._cookie)


class LoadMonitor:
    """Decides "under load": more than ``rate`` handshake messages in a one-second bucket,
    and for UNDER_LOAD_AFTER_TIME after that. ``rate`` 0 means every handshake needs a cookie.
    """

    def __init__(self, rate: float) -> None:
        if rate < 0:
            raise ValueError("under_load_rate must be >= 0 handshake messages per second")
        self.rate = rate
        self._bucket_start = float("-inf")
        self._count = 0
        self._until = float("-inf")

    def record(self, now: float) -> bool:
        """Count one handshake message; return whether the device is now under load."""
        if now - self._bucket_start >= 1.0:
            self._bucket_start = now
            self._count = 0
        self._count += 1
        if self._count > self.rate:
            self._until = now + UNDER_LOAD_AFTER_TIME
        return now < self._until

    def under_load(self, now: float) -> bool:
        return now < self._until


class HandshakeRateLimiter:
    """Token bucket per source IP, applied to cookie-bearing handshakes while under load."""

    def __init__(
        self, per_second: float = RATELIMIT_PER_SECOND, burst: float = RATELIMIT_BURST
    ) -> None:
        self._rate = per_second
        self._burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}  # ip -> (tokens, last update)
        self._last_gc = float("-inf")

    def allow(self, ip: str, now: float) -> bool:
        if now - self._last_gc > _RATELIMIT_GC_INTERVAL:
            self._gc(now)
        tokens, last = self._buckets.get(ip, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        if tokens < 1.0:
            self._buckets[ip] = (tokens, now)
            return False
        self._buckets[ip] = (tokens - 1.0, now)
        return True

    def _gc(self, now: float) -> None:
        # A bucket idle long enough to be full again carries no information.
        full_after = self._burst / self._rate
        self._buckets = {ip: v for ip, v in self._buckets.items() if now - v[1] < full_after}
        self._last_gc = now

    def __len__(self) -> int:
        return len(self._buckets)
