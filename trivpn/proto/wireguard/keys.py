"""Keys in wg(8)'s text format: 32 bytes as 44 characters of standard base64.

``genkey`` returns a clamped private key like ``wg genkey``; ``pubkey`` derives the public
key like ``wg pubkey``; ``genpsk`` returns 32 random bytes like ``wg genpsk``. Error
messages never repeat the key text (it may be a secret).
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Callable
from typing import Final

from . import crypto

KEY_TEXT_LEN: Final = 44


def encode_key(key: bytes) -> str:
    if len(key) != crypto.KEY_LEN:
        raise ValueError(f"a key is {crypto.KEY_LEN} bytes, got {len(key)}")
    return base64.b64encode(key).decode("ascii")


def parse_key(text: str) -> bytes:
    """32 key bytes from wg's base64 text (surrounding whitespace allowed)."""
    text = text.strip()
    if len(text) != KEY_TEXT_LEN:
        raise ValueError(
            f"a key must be {KEY_TEXT_LEN} base64 characters (32 bytes), got {len(text)} characters"
        )
    if not text.endswith("=") or text.endswith("=="):
        raise ValueError("a key must be 44 base64 characters ending in exactly one '='")
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a key must contain only base64 characters (A-Z a-z 0-9 + /)") from None
    if len(key) != crypto.KEY_LEN or encode_key(key) != text:
        # Non-canonical text (stray low bits in the last character) decodes ambiguously.
        raise ValueError("a key must be the canonical base64 encoding of 32 bytes")
    return key


def generate_private_key(rng: Callable[[int], bytes] = os.urandom) -> bytes:
    return crypto.clamp(rng(crypto.KEY_LEN))


def genkey(rng: Callable[[int], bytes] = os.urandom) -> str:
    """A new private key, clamped, as text (``wg genkey``)."""
    return encode_key(generate_private_key(rng))


def pubkey(private_key_text: str) -> str:
    """The public key text of a private key text (``wg pubkey``)."""
    return encode_key(crypto.public_key(parse_key(private_key_text)))


def genpsk(rng: Callable[[int], bytes] = os.urandom) -> str:
    """A new preshared key as text (``wg genpsk``)."""
    return encode_key(rng(crypto.KEY_LEN))
