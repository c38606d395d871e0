"""Keys in wg(8)'s text format: 32 bytes as 44 characters of standard base64.

``genkey`` returns a clamped private key like ``wg genkey``; ``pubkey`` derives the public
key like ``wg pubkey``; ``genpsk`` returns 32 random bytes like ``wg genpsk``. Randomness is
the caller's (``os.urandom`` outside proto/). Error messages never repeat the key text (it may
be a secret). ``peer_label`` is how every log line names a peer.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Final

from . import curve25519

if TYPE_CHECKING:
    from .cookie import RandomBytes

KEY_TEXT_LEN: Final = 44
LABEL_LEN: Final = 8  # key characters in a peer's log label: enough to tell peers apart


def encode_key(key: bytes) -> str:
    if len(key) != curve25519.KEY_LEN:
        raise ValueError(f"a key is {curve25519.KEY_LEN} bytes, got {len(key)}")
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
    if len(key) != curve25519.KEY_LEN or encode_key(key) != text:
        # Non-canonical text (stray low bits in the last character) decodes ambiguously.
        raise ValueError("a key must be the canonical base64 encoding of 32 bytes")
    return key


def peer_label(public_key: bytes, name: str | None = None) -> str:
    """A peer as logs name it: its name, else the start of its public key ("hU4oBSu5…")."""
    return name or encode_key(public_key)[:LABEL_LEN] + "…"


def generate_private_key(rng: RandomBytes) -> bytes:
    return curve25519.clamp(rng(curve25519.KEY_LEN))


def genkey(rng: RandomBytes) -> str:
    """A new private key, clamped, as text (``wg genkey``)."""
    return encode_key(generate_private_key(rng))


def pubkey(private_key_text: str) -> str:
    """The public key text of a private key text (``wg pubkey``)."""
    return encode_key(curve25519.public_key(parse_key(private_key_text)))


def genpsk(rng: RandomBytes) -> str:
    """A new preshared key as text (``wg genpsk``)."""
    return encode_key(rng(curve25519.KEY_LEN))
