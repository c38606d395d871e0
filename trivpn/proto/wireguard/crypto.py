"""The cryptographic primitives of the WireGuard paper (section 5.4), and nothing else.

DH is X25519, AEAD is ChaCha20-Poly1305 (IETF, 96-bit nonce: 32 zero bits then a
little-endian 64-bit counter), XAEAD is XChaCha20-Poly1305, HASH is BLAKE2s-256, MAC is
keyed BLAKE2s-128, HMAC is HMAC-BLAKE2s and KDF1/2/3 is HKDF over that HMAC.

DH and the AEADs call libsodium through pynacl's cffi module directly: the public wrappers
cost about 2.5x more per call (argument checks, zero-filled allocations, extra copies), which
shows in handshakes and cookie replies under a flood, and it lets transport keys live in C
memory that we can really wipe.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any, Final

# the key length, clamping and public keys are `curve25519`'s (what key text needs alone)
from .curve25519 import KEY_LEN as KEY_LEN
from .curve25519 import clamp as clamp
from .curve25519 import libsodium
from .curve25519 import public_key as public_key

_ffi, _lib = libsodium()  # initialised: sodium_init picks the CPU's fastest implementations

CONSTRUCTION: Final = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
IDENTIFIER: Final = b"WireGuard v1 zx2c4 Jason@zx2c4.com"
LABEL_MAC1: Final = b"mac1----"
LABEL_COOKIE: Final = b"cookie--"

HASH_LEN: Final = 32
TAG_LEN: Final = 16
MAC_LEN: Final = 16
XNONCE_LEN: Final = 24
TIMESTAMP_LEN: Final = 12

_ZERO_KEY: Final = bytes(KEY_LEN)
_NONCE: Final = struct.Struct("<4xQ")
_TAI64_BASE: Final = 0x400000000000000A  # TAI64 label of the Unix epoch (2**62 + 10 s)
# Drop the low 24 bits of the nanoseconds so the timestamp does not leak fine timing
# (~16.7 ms granularity, below the 20 ms initiation rate limit).
_TAI64N_WHITENER: Final = ~((1 << 24) - 1)


class CryptoError(Exception):
    """Authentication failed, or a DH produced the all-zero (low order) result."""


# --- Curve25519 --------------------------------------------------------------------------


def dh(private_key: bytes, public_key: bytes) -> bytes:
    """X25519; refuses a low-order peer point (all-zero shared secret) with CryptoError."""
    if len(private_key) != KEY_LEN or len(public_key) != KEY_LEN:
        raise ValueError(f"X25519 keys are {KEY_LEN} bytes")
    out = _ffi.new("unsigned char[]", KEY_LEN)
    # libsodium itself refuses an all-zero result (-1); the comparison below says it again
    if _lib.crypto_scalarmult(out, private_key, public_key) != 0:
        raise CryptoError("DH produced the all-zero shared secret")
    shared: bytes = _ffi.buffer(out, KEY_LEN)[:]
    if shared == _ZERO_KEY:
        raise CryptoError("DH produced the all-zero shared secret")
    return shared


# --- BLAKE2s family ----------------------------------------------------------------------


def hash_(*parts: bytes) -> bytes:
    """HASH(a || b || ...) = BLAKE2s-256."""
    h = hashlib.blake2s()
    for part in parts:
        h.update(part)
    return h.digest()


def mac(key: bytes, data: bytes) -> bytes:
    """MAC(key, data) = keyed BLAKE2s with a 16-byte output."""
    return hashlib.blake2s(data, digest_size=MAC_LEN, key=key).digest()


# HMAC by hand: the stdlib's costs twice as much for BLAKE2s, and a KDF's pads of one key are
# hashed once and copied for each output. A handshake computes about twenty.
_BLOCK: Final = 64
_IPAD: Final = bytes(x ^ 0x36 for x in range(256))
_OPAD: Final = bytes(x ^ 0x5C for x in range(256))
# A key's HMAC pads, hashed: a constant key's are made once (``hmac_pads``) and copied per use.
Pads = tuple["hashlib.blake2s", "hashlib.blake2s"]


def hmac_pads(key: bytes) -> Pads:
    if len(key) > _BLOCK:
        key = hashlib.blake2s(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    return hashlib.blake2s(key.translate(_IPAD)), hashlib.blake2s(key.translate(_OPAD))


def _hmac_with(pads: Pads, data: bytes) -> bytes:
    inner, outer = pads[0].copy(), pads[1].copy()
    inner.update(data)
    outer.update(inner.digest())
    return outer.digest()


def hmac_(key: bytes, data: bytes) -> bytes:
    """HMAC(key, data) = HMAC with BLAKE2s-256 (block size 64)."""
    if len(key) > _BLOCK:
        key = hashlib.blake2s(key).digest()
    key = key.ljust(_BLOCK, b"\0")  # a key used once: its pads are hashed with what follows
    inner = hashlib.blake2s(key.translate(_IPAD) + data).digest()
    return hashlib.blake2s(key.translate(_OPAD) + inner).digest()


def kdf1(key: bytes, data: bytes) -> bytes:
    prk = hmac_(key, data)
    return hmac_(prk, b"\x01")


def kdf1_with(key_pads: Pads, data: bytes) -> bytes:
    """kdf1 of the key whose ``hmac_pads`` these are."""
    return hmac_(_hmac_with(key_pads, data), b"\x01")


def kdf2(key: bytes, data: bytes) -> tuple[bytes, bytes]:
    pads = hmac_pads(hmac_(key, data))
    t1 = _hmac_with(pads, b"\x01")
    t2 = _hmac_with(pads, t1 + b"\x02")
    return t1, t2


def kdf3(key: bytes, data: bytes) -> tuple[bytes, bytes, bytes]:
    pads = hmac_pads(hmac_(key, data))
    t1 = _hmac_with(pads, b"\x01")
    t2 = _hmac_with(pads, t1 + b"\x02")
    t3 = _hmac_with(pads, t2 + b"\x03")
    return t1, t2, t3


# --- AEADs -------------------------------------------------------------------------------


def aead_nonce(counter: int) -> bytes:
    """The 96-bit ChaCha20-Poly1305 nonce: 32 zero bits, then the little-endian counter."""
    return _NONCE.pack(counter)


def _seal(encrypt: Any, key: bytes, nonce: bytes, plaintext: bytes, ad: bytes) -> bytes:
    if len(key) != KEY_LEN:
        raise ValueError(f"an AEAD key is {KEY_LEN} bytes")
    size = len(plaintext) + TAG_LEN  # libsodium writes the length only to ask for: NULL
    out = _ffi.new("unsigned char[]", size)
    encrypt(out, _ffi.NULL, plaintext, len(plaintext), ad, len(ad), _ffi.NULL, nonce, key)
    result: bytes = _ffi.buffer(out, size)[:]
    return result


def _open(decrypt: Any, key: bytes, nonce: bytes, ciphertext: bytes, ad: bytes) -> bytes | None:
    if len(key) != KEY_LEN:
        raise ValueError(f"an AEAD key is {KEY_LEN} bytes")
    if len(ciphertext) < TAG_LEN:
        return None
    size = len(ciphertext) - TAG_LEN
    out = _ffi.new("unsigned char[]", max(size, 1))
    rc = decrypt(out, _ffi.NULL, _ffi.NULL, ciphertext, len(ciphertext), ad, len(ad), nonce, key)
    if rc != 0:
        return None
    result: bytes = _ffi.buffer(out, size)[:]
    return result


def aead_encrypt(key: bytes, counter: int, plaintext: bytes, ad: bytes) -> bytes:
    encrypt = _lib.crypto_aead_chacha20poly1305_ietf_encrypt
    return _seal(encrypt, key, _NONCE.pack(counter), plaintext, ad)


def aead_decrypt(key: bytes, counter: int, ciphertext: bytes, ad: bytes) -> bytes:
    decrypt = _lib.crypto_aead_chacha20poly1305_ietf_decrypt
    plaintext = _open(decrypt, key, _NONCE.pack(counter), ciphertext, ad)
    if plaintext is None:
        raise CryptoError("AEAD authentication failed")
    return plaintext


def xaead_encrypt(key: bytes, nonce: bytes, plaintext: bytes, ad: bytes) -> bytes:
    if len(nonce) != XNONCE_LEN:
        raise ValueError(f"an XAEAD nonce is {XNONCE_LEN} bytes")
    return _seal(_lib.crypto_aead_xchacha20poly1305_ietf_encrypt, key, nonce, plaintext, ad)


def xaead_decrypt(key: bytes, nonce: bytes, ciphertext: bytes, ad: bytes) -> bytes:
    if len(nonce) != XNONCE_LEN:
        raise ValueError(f"an XAEAD nonce is {XNONCE_LEN} bytes")
    decrypt = _lib.crypto_aead_xchacha20poly1305_ietf_decrypt
    plaintext = _open(decrypt, key, nonce, ciphertext, ad)
    if plaintext is None:
        raise CryptoError("XAEAD authentication failed")
    return plaintext


# --- TAI64N ------------------------------------------------------------------------------


def tai64n(unix_time: float) -> bytes:
    """The 12-byte TAI64N label of a wall-clock time, whitened; compares bytewise."""
    seconds = int(unix_time // 1)
    nanoseconds = int((unix_time - seconds) * 1_000_000_000) & _TAI64N_WHITENER
    return struct.pack(">QI", _TAI64_BASE + seconds, nanoseconds)


# --- Transport data path -----------------------------------------------------------------

MAX_DATAGRAM: Final = 65535
_ZERO_PAD: Final = bytes(MAX_DATAGRAM)


class TransportKey:
    """One direction's 32-byte ChaCha20-Poly1305 key, held in C memory so it can be wiped."""

    __slots__ = ("_cdata",)

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_LEN:
            raise ValueError(f"a transport key is {KEY_LEN} bytes")
        self._cdata: Any = _ffi.new("unsigned char[]", key)

    @property
    def cdata(self) -> Any:
        return self._cdata

    def wipe(self) -> None:
        _lib.sodium_memzero(self._cdata, KEY_LEN)

    def is_wiped(self) -> bool:
        return bytes(_ffi.buffer(self._cdata, KEY_LEN)) == _ZERO_KEY

    def __repr__(self) -> str:
        return "TransportKey(<secret>)"


