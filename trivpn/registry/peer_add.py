"""Adding a peer, for `trivpn peer add` and the web API alike: its key pair (unless the client
keeps its own), a preshared key, its registry entry and its client config in wg-quick's text.

The private key is made here and never stored: the text returned is the only copy, for the
caller to hand over once.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import attrs

from trivpn.config import Config, PublicEndpoint
from trivpn.proto.ip import IPAddress, IPNetwork
from trivpn.proto.policy import ACTIVE_POLICY, Policy
from trivpn.proto.wireguard import curve25519, keys
from trivpn.registry import clientconf
from trivpn.registry.api import RegistryStore
from trivpn.registry.store import AddressPlan, RegistryPeer

PUBLIC_ENDPOINT_UNSET = (
    "wireguard.public_endpoint: (not set) — required by {what}: the host:port clients dial, "
    "e.g. vpn.example.com:51820"
)


class NoPublicEndpoint(Exception):
    """A peer cannot be given a config without the endpoint its client dials."""

    def __init__(self, what: str) -> None:
        super().__init__(PUBLIC_ENDPOINT_UNSET.format(what=what))


def public_endpoint(cfg: Config, what: str) -> PublicEndpoint:
    """``wireguard.public_endpoint``; NoPublicEndpoint naming ``what`` needs it when unset."""
    if cfg.wireguard.public_endpoint is None:
        raise NoPublicEndpoint(what)
    return cfg.wireguard.public_endpoint


@attrs.frozen
class AddedPeer:
    peer: RegistryPeer
    config: str = attrs.field(repr=False)  # holds the private key, unless the client keeps it


def new_key_pair() -> tuple[bytes, bytes]:
    """(private, public), as `wg genkey | wg pubkey`."""
    private = keys.generate_private_key(os.urandom)
    return private, curve25519.public_key(private)


def add_peer(
    registry: RegistryStore,
    cfg: Config,
    server_public_key: bytes,
    name: str,
    *,
    client_keys: tuple[bytes | None, bytes] | None = None,
    addresses: Sequence[IPAddress] = (),
    routes: Sequence[IPNetwork] = (),
    policy: Policy = ACTIVE_POLICY,
) -> AddedPeer:
    """Register ``name`` and render its config. ``client_keys`` (private or None, public):
    made here when not given. Raises what `Registry.add` raises, NoPublicEndpoint."""
    wg = cfg.wireguard
    endpoint = public_endpoint(cfg, "adding a peer")
    client_private, client_public = new_key_pair() if client_keys is None else client_keys
    psk = os.urandom(curve25519.KEY_LEN)  # as `wg genpsk`
    plan = AddressPlan.from_config(cfg, server_public_key)
    peer = registry.add(
        name, client_public, psk, plan, addresses=addresses, routes=routes, policy=policy
    )
    text = clientconf.render(
        clientconf.ClientConfig(
            private_key=client_private,
            public_key=client_public,
            addresses=peer.addresses,
            dns=wg.client_dns,
            server_public_key=server_public_key,
            preshared_key=psk,
            endpoint=endpoint,
            allowed_ips=wg.client_allowed_ips,
        ),
        name=peer.name,
    )
    return AddedPeer(peer, text)
