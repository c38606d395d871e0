"""[wireguard] and its [[wireguard.peers]]."""

import datetime
import ipaddress
import pathlib
from typing import Any, Final

import attrs

from trivpn.config.checks import (
    check_client_allowed_ips,
    check_fwmark,
    check_peer_endpoint,
    check_peer_name,
    check_persistent_keepalive,
    check_rate,
    find_duplicates,
)
from trivpn.config.errors import InvalidValue, Problems
from trivpn.config.values import (
    BY_LOADER,
    FILE_KEY,
    HOOK,
    Endpoint,
    IPAddress,
    IPNetwork,
    PublicEndpoint,
    checked,
    endpoint_hook,
    hooked,
    networks_hook,
    structure_key,
    structure_quota,
    structure_rate,
)
from trivpn.proto.policy import Policy, Quota, end_of_day
from trivpn.proto.wireguard import curve25519, keys

DEFAULT_PRIVATE_KEY_FILE: Final = pathlib.Path("/var/lib/trivpn/server.key")
_PUBLIC_ENDPOINT_EXAMPLES: Final = "vpn.example.com:51820, 203.0.113.1:51820 or [2001:db8::1]:51820"
_EXPIRES_ALLOWED: Final = (
    "expected a TOML date-time with an offset (2027-01-31T00:00:00Z) or a TOML date "
    "(2027-01-31: the end of that day, UTC), unquoted"
)


def structure_expires(value: object, _: Any) -> datetime.datetime:
    """A peer's ``expires``: a TOML offset date-time, or a local date meaning the end of that
    day in UTC. A local date-time is refused: it would expire at another moment on every host."""
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            without = f"a date-time without an offset; {_EXPIRES_ALLOWED}"
            raise InvalidValue(value, without, shown=value.isoformat())
        return value.astimezone(datetime.UTC)
    if isinstance(value, datetime.date):
        return end_of_day(value)
    if isinstance(value, datetime.time):  # shown as written, as the other TOML times
        raise InvalidValue(value, _EXPIRES_ALLOWED, shown=value.isoformat())
    raise InvalidValue(value, _EXPIRES_ALLOWED)


@attrs.frozen(kw_only=True)
class WireGuardPeerConfig:
    """One ``[[wireguard.peers]]``: a client, or another site's gateway."""

    name: str = attrs.field(metadata=checked(check_peer_name))
    public_key: bytes = attrs.field(metadata=hooked(structure_key))
    allowed_ips: tuple[IPNetwork, ...] = attrs.field(metadata=hooked(networks_hook("10.8.0.2/32")))
    preshared_key: bytes | None = attrs.field(
        default=None,
        repr=False,
        metadata={FILE_KEY: "preshared_key_file", HOOK: structure_key},
    )
    endpoint: Endpoint | None = attrs.field(
        default=None,
        metadata=hooked(
            endpoint_hook("203.0.113.7:51820 or [2001:db8::7]:51820"), check_peer_endpoint
        ),
    )
    persistent_keepalive: int | None = attrs.field(
        default=None, metadata=checked(check_persistent_keepalive)
    )
    enabled: bool = True  # false: blocked (trivpn.proto.policy)
    expires: datetime.datetime | None = attrs.field(
        default=None, metadata=hooked(structure_expires)
    )
    quota: Quota | None = attrs.field(default=None, metadata=hooked(structure_quota))
    rate_down: int | None = attrs.field(default=None, metadata=hooked(structure_rate))  # bit/s
    rate_up: int | None = attrs.field(default=None, metadata=hooked(structure_rate))

    @property
    def policy(self) -> Policy:
        return Policy(
            enabled=self.enabled,
            expires=self.expires,
            quota=self.quota,
            rate_down=self.rate_down,
            rate_up=self.rate_up,
        )


@attrs.frozen(kw_only=True)
class WireGuardConfig:
    """The WireGuard protocol; off unless enabled."""

    enabled: bool = False
    listen: Endpoint = attrs.field(
        default=Endpoint("0.0.0.0", 51820),
        metadata=hooked(endpoint_hook("0.0.0.0:51820 or [::]:51820")),
    )
    # Both keys are read by files.load_private_key. A private_key_file that does not exist yet is
    # fine (`serve` creates it, mode 0600): then private_key is None. A file readable by others
    # is not refused here; the server warns about it when it reads the key.
    private_key: bytes | None = attrs.field(default=None, repr=False, metadata={BY_LOADER: True})
    private_key_file: pathlib.Path | None = attrs.field(
        default=DEFAULT_PRIVATE_KEY_FILE, metadata={BY_LOADER: True}
    )
    under_load_rate: float = attrs.field(default=500.0, metadata=checked(check_rate))
    fwmark: int = attrs.field(default=0, metadata=checked(check_fwmark))  # SO_MARK; 0: none
    peers: tuple[WireGuardPeerConfig, ...] = ()
    # What `trivpn peer add` writes into client configs; the server itself never reads them.
    public_endpoint: PublicEndpoint | None = attrs.field(
        default=None,
        metadata=hooked(endpoint_hook(_PUBLIC_ENDPOINT_EXAMPLES, PublicEndpoint.parse)),
    )
    client_dns: tuple[IPAddress, ...] = (ipaddress.IPv4Address("1.1.1.1"),)
    client_allowed_ips: tuple[IPNetwork, ...] = attrs.field(
        default=(ipaddress.IPv4Network("0.0.0.0/0"), ipaddress.IPv6Network("::/0")),
        metadata=hooked(networks_hook("0.0.0.0/0"), check_client_allowed_ips),
    )


def wireguard_problems(wg: WireGuardConfig) -> Problems:
    problems: Problems = []
    if wg.enabled and wg.private_key is None and wg.private_key_file is None:
        required = "required when enabled: set private_key or private_key_file"
        problems.append(("private_key", InvalidValue(None, required, shown="(not set)")))
    own_key = curve25519.public_key(wg.private_key) if wg.private_key is not None else None
    names: dict[str, int] = {}
    public_keys: dict[bytes, int] = {}
    for i, peer in enumerate(wg.peers):
        key = f"peers[{i}].public_key"
        shown = repr(keys.encode_key(peer.public_key))
        if peer.name in names:
            first = names[peer.name]
            problems.append(
                (f"peers[{i}].name", InvalidValue(peer.name, f"peers[{first}] has this name too"))
            )
        names.setdefault(peer.name, i)
        if peer.public_key in public_keys:
            first = public_keys[peer.public_key]
            again = f"peers[{first}] ({wg.peers[first].name}) has this key too; one peer per key"
            problems.append((key, InvalidValue(None, again, shown=shown)))
        public_keys.setdefault(peer.public_key, i)
        if peer.public_key == own_key:
            mine = "the server's own public key; expected the peer's"
            problems.append((key, InvalidValue(None, mine, shown=shown)))
    problems += find_duplicates(peer_allowed_ips(wg))
    return problems


def peer_allowed_ips(wg: WireGuardConfig) -> list[tuple[str, IPNetwork]]:
    return [
        (f"peers[{i}].allowed_ips[{j}]", net)
        for i, peer in enumerate(wg.peers)
        for j, net in enumerate(peer.allowed_ips)
    ]
