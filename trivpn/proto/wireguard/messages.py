"""The four WireGuard message layouts: pack and parse, with exact lengths.

Every message starts with a little-endian 32-bit type (an 8-bit type and three zero bytes,
read as one word like the reference implementations, so non-zero reserved bytes make an
unknown type). Integers are little-endian. Layouts (offsets in bytes)::

    1 initiation  (148): type 0, sender 4, ephemeral 8, static 40 (32+16),
                         timestamp 88 (12+16), mac1 116, mac2 132
    2 response     (92): type 0, sender 4, receiver 8, ephemeral 12, empty 44 (0+16),
                         mac1 60, mac2 76
    3 cookie reply (64): type 0, receiver 4, nonce 8 (24), cookie 32 (16+16)
    4 transport  (32+) : type 0, receiver 4, counter 8, encrypted payload 16 (n+16)

Parsing raises :class:`MalformedMessage` whose ``reason`` is the counter key to bump.
"""

from __future__ import annotations

import struct
from typing import Final

import attrs

MSG_INITIATION: Final = 1
MSG_RESPONSE: Final = 2
MSG_COOKIE_REPLY: Final = 3
MSG_TRANSPORT: Final = 4

INITIATION_LEN: Final = 148
RESPONSE_LEN: Final = 92
COOKIE_REPLY_LEN: Final = 64
TRANSPORT_HEADER_LEN: Final = 16
TRANSPORT_MIN_LEN: Final = TRANSPORT_HEADER_LEN + 16  # an empty payload (keepalive)
KEEPALIVE_LEN: Final = TRANSPORT_MIN_LEN

_EXPECTED_LEN: Final = {
    MSG_INITIATION: INITIATION_LEN,
    MSG_RESPONSE: RESPONSE_LEN,
    MSG_COOKIE_REPLY: COOKIE_REPLY_LEN,
}
_LENGTH_REASON: Final = {
    MSG_INITIATION: "malformed_initiation_length",
    MSG_RESPONSE: "malformed_response_length",
    MSG_COOKIE_REPLY: "malformed_cookie_reply_length",
    MSG_TRANSPORT: "malformed_transport_length",
}

_INITIATION: Final = struct.Struct("<II32s48s28s16s16s")
_RESPONSE: Final = struct.Struct("<III32s16s16s16s")
_COOKIE_REPLY: Final = struct.Struct("<II24s32s")
_TRANSPORT_HEADER: Final = struct.Struct("<IIQ")
_TYPE: Final = struct.Struct("<I")


