"""WireGuard (Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s), sans-IO: bytes and ``now`` in, actions out.

No sockets, no clock reads, no trio here. Time is the caller's monotonic seconds
(``trio.current_time()``), passed to every call; randomness and the wall clock (for the
TAI64N handshake timestamp) are injected into :class:`Device`.

Driving it (the server's side)::

    device = Device(private_key, rng=os.urandom, wallclock=time.time, mtu=1420)
    peer = device.add_peer(PeerConfig(public_key=..., allowed_ips=(ip_network("10.8.0.2/32"),),
                                      endpoint=None, persistent_keepalive=None, name="phone"))
    out = device.receive(datagram, (host, port), now)   # every UDP datagram received
    out = device.send(peer, ip_packet, now)             # an IP packet routed to that peer
    out = device.tick(now)                              # at device.next_deadline()
    for data, addr in out.datagrams: sock.sendto(data, addr)
    for packet in out.packets: tun.write(packet)        # already source-checked
    for event in out.events: ...                        # HandshakeCompleted, EndpointChanged,
                                                        # HandshakeFailed, SessionExpired,
                                                        # QuotaReached
    device.remove_peer(public_key)                      # at runtime, keys erased

Every call takes an optional ``out`` to append to, so a batch of datagrams can share one
:class:`Output` (``out.clear()`` to reuse it). After any call ``next_deadline()`` may have
moved earlier: re-read it. It may be ``-inf`` ("due now": a peer with persistent keepalive
just added sends its first keepalive, and so its handshake, on the next tick).

``device.counters`` (a Counter) counts dropped input by reason:
``malformed`` (+ ``malformed_<why>``), ``bad_mac1``, ``cookie_sent``, ``ratelimited``,
``invalid_initiation``, ``unknown_peer``, ``replayed_initiation``, ``handshake_flood``,
``unexpected_response``, ``invalid_response``, ``invalid_cookie_reply``, ``unknown_index``,
``expired_keypair``, ``decrypt_failed``, ``replay``, ``malformed_inner``,
``spoofed_source``, ``no_endpoint``, ``staged_dropped``, ``removed_peer``, ``blocked``
(a peer blocked by its policy, or at its usage limit) and ``rate_limited``; and
``fleet_failover``: handshakes initiated for data of an unknown session from an endpoint
in ``Device.fleet_endpoints`` (a fleet's peer whose session was with another gateway).

Per-peer limits (`Device.set_usage_limit`, `Device.set_rates`) are checked per packet only
behind one flag, ``Peer.limited``: a peer without any costs one attribute read more.

The TUN -> peer longest-prefix lookup belongs to the server's route table; the device only
checks, on receive, that a decrypted packet's source is one of that peer's allowed_ips, as
its ``allowed_ips`` (an :class:`AllowedIps`) says: by default each peer's PeerConfig
(:class:`StaticAllowedIps`); the server passes its route table, where "the table maps this
source to this peer" is the check, as in the reference implementations.

Modules: ``messages`` (layouts), ``crypto`` (primitives), ``noise`` (handshake), ``cookie``
(mac1/mac2/cookies/load), ``keypair`` (sessions, replay window), ``timers`` (constants and
per-peer timers), ``peer`` (one peer), ``device`` (all peers), ``keys`` (wg key text).
"""

import importlib
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from .device import DEFAULT_UNDER_LOAD_RATE, FIRST_TIMER_SPREAD, Device
    from .keys import encode_key, genkey, genpsk, parse_key, peer_label, pubkey
    from .peer import (
        AllowedIps,
        EndpointChanged,
        Event,
        HandshakeCompleted,
        HandshakeFailed,
        IPNetwork,
        Output,
        Peer,
        PeerConfig,
        QuotaReached,
        SessionExpired,
        StaticAllowedIps,
    )

__all__ = [
    "DEFAULT_UNDER_LOAD_RATE",
    "FIRST_TIMER_SPREAD",
    "AllowedIps",
    "Device",
    "EndpointChanged",
    "Event",
    "HandshakeCompleted",
    "HandshakeFailed",
    "IPNetwork",
    "Output",
    "Peer",
    "PeerConfig",
    "QuotaReached",
    "SessionExpired",
    "StaticAllowedIps",
    "encode_key",
    "genkey",
    "genpsk",
    "parse_key",
    "peer_label",
    "pubkey",
]

# Each name is imported from its module on first use (PEP 562), so `trivpn genkey` loads keys
# and crypto, not the whole protocol: the device and the peer cost a tenth of a second.
_KEYS_NAMES: Final = ("encode_key", "genkey", "genpsk", "parse_key", "peer_label", "pubkey")
_DEVICE_NAMES: Final = ("DEFAULT_UNDER_LOAD_RATE", "FIRST_TIMER_SPREAD", "Device")
_HOME: Final = dict.fromkeys(_DEVICE_NAMES, "device") | dict.fromkeys(_KEYS_NAMES, "keys")


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOME.get(name, 'peer')}", __name__), name)
    globals()[name] = value
    return value