class TransportCipher:
    """Seal/open transport messages with one AEAD call each and reused scratch buffers.

    One instance per Device (sans-IO, single-threaded). ``open`` returns a view into the
    scratch buffer that stays valid only until the next call: copy what you keep.
    """

    __slots__ = ("_clen", "_header", "_in", "_out")

    HEADER_LEN: Final = 16

    def __init__(self) -> None:
        size = MAX_DATAGRAM + 64
        self._in: Any = _ffi.new("unsigned char[]", size)
        self._out: Any = _ffi.new("unsigned char[]", size)
        self._clen: Any = _ffi.new("unsigned long long *")
        self._header = struct.Struct("<IIQ")

    def seal(
        self, key: TransportKey, receiver: int, counter: int, packet: bytes, padded_len: int
    ) -> bytes:
        """A whole type-4 datagram: header, then ``packet`` zero-padded to ``padded_len``."""
        n = len(packet)
        src = self._in
        _ffi.memmove(src, packet, n)
        if padded_len > n:
            _ffi.memmove(src + n, _ZERO_PAD, padded_len - n)
        out = self._out
        _ffi.memmove(out, self._header.pack(4, receiver, counter), 16)
        _lib.crypto_aead_chacha20poly1305_ietf_encrypt(
            out + 16, self._clen, src, padded_len, _ffi.NULL, 0, _ffi.NULL,
            _NONCE.pack(counter), key.cdata,
        )  # fmt: skip
        result: bytes = _ffi.buffer(out, 16 + self._clen[0])[:]
        return result

    def open(self, key: TransportKey, counter: int, datagram: bytes) -> memoryview | None:
        """Decrypt the payload of a type-4 datagram; None if it does not authenticate."""
        clen = len(datagram) - 16
        src = _ffi.from_buffer(datagram)
        rc = _lib.crypto_aead_chacha20poly1305_ietf_decrypt(
            self._in, self._clen, _ffi.NULL, src + 16, clen, _ffi.NULL, 0,
            _NONCE.pack(counter), key.cdata,
        )  # fmt: skip
        if rc != 0:
            return None
        return memoryview(_ffi.buffer(self._in, self._clen[0]))
