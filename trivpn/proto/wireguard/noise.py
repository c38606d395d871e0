"""The Noise_IKpsk2 handshake of the WireGuard paper (5.4.2-5.4.4), both roles, per peer.

Initiator: ``create_initiation`` -> (response arrives) ``consume_response`` ->
``derive_session``. Responder: the device calls :func:`open_initiation` (one DH, reveals
the initiator's static key, so it can find the peer), then the peer's ``consume_initiation``
(timestamp replay and flood checks) -> ``create_response`` -> ``derive_session``.

All DH goes through ``crypto.dh`` looked up at call time, so tests can count it.
"""

from __future__ import annotations

import enum
from typing import Final

import attrs

from . import crypto
from .messages import Initiation, Response, pack_initiation, pack_response
from .timers import HANDSHAKE_INITIATION_RATE

INITIAL_CHAIN_KEY: Final = crypto.hash_(crypto.CONSTRUCTION)
INITIAL_HASH: Final = crypto.hash_(INITIAL_CHAIN_KEY, crypto.IDENTIFIER)
_INITIAL_CHAIN_PADS: Final = crypto.hmac_pads(INITIAL_CHAIN_KEY)  # the first KDF's key
_NO_PSK: Final = bytes(32)


def responder_hash(responder_public_key: bytes) -> bytes:
    """The handshake hash once the responder's static key is mixed in: the same for every
    initiation to that key, so each side computes it once (per identity, per peer)."""
    return crypto.hash_(INITIAL_HASH, responder_public_key)


class HandshakeError(Exception):
    """A handshake message was refused; ``reason`` names the counter to bump."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class State(enum.Enum):
    ZEROED = 0
    INITIATION_CREATED = 1
    INITIATION_CONSUMED = 2
    RESPONSE_CREATED = 3
    RESPONSE_CONSUMED = 4


@attrs.frozen
class StaticIdentity:
    """Our long-term key pair."""

    private_key: bytes = attrs.field(repr=False)
    public_key: bytes
    # what every initiation to us starts from (made with the key, so never stale)
    responder_hash: bytes = attrs.field(init=False, repr=False, eq=False)

    @responder_hash.default
    def _responder_hash(self) -> bytes:
        return responder_hash(self.public_key)

    @classmethod
    def from_private_key(cls, private_key: bytes) -> StaticIdentity:
        clamped = crypto.clamp(private_key)
        return cls(clamped, crypto.public_key(clamped))


@attrs.frozen
class OpenedInitiation:
    """An initiation after its first DH: authenticated to *someone* holding ``initiator_static``
    (not yet to that peer: the static-static DH in ``consume_initiation`` proves that)."""

    initiator_static: bytes
    sender: int
    ephemeral: bytes
    encrypted_timestamp: bytes
    chaining_key: bytes = attrs.field(repr=False)
    hash: bytes = attrs.field(repr=False)


@attrs.frozen
class SessionKeys:
    send: bytes = attrs.field(repr=False)
    receive: bytes = attrs.field(repr=False)
    is_initiator: bool
    local_index: int
    remote_index: int


def open_initiation(identity: StaticIdentity, msg: Initiation) -> OpenedInitiation:
    """Decrypt the initiator's static key; HandshakeError("invalid_initiation") if not ours."""
    h = crypto.hash_(identity.responder_hash, msg.ephemeral)
    ck = crypto.kdf1_with(_INITIAL_CHAIN_PADS, msg.ephemeral)
    try:
        ck, key = crypto.kdf2(ck, crypto.dh(identity.private_key, msg.ephemeral))
        static = crypto.aead_decrypt(key, 0, msg.encrypted_static, h)
    except crypto.CryptoError:
        raise HandshakeError("invalid_initiation") from None
    h = crypto.hash_(h, msg.encrypted_static)
    return OpenedInitiation(static, msg.sender, msg.ephemeral, msg.encrypted_timestamp, ck, h)


