"""What a handshake computes once instead of per message, and that it follows every key change.

Per device identity: the handshake hash after the responder's static key (``responder_hash``).
Per peer: the same hash toward the peer's key, and the static-static DH. Per process: the HMAC
pads of the initial chaining key. A stale one would make every later handshake fail.
"""

from __future__ import annotations

import hashlib
import os
import random

import attrs
import pytest
from support.wg_harness import A_TUN, B_TUN, Net, ip4

from trivpn.proto.wireguard import crypto, noise
from trivpn.proto.wireguard.messages import MSG_RESPONSE

NEW_KEY = random.Random(5).randbytes(32)
PSK = random.Random(6).randbytes(32)


def test_the_responder_hash_is_the_hash_after_the_responder_key() -> None:
    identity = noise.StaticIdentity.from_private_key(os.urandom(32))
    by_hand = hashlib.blake2s(noise.INITIAL_HASH + identity.public_key).digest()
    assert identity.responder_hash == by_hand == noise.responder_hash(identity.public_key)
    other = noise.StaticIdentity.from_private_key(os.urandom(32))
    assert other.responder_hash != identity.responder_hash
    assert identity.responder_hash.hex() not in repr(identity)


def test_kdf1_with_the_pads_of_a_key_is_kdf1_of_that_key() -> None:
    data = os.urandom(32)
    pads = crypto.hmac_pads(noise.INITIAL_CHAIN_KEY)
    assert crypto.kdf1_with(pads, data) == crypto.kdf1(noise.INITIAL_CHAIN_KEY, data)
    assert crypto.kdf1_with(pads, data) == crypto.kdf1_with(pads, data)  # pads are copied


def test_hmac_hashes_a_key_longer_than_a_block_first() -> None:
    key, data = os.urandom(65), os.urandom(20)
    short = hashlib.blake2s(key).digest().ljust(64, b"\0")
    inner = hashlib.blake2s(bytes(k ^ 0x36 for k in short) + data).digest()
    outer = hashlib.blake2s(bytes(k ^ 0x5C for k in short) + inner).digest()
    assert crypto.hmac_(key, data) == outer


def test_dh_refuses_keys_of_the_wrong_length() -> None:
    good = crypto.clamp(os.urandom(32))
    with pytest.raises(ValueError):
        crypto.dh(good, crypto.public_key(good)[:31])
    with pytest.raises(ValueError):
        crypto.dh(good[:31], crypto.public_key(good))


def test_a_peer_handshake_holds_the_hash_and_dh_of_its_key() -> None:
    net = Net()
    handshake = net.b_peer.handshake
    assert handshake._initiation_hash == noise.responder_hash(net.a.public_key)
    assert handshake._static_static == crypto.dh(net.b.identity.private_key, net.a.public_key)


def test_a_new_server_key_refreshes_the_precomputed_state_and_handshakes_complete() -> None:
    net = Net()
    net.handshake()
    net.now += 1
    assert net.b.set_private_key(NEW_KEY)
    identity = net.b.identity
    assert identity.responder_hash == noise.responder_hash(crypto.public_key(crypto.clamp(NEW_KEY)))
    handshake = net.b_peer.handshake
    assert handshake._static_static == crypto.dh(identity.private_key, net.a.public_key)
    # the client learns the new key: a new peer on its side, and a handshake to it completes
    net.a.remove_peer(net.a_peer.public_key)
    net.a_peer = net.a.add_peer(attrs.evolve(net.a_peer.config, public_key=net.b.public_key))
    net.send("A", ip4(A_TUN, B_TUN, b"after"))
    assert net.received["B"][-1] == ip4(A_TUN, B_TUN, b"after")
    assert net.b_peer.handshakes == 2
    assert not net.counters["B"]


def test_a_new_preshared_key_is_used_by_the_next_handshake() -> None:
    net = Net()
    net.handshake()
    net.now += 1
    net.b.set_preshared_key(net.b_peer, PSK)  # only the server: the psk enters the response
    net.now += 10
    net.a.remove_peer(net.a_peer.public_key)  # a fresh handshake from the client's side
    net.a_peer = net.a.add_peer(net.a_peer.config)
    net.send("A", ip4(A_TUN, B_TUN, b"mismatch"))
    assert any(w.kind == MSG_RESPONSE and w.sender == "B" for w in net.log)
    assert net.counters["A"]["invalid_response"] == 1  # the client's psk differs: refused
    net.now += 10
    net.a.set_preshared_key(net.a_peer, PSK)
    net.send("A", ip4(A_TUN, B_TUN, b"match"))
    assert net.received["B"][-1] == ip4(A_TUN, B_TUN, b"match")