class MalformedMessage(ValueError):
    """A datagram that is not a well-formed WireGuard message; ``reason`` names the counter."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@attrs.frozen
class Initiation:
    sender: int
    ephemeral: bytes
    encrypted_static: bytes
    encrypted_timestamp: bytes
    mac1: bytes
    mac2: bytes


@attrs.frozen
class Response:
    sender: int
    receiver: int
    ephemeral: bytes
    encrypted_nothing: bytes
    mac1: bytes
    mac2: bytes


@attrs.frozen
class CookieReply:
    receiver: int
    nonce: bytes
    encrypted_cookie: bytes


@attrs.frozen
class TransportHeader:
    receiver: int
    counter: int


Message = Initiation | Response | CookieReply | TransportHeader


def malformed_reason(datagram: bytes) -> str | None:
    """Why a datagram is no well-formed message (its counter's name); None if it is one.
    Junk takes this path at flood rates: it raises nothing and allocates nothing."""
    if len(datagram) < 4:
        return "malformed_too_short"
    (kind,) = _TYPE.unpack_from(datagram)
    expected = _EXPECTED_LEN.get(kind)
    if expected is not None:
        return None if len(datagram) == expected else _LENGTH_REASON[kind]
    if kind == MSG_TRANSPORT:
        return None if len(datagram) >= TRANSPORT_MIN_LEN else _LENGTH_REASON[kind]
    return "malformed_unknown_type"


def message_type(datagram: bytes) -> int:
    """The checked type of a datagram (1..4), raising MalformedMessage for anything else."""
    reason = malformed_reason(datagram)
    if reason is not None:
        raise MalformedMessage(reason)
    return datagram[0]


def parse(datagram: bytes) -> Message:
    """Any of the four messages; the transport payload stays in ``datagram[16:]``."""
    kind = message_type(datagram)
    if kind == MSG_INITIATION:
        return parse_initiation(datagram)
    if kind == MSG_RESPONSE:
        return parse_response(datagram)
    if kind == MSG_COOKIE_REPLY:
        return parse_cookie_reply(datagram)
    return parse_transport_header(datagram)


def _expect(datagram: bytes, kind: int) -> None:
    if message_type(datagram) != kind:
        raise MalformedMessage("malformed_unexpected_type")


def parse_initiation(datagram: bytes) -> Initiation:
    _expect(datagram, MSG_INITIATION)
    _, sender, eph, static, ts, mac1, mac2 = _INITIATION.unpack(datagram)
    return Initiation(sender, eph, static, ts, mac1, mac2)


def parse_response(datagram: bytes) -> Response:
    _expect(datagram, MSG_RESPONSE)
    _, sender, receiver, eph, empty, mac1, mac2 = _RESPONSE.unpack(datagram)
    return Response(sender, receiver, eph, empty, mac1, mac2)


def parse_cookie_reply(datagram: bytes) -> CookieReply:
    _expect(datagram, MSG_COOKIE_REPLY)
    _, receiver, nonce, cookie = _COOKIE_REPLY.unpack(datagram)
    return CookieReply(receiver, nonce, cookie)


def parse_transport_header(datagram: bytes) -> TransportHeader:
    _expect(datagram, MSG_TRANSPORT)
    _, receiver, counter = _TRANSPORT_HEADER.unpack_from(datagram)
    return TransportHeader(receiver, counter)


_ZERO_MAC: Final = bytes(16)


def pack_initiation(
    sender: int,
    ephemeral: bytes,
    encrypted_static: bytes,
    encrypted_timestamp: bytes,
    mac1: bytes = _ZERO_MAC,
    mac2: bytes = _ZERO_MAC,
) -> bytes:
    _check_len("ephemeral", ephemeral, 32)
    _check_len("encrypted_static", encrypted_static, 48)
    _check_len("encrypted_timestamp", encrypted_timestamp, 28)
    _check_len("mac1", mac1, 16)
    _check_len("mac2", mac2, 16)
    return _INITIATION.pack(
        MSG_INITIATION, sender, ephemeral, encrypted_static, encrypted_timestamp, mac1, mac2
    )


def pack_response(
    sender: int,
    receiver: int,
    ephemeral: bytes,
    encrypted_nothing: bytes,
    mac1: bytes = _ZERO_MAC,
    mac2: bytes = _ZERO_MAC,
) -> bytes:
    _check_len("ephemeral", ephemeral, 32)
    _check_len("encrypted_nothing", encrypted_nothing, 16)
    _check_len("mac1", mac1, 16)
    _check_len("mac2", mac2, 16)
    return _RESPONSE.pack(MSG_RESPONSE, sender, receiver, ephemeral, encrypted_nothing, mac1, mac2)


def pack_cookie_reply(receiver: int, nonce: bytes, encrypted_cookie: bytes) -> bytes:
    _check_len("nonce", nonce, 24)
    _check_len("encrypted_cookie", encrypted_cookie, 32)
    return _COOKIE_REPLY.pack(MSG_COOKIE_REPLY, receiver, nonce, encrypted_cookie)


def pack_transport_header(receiver: int, counter: int) -> bytes:
    return _TRANSPORT_HEADER.pack(MSG_TRANSPORT, receiver, counter)


def _check_len(name: str, value: bytes, expected: int) -> None:
    if len(value) != expected:
        raise ValueError(f"{name} must be {expected} bytes, got {len(value)}")
