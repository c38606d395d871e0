"""The responder's cookie checks: what a flood without cookies costs, and what passes."""

from __future__ import annotations

import os

import pytest

from trivpn.proto.wireguard import crypto
from trivpn.proto.wireguard.cookie import CookieChecker, CookieGenerator, address_bytes
from trivpn.proto.wireguard.messages import parse_cookie_reply

SOURCE = ("192.0.2.6", 40000)


def _initiation(generator: CookieGenerator, now: float) -> bytes:
    return generator.add_macs(bytes([1, 0, 0, 0]) + os.urandom(112) + bytes(32), now)


def test_mac2_of_zeros_is_refused_without_a_mac(monkeypatch: pytest.MonkeyPatch) -> None:
    server_key = crypto.public_key(os.urandom(32))
    checker, generator = CookieChecker(server_key, os.urandom), CookieGenerator(server_key)
    source = address_bytes(SOURCE)
    first = _initiation(generator, 10.0)
    reply = checker.create_reply(first, 1, source, 10.0)  # the secret is born
    calls: list[bytes] = []
    real_mac = crypto.mac

    def counting_mac(key: bytes, data: bytes) -> bytes:
        calls.append(data)
        return real_mac(key, data)

    with monkeypatch.context() as patch:
        patch.setattr(crypto, "mac", counting_mac)
        assert not checker.check_mac2(first, source, 11.0)
        assert calls == []  # no cookie, no mac2: nothing computed
    assert generator.consume_reply(parse_cookie_reply(reply), 11.0)
    second = _initiation(generator, 11.0)
    assert second[-16:] != bytes(16)
    assert checker.check_mac2(second, source, 11.0)
    assert not checker.check_mac2(second, address_bytes(("192.0.2.7", 40000)), 11.0)


def test_address_bytes_packs_ip_then_big_endian_port() -> None:
    assert address_bytes(SOURCE) == bytes([192, 0, 2, 6]) + (40000).to_bytes(2, "big")
    assert address_bytes(("2001:db8::1", 1)) == bytes.fromhex("20010db8" + "0" * 22 + "01") + (
        b"\x00\x01"
    )
