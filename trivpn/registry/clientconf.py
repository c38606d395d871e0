"""A client's configuration in wg-quick's format, the text every WireGuard app imports.

The text holds the client's private key: whoever renders it decides where it may go
(stdout, a 0600 file, a QR code on the operator's screen); it is never logged or stored.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Final

import attrs

from trivpn.config import PublicEndpoint
from trivpn.proto.ip import IPAddress, IPNetwork
from trivpn.proto.wireguard import keys

if TYPE_CHECKING:
    import segno

# NAT mappings on home routers and phone networks commonly expire after 30 s or more of
# silence; 25 s is what wg-quick's documentation and most generators suggest.
DEFAULT_PERSISTENT_KEEPALIVE: Final = 25


@attrs.frozen(kw_only=True)
class ClientConfig:
    # None when the client keeps its own key (`peer add --public-key`): the line is left as
    # a comment for the user to fill in
    private_key: bytes | None = attrs.field(repr=False)
    public_key: bytes  # the client's, for the comment that names whose config this is
    addresses: tuple[IPAddress, ...]
    dns: tuple[IPAddress, ...]
    server_public_key: bytes
    preshared_key: bytes | None = attrs.field(repr=False)
    endpoint: PublicEndpoint
    allowed_ips: tuple[IPNetwork, ...]
    persistent_keepalive: int | None = DEFAULT_PERSISTENT_KEEPALIVE


def render(cfg: ClientConfig, *, name: str) -> str:
    """The wg-quick text of `cfg`, ending with a newline."""
    lines = [f"# trivpn peer {name!r}, public key {keys.encode_key(cfg.public_key)}", "[Interface]"]
    if cfg.private_key is None:
        lines.append("# PrivateKey = (the private key of the public key above; add it here)")
    else:
        lines.append(f"PrivateKey = {keys.encode_key(cfg.private_key)}")
    lines.append("Address = " + ", ".join(str(ipaddress.ip_network(a)) for a in cfg.addresses))
    if cfg.dns:
        lines.append("DNS = " + ", ".join(map(str, cfg.dns)))
    lines += ["", "[Peer]", f"PublicKey = {keys.encode_key(cfg.server_public_key)}"]
    if cfg.preshared_key is not None:
        lines.append(f"PresharedKey = {keys.encode_key(cfg.preshared_key)}")
    lines.append(f"Endpoint = {cfg.endpoint}")
    lines.append("AllowedIPs = " + ", ".join(map(str, cfg.allowed_ips)))
    if cfg.persistent_keepalive is not None:
        lines.append(f"PersistentKeepalive = {cfg.persistent_keepalive}")
    return "\n".join(lines) + "\n"


def qr_code(text: str) -> segno.QRCode:
    """A QR code of ``text`` (a config for a phone's WireGuard app to scan; a TOTP URI)."""
    import segno  # here: what shows no QR code must not load it

    # a full QR code, never a Micro QR, which the WireGuard apps' scanners do not read
    return segno.make_qr(text, error="l")