class Handshake:
    """The handshake state toward one peer (both roles share it, as in the paper)."""

    def __init__(
        self, identity: StaticIdentity, remote_static: bytes, preshared_key: bytes | None
    ) -> None:
        self._identity = identity
        self.remote_static = remote_static
        self._initiation_hash = responder_hash(remote_static)  # the peer's key never changes
        self._psk = preshared_key or _NO_PSK
        try:
            self._static_static = crypto.dh(identity.private_key, remote_static)
        except crypto.CryptoError:
            raise ValueError("the peer's public key is a low-order point") from None
        self.state = State.ZEROED
        self.clear()
        self.remote_index = 0
        self.last_timestamp = bytes(crypto.TIMESTAMP_LEN)
        self.last_initiation_consumption = float("-inf")

    def change_identity(self, identity: StaticIdentity) -> None:
        """Our static key changed: recompute the static-static DH and forget the handshake in
        progress (its chaining key came from the old key). ValueError, with nothing changed,
        if the peer's key is a low-order point (it cannot be: the old key's DH succeeded)."""
        try:
            static_static = crypto.dh(identity.private_key, self.remote_static)
        except crypto.CryptoError:
            raise ValueError("the peer's public key is a low-order point") from None
        self._identity = identity
        self._static_static = static_static
        self.clear()

    def change_preshared_key(self, preshared_key: bytes | None) -> None:
        """A new preshared key for the next handshake; the one in progress is forgotten."""
        self._psk = preshared_key or _NO_PSK
        self.clear()

    # -- initiator --

    def create_initiation(self, local_index: int, timestamp: bytes, ephemeral: bytes) -> bytes:
        """The 148-byte initiation, mac fields zero (the cookie generator fills them)."""
        ephemeral = crypto.clamp(ephemeral)
        e_pub = crypto.public_key(ephemeral)
        h = crypto.hash_(self._initiation_hash, e_pub)
        ck = crypto.kdf1_with(_INITIAL_CHAIN_PADS, e_pub)
        try:
            ck, key = crypto.kdf2(ck, crypto.dh(ephemeral, self.remote_static))
        except crypto.CryptoError:
            raise HandshakeError("invalid_peer_key") from None
        enc_static = crypto.aead_encrypt(key, 0, self._identity.public_key, h)
        h = crypto.hash_(h, enc_static)
        ck, key = crypto.kdf2(ck, self._static_static)
        enc_timestamp = crypto.aead_encrypt(key, 0, timestamp, h)
        h = crypto.hash_(h, enc_timestamp)

        self._hash, self._chaining_key = h, ck
        self._local_ephemeral = ephemeral
        self.local_index = local_index
        self.state = State.INITIATION_CREATED
        return pack_initiation(local_index, e_pub, enc_static, enc_timestamp)

    def consume_response(self, msg: Response) -> None:
        if self.state is not State.INITIATION_CREATED or msg.receiver != self.local_index:
            raise HandshakeError("unexpected_response")
        h = crypto.hash_(self._hash, msg.ephemeral)
        ck = crypto.kdf1(self._chaining_key, msg.ephemeral)
        try:
            ck = crypto.kdf1(ck, crypto.dh(self._local_ephemeral, msg.ephemeral))
            ck = crypto.kdf1(ck, crypto.dh(self._identity.private_key, msg.ephemeral))
            ck, tau, key = crypto.kdf3(ck, self._psk)
            h = crypto.hash_(h, tau)
            crypto.aead_decrypt(key, 0, msg.encrypted_nothing, h)
        except crypto.CryptoError:
            raise HandshakeError("invalid_response") from None
        h = crypto.hash_(h, msg.encrypted_nothing)
        self._hash, self._chaining_key = h, ck
        self.remote_index = msg.sender
        self.state = State.RESPONSE_CONSUMED

    # -- responder --

    def consume_initiation(self, opened: OpenedInitiation, now: float) -> None:
        """Finish an initiation: prove the peer's identity, refuse replays and floods."""
        try:
            ck, key = crypto.kdf2(opened.chaining_key, self._static_static)
            timestamp = crypto.aead_decrypt(key, 0, opened.encrypted_timestamp, opened.hash)
        except crypto.CryptoError:
            raise HandshakeError("invalid_initiation") from None
        if timestamp <= self.last_timestamp:
            raise HandshakeError("replayed_initiation")
        if now - self.last_initiation_consumption <= HANDSHAKE_INITIATION_RATE:
            raise HandshakeError("handshake_flood")
        self._hash = crypto.hash_(opened.hash, opened.encrypted_timestamp)
        self._chaining_key = ck
        self.remote_index = opened.sender
        self._remote_ephemeral = opened.ephemeral
        self.last_timestamp = timestamp
        self.last_initiation_consumption = now
        self.state = State.INITIATION_CONSUMED

    def create_response(self, local_index: int, ephemeral: bytes) -> bytes:
        """The 92-byte response, mac fields zero."""
        if self.state is not State.INITIATION_CONSUMED:
            raise HandshakeError("no_initiation_to_answer")
        ephemeral = crypto.clamp(ephemeral)
        e_pub = crypto.public_key(ephemeral)
        h = crypto.hash_(self._hash, e_pub)
        ck = crypto.kdf1(self._chaining_key, e_pub)
        try:
            ck = crypto.kdf1(ck, crypto.dh(ephemeral, self._remote_ephemeral))
            ck = crypto.kdf1(ck, crypto.dh(ephemeral, self.remote_static))
        except crypto.CryptoError:
            self.clear()
            raise HandshakeError("invalid_initiation") from None
        ck, tau, key = crypto.kdf3(ck, self._psk)
        h = crypto.hash_(h, tau)
        enc_nothing = crypto.aead_encrypt(key, 0, b"", h)
        h = crypto.hash_(h, enc_nothing)

        self._hash, self._chaining_key = h, ck
        self._local_ephemeral = ephemeral
        self.local_index = local_index
        self.state = State.RESPONSE_CREATED
        return pack_response(local_index, self.remote_index, e_pub, enc_nothing)

    # -- both --

    def derive_session(self) -> SessionKeys:
        """The transport keys (5.4.5); the handshake state is cleared afterwards."""
        first, second = crypto.kdf2(self._chaining_key, b"")
        if self.state is State.RESPONSE_CONSUMED:
            keys = SessionKeys(first, second, True, self.local_index, self.remote_index)
        elif self.state is State.RESPONSE_CREATED:
            keys = SessionKeys(second, first, False, self.local_index, self.remote_index)
        else:
            raise HandshakeError("no_session_to_derive")
        self.clear()
        return keys

    def clear(self) -> None:
        """Forget the ephemeral state (not the replay/flood memory, which must outlive it)."""
        self.state = State.ZEROED
        self._hash = b""
        self._chaining_key = b""
        self._local_ephemeral = b""
        self._remote_ephemeral = b""
        self.local_index = 0
