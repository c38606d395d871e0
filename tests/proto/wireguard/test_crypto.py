"""Primitives against published vectors and their textbook definitions."""

from __future__ import annotations

import hashlib
import os

import pytest
from nacl.bindings import (
    crypto_aead_chacha20poly1305_ietf_encrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
)

from trivpn.proto.wireguard import crypto, noise

H = bytes.fromhex


def test_initial_chaining_key_matches_published_constant() -> None:
    # HASH("Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"), as hard-coded by other implementations.
    expected = H("60e26daef327efc02ec335e2a025d2d016eb4206f87277f52d38d1988b78cd36")
    assert expected == noise.INITIAL_CHAIN_KEY
    identifier = b"WireGuard v1 zx2c4 Jason@zx2c4.com"
    assert hashlib.blake2s(expected + identifier).digest() == noise.INITIAL_HASH


def test_blake2s_rfc7693_vector() -> None:
    assert crypto.hash_(b"a", b"bc") == H(
        "508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982"
    )


def test_x25519_rfc7748_vectors() -> None:
    scalar = H("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4")
    u = H("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c")
    assert crypto.dh(crypto.clamp(scalar), u) == H(
        "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552"
    )
    alice = H("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    bob = H("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
    assert crypto.public_key(alice) == H(
        "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
    )
    assert crypto.public_key(bob) == H(
        "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
    )
    shared = H("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")
    assert crypto.dh(crypto.clamp(alice), crypto.public_key(bob)) == shared
    assert crypto.dh(crypto.clamp(bob), crypto.public_key(alice)) == shared


def test_dh_refuses_low_order_points() -> None:
    with pytest.raises(crypto.CryptoError):
        crypto.dh(crypto.clamp(os.urandom(32)), bytes(32))
    with pytest.raises(crypto.CryptoError):
        crypto.dh(crypto.clamp(os.urandom(32)), (1).to_bytes(32, "little"))


def _hmac_by_hand(key: bytes, data: bytes) -> bytes:
    block = 64
    key = key.ljust(block, b"\0")
    inner = hashlib.blake2s(bytes(k ^ 0x36 for k in key) + data).digest()
    return hashlib.blake2s(bytes(k ^ 0x5C for k in key) + inner).digest()


def test_hmac_and_kdf_follow_their_definitions() -> None:
    key, data = os.urandom(32), os.urandom(77)
    assert crypto.hmac_(key, data) == _hmac_by_hand(key, data)
    prk = _hmac_by_hand(key, data)
    t1 = _hmac_by_hand(prk, b"\x01")
    t2 = _hmac_by_hand(prk, t1 + b"\x02")
    t3 = _hmac_by_hand(prk, t2 + b"\x03")
    assert crypto.kdf1(key, data) == t1
    assert crypto.kdf2(key, data) == (t1, t2)
    assert crypto.kdf3(key, data) == (t1, t2, t3)


def test_mac_is_keyed_blake2s_128() -> None:
    key, data = os.urandom(32), os.urandom(50)
    assert crypto.mac(key, data) == hashlib.blake2s(data, key=key, digest_size=16).digest()
    assert len(crypto.mac(key, data)) == 16


def test_aead_nonce_is_zero_prefix_then_little_endian_counter() -> None:
    key, counter = os.urandom(32), 0x0102030405060708
    assert crypto.aead_nonce(counter) == bytes(4) + bytes.fromhex("0807060504030201")
    sealed = crypto.aead_encrypt(key, counter, b"payload", b"ad")
    assert sealed == crypto_aead_chacha20poly1305_ietf_encrypt(
        b"payload", b"ad", crypto.aead_nonce(counter), key
    )
    assert crypto.aead_decrypt(key, counter, sealed, b"ad") == b"payload"
    with pytest.raises(crypto.CryptoError):
        crypto.aead_decrypt(key, counter + 1, sealed, b"ad")


def test_xaead_round_trip_and_tamper() -> None:
    key, nonce = os.urandom(32), os.urandom(24)
    sealed = crypto.xaead_encrypt(key, nonce, b"cookie-16-bytes!", b"mac1")
    assert crypto.xaead_decrypt(key, nonce, sealed, b"mac1") == b"cookie-16-bytes!"
    with pytest.raises(crypto.CryptoError):
        crypto.xaead_decrypt(key, nonce, sealed, b"mac2")


def test_transport_cipher_matches_the_public_aead() -> None:
    key = os.urandom(32)
    cipher = crypto.TransportCipher()
    tkey = crypto.TransportKey(key)
    packet = os.urandom(1399)
    datagram = cipher.seal(tkey, 0xAABBCCDD, 7, packet, 1408)
    padded = packet + bytes(9)
    assert datagram == (
        bytes.fromhex("04000000ddccbbaa") + (7).to_bytes(8, "little")
        + crypto.aead_encrypt(key, 7, padded, b"")
    )  # fmt: skip
    view = cipher.open(tkey, 7, datagram)
    assert view is not None and bytes(view) == padded
    assert cipher.open(tkey, 8, datagram) is None
    tkey.wipe()
    assert tkey.is_wiped() and "secret" in repr(tkey)


def test_tai64n_format_and_order() -> None:
    assert crypto.tai64n(0.0) == H("400000000000000a00000000")
    stamp = crypto.tai64n(1.5)
    assert stamp[:8] == H("400000000000000b")
    assert int.from_bytes(stamp[8:], "big") == 500_000_000 & ~0xFFFFFF  # whitened
    times = [1_700_000_000.0, 1_700_000_000.02, 1_700_000_001.0, 1_800_000_000.5]
    stamps = [crypto.tai64n(t) for t in times]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert all(len(s) == 12 for s in stamps)


def test_aeads_match_pynacls_public_bindings_and_refuse_what_they_refuse() -> None:
    key, xnonce = os.urandom(32), os.urandom(24)
    for plaintext in (b"", b"x", os.urandom(1000)):
        sealed = crypto.xaead_encrypt(key, xnonce, plaintext, b"ad")
        assert sealed == crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, b"ad", xnonce, key)
        assert crypto.xaead_decrypt(key, xnonce, sealed, b"ad") == plaintext
        assert crypto.aead_decrypt(key, 7, crypto.aead_encrypt(key, 7, plaintext, b""), b"") == (
            plaintext
        )
    with pytest.raises(crypto.CryptoError):
        crypto.aead_decrypt(key, 0, bytes(15), b"")  # shorter than a tag
    with pytest.raises(crypto.CryptoError):
        crypto.xaead_decrypt(key, xnonce, bytes(16), b"")
    with pytest.raises(ValueError):
        crypto.aead_encrypt(key[:31], 0, b"", b"")
    with pytest.raises(ValueError):
        crypto.xaead_encrypt(key, xnonce[:23], b"", b"")


def test_hmac_agrees_with_the_stdlibs_for_every_key_length() -> None:
    import hmac

    for key_len in (0, 1, 32, 64, 65, 200):
        key, data = os.urandom(key_len), os.urandom(70)
        assert crypto.hmac_(key, data) == hmac.digest(key, data, hashlib.blake2s)
    key, data = os.urandom(32), os.urandom(32)
    prk = hmac.digest(key, data, hashlib.blake2s)
    t1 = hmac.digest(prk, b"\x01", hashlib.blake2s)
    t2 = hmac.digest(prk, t1 + b"\x02", hashlib.blake2s)
    t3 = hmac.digest(prk, t2 + b"\x03", hashlib.blake2s)
    assert crypto.kdf3(key, data) == (t1, t2, t3)
    assert crypto.kdf2(key, data) == (t1, t2)
    assert crypto.kdf1(key, data) == t1
