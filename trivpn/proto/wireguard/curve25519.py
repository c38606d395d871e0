"""Curve25519 keys: their length, clamping, and the public key of a private one.

Apart from `crypto` (which re-exports them) so that key text (`keys`, and through it the
config, the registry and the CLI's key and peer commands) loads none of the handshake's and
the data path's primitives: hashlib, hmac and pynacl's bindings were a fifth of `trivpn
genkey`'s start-up (issue 13). `public_key` calls libsodium through pynacl's cffi module,
loaded by its first call: the `nacl.bindings` package loads every binding (~10 ms).
"""

from __future__ import annotations

import functools
from typing import Any, Final

KEY_LEN: Final = 32


def clamp(private_key: bytes) -> bytes:
    """A Curve25519 private key with the standard bits cleared and set."""
    if len(private_key) != KEY_LEN:
        raise ValueError(f"a private key is {KEY_LEN} bytes, got {len(private_key)}")
    b = bytearray(private_key)
    b[0] &= 248
    b[31] = (b[31] & 127) | 64
    return bytes(b)


@functools.cache  # once: a responder makes an ephemeral public key per handshake
def libsodium() -> tuple[Any, Any]:
    """pynacl's cffi ``ffi`` and ``lib``, libsodium initialised (the one place that does)."""
    from nacl._sodium import ffi, lib  # type: ignore[import-not-found]

    if lib.sodium_init() < 0:  # idempotent: what importing nacl.bindings does first
        raise RuntimeError("libsodium: sodium_init failed")
    return ffi, lib


def public_key(private_key: bytes) -> bytes:
    """The X25519 public key of ``private_key`` (clamping applies, as in every implementation)."""
    ffi, lib = libsodium()
    out = ffi.new("unsigned char[]", KEY_LEN)
    if lib.crypto_scalarmult_base(out, clamp(private_key)) != 0:
        raise RuntimeError("libsodium: crypto_scalarmult_base failed")
    return bytes(ffi.buffer(out, KEY_LEN))
