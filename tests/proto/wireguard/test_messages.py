"""Message layouts: round trips, exact offsets, and parsers that never crash."""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.wg_harness import A_ADDR, Net

from trivpn.proto.wireguard import messages as m

_u32 = st.integers(0, 2**32 - 1)


def _b(n: int) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=n, max_size=n)


@given(_u32, _b(32), _b(48), _b(28), _b(16), _b(16))
def test_initiation_round_trip(
    sender: int, eph: bytes, static: bytes, ts: bytes, mac1: bytes, mac2: bytes
) -> None:
    data = m.pack_initiation(sender, eph, static, ts, mac1, mac2)
    assert len(data) == m.INITIATION_LEN
    assert data[:4] == b"\x01\x00\x00\x00" and data[4:8] == struct.pack("<I", sender)
    assert data[8:40] == eph and data[116:132] == mac1 and data[132:] == mac2
    assert m.parse(data) == m.Initiation(sender, eph, static, ts, mac1, mac2)


@given(_u32, _u32, _b(32), _b(16), _b(16), _b(16))
def test_response_round_trip(
    sender: int, receiver: int, eph: bytes, empty: bytes, mac1: bytes, mac2: bytes
) -> None:
    data = m.pack_response(sender, receiver, eph, empty, mac1, mac2)
    assert len(data) == m.RESPONSE_LEN
    assert data[8:12] == struct.pack("<I", receiver) and data[60:76] == mac1
    assert m.parse(data) == m.Response(sender, receiver, eph, empty, mac1, mac2)


@given(_u32, _b(24), _b(32))
def test_cookie_reply_round_trip(receiver: int, nonce: bytes, cookie: bytes) -> None:
    data = m.pack_cookie_reply(receiver, nonce, cookie)
    assert len(data) == m.COOKIE_REPLY_LEN and data[8:32] == nonce
    assert m.parse(data) == m.CookieReply(receiver, nonce, cookie)


@given(_u32, st.integers(0, 2**64 - 1), st.binary(min_size=16, max_size=200))
def test_transport_header_round_trip(receiver: int, counter: int, payload: bytes) -> None:
    data = m.pack_transport_header(receiver, counter) + payload
    assert data[8:16] == struct.pack("<Q", counter)
    assert m.parse(data) == m.TransportHeader(receiver, counter)


def test_pack_rejects_wrong_field_sizes() -> None:
    with pytest.raises(ValueError, match="ephemeral must be 32 bytes"):
        m.pack_initiation(1, bytes(31), bytes(48), bytes(28))
    with pytest.raises(ValueError, match="nonce"):
        m.pack_cookie_reply(1, bytes(23), bytes(32))


@given(st.binary(max_size=300))
def test_parse_accepts_or_raises_malformed_only(data: bytes) -> None:
    try:
        msg = m.parse(data)
    except m.MalformedMessage as e:
        assert e.reason.startswith("malformed_")
    else:
        assert data[1:4] == b"\0\0\0" and data[0] in (1, 2, 3, 4)
        assert type(msg).__name__ in ("Initiation", "Response", "CookieReply", "TransportHeader")


def test_typed_parsers_refuse_the_other_types() -> None:
    with pytest.raises(m.MalformedMessage):
        m.parse_response(m.pack_cookie_reply(1, bytes(24), bytes(32)))


_NET = Net()
_NET.handshake()


@settings(max_examples=300)
@given(
    st.one_of(
        st.binary(max_size=200),
        st.tuples(st.sampled_from([1, 2, 3, 4]), st.binary(max_size=200)).map(
            lambda t: struct.pack("<I", t[0]) + t[1]
        ),
    )
)
def test_device_never_crashes_and_counts_every_drop(data: bytes) -> None:
    before = sum(_NET.b.counters.values())
    out = _NET.b.receive(data, A_ADDR, _NET.now)
    assert out.is_empty()  # random bytes never authenticate
    assert sum(_NET.b.counters.values()) > before


def test_device_handles_large_datagrams() -> None:
    out = _NET.b.receive(struct.pack("<I", 4) + os.urandom(65531), A_ADDR, _NET.now)
    assert out.is_empty() and _NET.b.counters["unknown_index"] >= 1


@pytest.mark.parametrize("kind", [1, 2, 3, 4])
def test_every_length_of_every_type(kind: int) -> None:
    valid = {1: {148}, 2: {92}, 3: {64}, 4: set(range(32, 201))}[kind]
    for length in range(201):
        data = (struct.pack("<I", kind) + bytes(max(0, length - 4)))[:length]
        malformed = _NET.b.counters["malformed"]
        out = _NET.b.receive(data, A_ADDR, _NET.now)
        assert out.is_empty()
        # Exactly the wrong lengths are "malformed"; the right ones fail a later check.
        assert (_NET.b.counters["malformed"] == malformed + 1) == (length not in valid), length


def test_malformed_reason_names_what_message_type_raises() -> None:
    one, two, three, four = (bytes([k, 0, 0, 0]) for k in (1, 2, 3, 4))
    samples = [b"", b"\x01\x00\x00", one + bytes(144), one + bytes(9), two + bytes(88),
               three + bytes(60), four + bytes(28), four + bytes(27),
               bytes([1, 0, 0, 1]) + bytes(144), bytes([9, 0, 0, 0]) + bytes(40)]  # fmt: skip
    for datagram in samples:
        reason = m.malformed_reason(datagram)
        if reason is None:
            assert m.message_type(datagram) == datagram[0]
        else:
            with pytest.raises(m.MalformedMessage) as raised:
                m.message_type(datagram)
            assert raised.value.reason == reason
    assert [m.malformed_reason(d) for d in samples[:4]] == [
        "malformed_too_short", "malformed_too_short", None, "malformed_initiation_length"
    ]  # fmt: skip
    assert m.malformed_reason(samples[8]) == "malformed_unknown_type"
