"""Key text formats, checked against the real ``wg`` tool."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from trivpn.proto.wireguard import crypto, keys

needs_wg = pytest.mark.skipif(shutil.which("wg") is None, reason="wg (wireguard-tools) missing")


def _wg(*args: str, stdin: str = "") -> str:
    return subprocess.run(
        ["wg", *args], input=stdin, capture_output=True, text=True, check=True, timeout=10
    ).stdout.strip()


@needs_wg
def test_pubkey_agrees_with_wg_for_many_keys() -> None:
    # Random (unclamped) bytes too: both sides clamp.
    for raw in [os.urandom(32) for _ in range(8)] + [bytes(32), b"\xff" * 32]:
        text = keys.encode_key(raw)
        assert keys.pubkey(text) == _wg("pubkey", stdin=text + "\n")


@needs_wg
def test_keys_from_wg_genkey_and_genpsk_parse() -> None:
    for _ in range(3):
        private = _wg("genkey")
        assert keys.parse_key(private) == crypto.clamp(keys.parse_key(private))
        assert keys.pubkey(private) == _wg("pubkey", stdin=private)
        assert len(keys.parse_key(_wg("genpsk"))) == 32


@needs_wg
def test_our_genkey_is_accepted_by_wg() -> None:
    private = keys.genkey(os.urandom)
    assert keys.parse_key(private) == crypto.clamp(keys.parse_key(private))  # clamped
    assert _wg("pubkey", stdin=private) == keys.pubkey(private)


def test_genkey_uses_the_injected_rng_and_clamps() -> None:
    text = keys.genkey(lambda n: b"\xff" * n)
    raw = keys.parse_key(text)
    assert raw[0] == 0xF8 and raw[31] == 0x7F
    assert keys.genpsk(lambda n: b"\x01" * n) == keys.encode_key(b"\x01" * 32)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "44 base64 characters"),
        ("abc", "got 3 characters"),
        ("A" * 44, "exactly one '='"),
        ("A" * 42 + "==", "exactly one '='"),
        ("A" * 42 + "!=", "only base64"),
        ("A" * 42 + "B=", "canonical"),  # low bits set in the last character
    ],
)
def test_parse_key_errors_are_clear_and_do_not_echo_the_key(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        keys.parse_key(text)
    if len(text) > 3:
        assert text not in str(info.value)


def test_parse_key_accepts_surrounding_whitespace() -> None:
    raw = os.urandom(32)
    assert keys.parse_key("  " + keys.encode_key(raw) + "\n") == raw
    with pytest.raises(ValueError):
        keys.encode_key(b"short")


def test_peer_label_is_the_name_else_the_start_of_the_key() -> None:
    key = bytes(range(32))
    assert keys.peer_label(key, "alice") == "alice"
    assert keys.peer_label(key) == keys.peer_label(key, "") == "AAECAwQF…"
