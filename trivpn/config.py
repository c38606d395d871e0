"""trivpn's configuration: a TOML file structured by cattrs into frozen attrs classes.

Every problem becomes one line ``<key path>: <bad value> — <what is allowed>``, and one file
reports as many of them as it can at once, so checks come in three tiers:

- value checks (types, address syntax, ranges) run per key while cattrs structures, so each bad
  key is reported whatever else is wrong;
- section checks relate the keys of one section; they run once that section's keys are valid;
- cross-section checks run once every section is valid.

To add a section: an attrs class whose fields all have defaults (value checks in field metadata
via ``_checked``), a field on `Config`, and its section check in ``_SECTION_CHECKS``. Classes
that are list items (``[[wireguard.peers]]``) may have required fields: a missing one is
reported as ``(not set) — required``. Keys whose meaning needs more than one key and the file
system (the WireGuard private key) are read by a loader in ``_LOADERS`` before cattrs runs.
"""

import ipaddress
import math
import os
import pathlib
import re
import socket
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final, TypeVar, get_args, get_origin

import attrs
import cattrs
from cattrs.errors import (
    AttributeValidationNote,
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)
from cattrs.gen import make_dict_structure_fn, override

from trivpn.proto.wireguard import crypto, keys

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Hook = Callable[[Any, Any], Any]  # cattrs' structure hook: (value, target type) -> object

_IFNAMSIZ: Final = 16  # Linux interface names: 15 bytes plus the terminating NUL
_MAX_SECRET_FILE: Final = 64 * 1024  # a secret file is small; refuse to slurp a huge one
_SHOW_LIMIT: Final = 80

# attrs field metadata keys
_CHECK: Final = "trivpn.check"  # a value check run right after the key is structured
_FILE_KEY: Final = "trivpn.file_key"  # a sibling key naming a file that holds this value
_NOT_IN_FILE: Final = "trivpn.not_in_file"  # set by the loader, never read from TOML
_HOOK: Final = "trivpn.hook"  # a structure hook for this key instead of its type's
_BY_LOADER: Final = "trivpn.by_loader"  # a TOML key that the section's loader reads, not cattrs


class ConfigError(Exception):
    """The configuration cannot be used; `problems` holds one line per problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))

    def __str__(self) -> str:
        return "\n".join(self.problems)


class InvalidValue(ValueError):
    """One rejected value; whoever catches it knows the key path and prefixes it."""

    def __init__(self, value: object, allowed: str, *, shown: str | None = None) -> None:
        self.shown = _show(value) if shown is None else shown
        self.shown_by_caller = shown is not None  # trusted text, shown even for a secret
        self.allowed = allowed
        super().__init__(f"{self.shown} — {allowed}")


def _show(value: object, depth: int = 0) -> str:
    """Render a TOML or structured value the way the user wrote it, bounded in size."""
    if depth > 3:
        text = "…"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float) and value.is_integer():
        text = str(int(value))  # as the user most likely wrote it
    elif isinstance(value, str | int | float):
        text = repr(value)
    elif isinstance(value, list | tuple):
        text = "[" + ", ".join(_show(v, depth + 1) for v in value) + "]"
    elif isinstance(value, Mapping):
        text = "{" + ", ".join(f"{k} = {_show(v, depth + 1)}" for k, v in value.items()) + "}"
    else:  # addresses, networks, endpoints, dates: their text form
        text = repr(str(value))
    return text if len(text) <= _SHOW_LIMIT else text[: _SHOW_LIMIT - 1] + "…"


def _checked(check: Callable[[Any], None]) -> dict[str, object]:
    return {_CHECK: check}


def _hooked(hook: Hook, check: Callable[[Any], None] | None = None) -> dict[str, object]:
    return {_HOOK: hook} if check is None else {_HOOK: hook, _CHECK: check}


# --- value checks (raise InvalidValue) ------------------------------------------------------


def _check_ifname(name: str) -> None:
    # the kernel's dev_valid_name(), so the error comes from us rather than from an ioctl
    if (
        not name
        or len(name.encode()) >= _IFNAMSIZ
        or name in (".", "..")
        or any(c in "/:\0" or c.isspace() for c in name)
    ):
        raise InvalidValue(
            name, "expected 1 to 15 characters without '/', ':' or whitespace, not '.' or '..'"
        )


def _check_egress(name: str) -> None:
    if name != "auto":
        try:
            _check_ifname(name)
        except InvalidValue:
            raise InvalidValue(
                name, 'expected an interface name or "auto" (the default route\'s interface)'
            ) from None


def _check_mtu(mtu: int) -> None:
    if not 576 <= mtu <= 9000:
        raise InvalidValue(mtu, "expected 576 to 9000 (1280 or more with an IPv6 address)")


def _check_addresses(addresses: tuple[IPInterface, ...]) -> None:
    if not addresses:
        raise InvalidValue(addresses, 'expected at least one address, e.g. ["10.8.0.1/24"]')
    seen: set[IPAddress] = set()
    for a in addresses:
        if a.ip in seen:
            raise InvalidValue(addresses, f"duplicate address {a.ip}; list each address once")
        seen.add(a.ip)


def _check_seconds(seconds: float) -> None:
    if not seconds > 0:
        raise InvalidValue(seconds, "expected a number of seconds greater than 0")


def _check_search_domain(domain: str) -> None:
    # ToyVPN sends its parameters as ASCII, separated by spaces and commas
    fits = all(c.isascii() and c.isprintable() and c not in " ," for c in domain)
    if not fits or len(domain) > 253:
        raise InvalidValue(domain, "expected an ASCII domain name without spaces or commas, or ''")


# Peer names, in the TOML file and in the peer registry alike.
PEER_NAME: Final = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
PEER_NAME_ALLOWED: Final = "expected 1 to 64 characters from A-Z a-z 0-9 _ . @ -"


def _check_peer_name(name: str) -> None:
    if not PEER_NAME.fullmatch(name):
        raise InvalidValue(name, PEER_NAME_ALLOWED)


def _check_persistent_keepalive(seconds: int | None) -> None:
    if seconds is not None and not 1 <= seconds <= 65535:
        raise InvalidValue(seconds, "expected 1 to 65535 seconds; leave the key out for none")


def _check_rate(rate: float) -> None:
    if not rate > 0:
        raise InvalidValue(rate, "expected a number of messages per second greater than 0")


def _check_client_allowed_ips(networks: tuple[IPNetwork, ...]) -> None:
    if not networks:
        raise InvalidValue(networks, 'expected at least one network, e.g. ["0.0.0.0/0", "::/0"]')


# --- the configuration classes --------------------------------------------------------------


@attrs.frozen
class Endpoint:
    """A UDP address to listen on, written ``host:port`` or ``[v6]:port``."""

    host: str  # an IP literal in its normal form ("::" for "[::]")
    port: int

    @classmethod
    def parse(cls, text: str) -> "Endpoint":
        """Parse ``host:port``; ValueError says what is wrong."""
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ValueError("expected host:port")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
            if ":" not in host:
                raise ValueError("brackets are only for IPv6 hosts")
        elif ":" in host:
            raise ValueError("an IPv6 host needs brackets")
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            raise ValueError("the host must be an IP address") from None
        if not (port_text.isascii() and port_text.isdigit() and 1 <= int(port_text) <= 65535):
            raise ValueError("the port must be 1 to 65535")
        return cls(str(ip), int(port_text))

    @property
    def family(self) -> int:
        if ipaddress.ip_address(self.host).version == 6:
            return socket.AF_INET6
        return socket.AF_INET

    def __str__(self) -> str:
        if self.family == socket.AF_INET6:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


_DNS_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def _is_dns_name(host: str) -> bool:
    labels = host.removesuffix(".").split(".")
    return (
        len(host) <= 253
        and all(_DNS_LABEL.fullmatch(label) for label in labels)
        and not labels[-1].isdigit()  # "10.8.0" is a mistyped address, not a name
    )


@attrs.frozen
class PublicEndpoint:
    """Where clients dial the server, ``host:port``: a DNS name or an IP literal (``[v6]``).

    Unlike `Endpoint` it is never bound or resolved by trivpn; it is only written into client
    configs, where a name lets the server's address change without reissuing them.
    """

    host: str  # a DNS name as written, or an IP literal in its normal form without brackets
    port: int

    @classmethod
    def parse(cls, text: str) -> "PublicEndpoint":
        """Parse ``host:port``; ValueError says what is wrong."""
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ValueError("expected host:port")
        bracketed = host.startswith("[") and host.endswith("]")
        if bracketed:
            host = host[1:-1]
        elif ":" in host:
            raise ValueError("an IPv6 host needs brackets")
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            if bracketed:
                raise ValueError("brackets are only for IPv6 addresses") from None
            if not _is_dns_name(host):
                raise ValueError("the host must be a DNS name or an IP address") from None
        else:
            if bracketed != (ip.version == 6):
                raise ValueError("an IPv6 host needs brackets; others take none")
            if ip.is_unspecified:
                raise ValueError("a wildcard address cannot be dialled; use the server's own")
            host = str(ip)
        if not (port_text.isascii() and port_text.isdigit() and 1 <= int(port_text) <= 65535):
            raise ValueError("the port must be 1 to 65535")
        return cls(host, int(port_text))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@attrs.frozen(kw_only=True)
class InterfaceConfig:
    """The TUN device; its addresses' subnets are the VPN."""

    name: str = attrs.field(default="trivpn0", metadata=_checked(_check_ifname))
    address: tuple[IPInterface, ...] = attrs.field(
        default=(ipaddress.IPv4Interface("10.8.0.1/24"),), metadata=_checked(_check_addresses)
    )
    mtu: int = attrs.field(default=1420, metadata=_checked(_check_mtu))

    @property
    def subnets(self) -> tuple[IPNetwork, ...]:
        return tuple(dict.fromkeys(a.network for a in self.address))


@attrs.frozen(kw_only=True)
class NatConfig:
    masquerade: bool = True
    egress: str = attrs.field(default="auto", metadata=_checked(_check_egress))


@attrs.frozen(kw_only=True)
class ToyVpnConfig:
    """The cleartext ToyVPN protocol (Android's ToyVpn sample); off unless enabled."""

    enabled: bool = False
    listen: Endpoint = Endpoint("0.0.0.0", 8000)
    # from `secret` or the file named by `secret_file`; never shown
    secret: bytes = attrs.field(default=b"", repr=False, metadata={_FILE_KEY: "secret_file"})
    pool: ipaddress.IPv4Network = attrs.field(default=ipaddress.IPv4Network("10.8.0.128/25"))
    dns: tuple[IPAddress, ...] = (ipaddress.IPv4Address("1.1.1.1"),)
    routes: tuple[IPNetwork, ...] = (ipaddress.IPv4Network("0.0.0.0/0"),)
    search_domain: str = attrs.field(default="", metadata=_checked(_check_search_domain))
    keepalive: float = attrs.field(default=15.0, metadata=_checked(_check_seconds))
    idle_timeout: float = attrs.field(default=60.0, metadata=_checked(_check_seconds))


# --- hooks for keys whose type alone does not say how to read them ---------------------------


def _structure_key(value: object, _: Any) -> bytes:
    """A WireGuard key from its wg(8) text: inline in TOML (str) or a key file's bytes."""
    if isinstance(value, bytes):
        try:
            text = value.decode("ascii")
        except UnicodeDecodeError:
            raise InvalidValue(
                value, "the file holds no key: expected 44 base64 characters"
            ) from None
    elif isinstance(value, str):
        text = value
    else:
        raise InvalidValue(value, "expected a key: 44 base64 characters, as `trivpn genkey` prints")
    try:
        return keys.parse_key(text)
    except ValueError as e:  # parse_key never repeats the text: safe for secrets
        raise InvalidValue(value, str(e)) from None


def _endpoint_hook(examples: str) -> Hook:
    def structure(value: object, _: Any) -> Endpoint:
        try:
            return Endpoint.parse(_structure_str(value, None))
        except InvalidValue:
            raise InvalidValue(value, f"expected host:port, e.g. {examples}") from None
        except ValueError as e:
            raise InvalidValue(value, f"{e}, e.g. {examples}") from None

    return structure


def _check_peer_endpoint(endpoint: Endpoint) -> None:
    if ipaddress.ip_address(endpoint.host).is_unspecified:
        raise InvalidValue(endpoint, "expected the peer's own address, not a wildcard")


def _allowed_ips_hook(value: object, _: Any) -> tuple[IPNetwork, ...]:
    networks: tuple[IPNetwork, ...] = _list_of(
        lambda item: _network(item, "10.8.0.2/32"), IPNetwork
    )(value, None)
    return networks


def _structure_public_endpoint(value: object, _: Any) -> PublicEndpoint:
    examples = "vpn.example.com:51820, 203.0.113.1:51820 or [2001:db8::1]:51820"
    try:
        return PublicEndpoint.parse(_structure_str(value, None))
    except InvalidValue:
        raise InvalidValue(value, f"expected host:port, e.g. {examples}") from None
    except ValueError as e:
        raise InvalidValue(value, f"{e}, e.g. {examples}") from None


def _client_allowed_ips_hook(value: object, _: Any) -> tuple[IPNetwork, ...]:
    networks: tuple[IPNetwork, ...] = _list_of(lambda item: _network(item, "0.0.0.0/0"), IPNetwork)(
        value, None
    )
    return networks


DEFAULT_PRIVATE_KEY_FILE: Final = pathlib.Path("/var/lib/trivpn/server.key")
DEFAULT_STATE_DIR: Final = pathlib.Path("/var/lib/trivpn")


@attrs.frozen(kw_only=True)
class WireGuardPeerConfig:
    """One ``[[wireguard.peers]]``: a client, or another site's gateway."""

    name: str = attrs.field(metadata=_checked(_check_peer_name))
    public_key: bytes = attrs.field(metadata=_hooked(_structure_key))
    allowed_ips: tuple[IPNetwork, ...] = attrs.field(metadata=_hooked(_allowed_ips_hook))
    preshared_key: bytes | None = attrs.field(
        default=None,
        repr=False,
        metadata={_FILE_KEY: "preshared_key_file", _HOOK: _structure_key},
    )
    endpoint: Endpoint | None = attrs.field(
        default=None,
        metadata=_hooked(
            _endpoint_hook("203.0.113.7:51820 or [2001:db8::7]:51820"), _check_peer_endpoint
        ),
    )
    persistent_keepalive: int | None = attrs.field(
        default=None, metadata=_checked(_check_persistent_keepalive)
    )


@attrs.frozen(kw_only=True)
class WireGuardConfig:
    """The WireGuard protocol; off unless enabled."""

    enabled: bool = False
    listen: Endpoint = attrs.field(
        default=Endpoint("0.0.0.0", 51820),
        metadata=_hooked(_endpoint_hook("0.0.0.0:51820 or [::]:51820")),
    )
    # Both keys are read by _load_private_key. A private_key_file that does not exist yet is
    # fine (`serve` creates it, mode 0600): then private_key is None. A file readable by others
    # is not refused here; the server warns about it when it reads the key.
    private_key: bytes | None = attrs.field(default=None, repr=False, metadata={_BY_LOADER: True})
    private_key_file: pathlib.Path | None = attrs.field(
        default=DEFAULT_PRIVATE_KEY_FILE, metadata={_BY_LOADER: True}
    )
    under_load_rate: float = attrs.field(default=500.0, metadata=_checked(_check_rate))
    peers: tuple[WireGuardPeerConfig, ...] = ()
    # What `trivpn peer add` writes into client configs; the server itself never reads them.
    public_endpoint: PublicEndpoint | None = attrs.field(
        default=None, metadata=_hooked(_structure_public_endpoint)
    )
    client_dns: tuple[IPAddress, ...] = (ipaddress.IPv4Address("1.1.1.1"),)
    client_allowed_ips: tuple[IPNetwork, ...] = attrs.field(
        default=(ipaddress.IPv4Network("0.0.0.0/0"), ipaddress.IPv6Network("::/0")),
        metadata=_hooked(_client_allowed_ips_hook, _check_client_allowed_ips),
    )


@attrs.frozen(kw_only=True)
class StateConfig:
    """What trivpn changes at runtime and keeps across restarts: the peer registry."""

    # read by _load_state_dir: relative to the config file's directory, like the key files
    dir: pathlib.Path = attrs.field(default=DEFAULT_STATE_DIR, metadata={_BY_LOADER: True})


def _structure_metrics_listen(value: object, _: Any) -> Endpoint | None:
    """A TCP host:port to serve /metrics on, or None for the empty string (metrics off)."""
    examples = '127.0.0.1:9586 or [::1]:9586; "" turns metrics off'
    if not isinstance(value, str):
        raise InvalidValue(value, f"expected host:port, e.g. {examples}")
    if value == "":
        return None
    try:
        return Endpoint.parse(value)
    except ValueError as e:
        raise InvalidValue(value, f"{e}, e.g. {examples}") from None


@attrs.frozen(kw_only=True)
class MetricsConfig:
    """Prometheus metrics over HTTP (GET /metrics); off unless ``listen`` is set."""

    listen: Endpoint | None = attrs.field(default=None, metadata=_hooked(_structure_metrics_listen))


@attrs.frozen(kw_only=True)
class Config:
    interface: InterfaceConfig = InterfaceConfig()
    nat: NatConfig = NatConfig()
    toyvpn: ToyVpnConfig = ToyVpnConfig()
    wireguard: WireGuardConfig = WireGuardConfig()
    state: StateConfig = StateConfig()
    metrics: MetricsConfig = MetricsConfig()
    source: str = attrs.field(default="<string>", metadata={_NOT_IN_FILE: True})


# --- section and cross-section checks -------------------------------------------------------

# (key path relative to the checked object, problem). Only a problem keyed by a plain field
# name is hidden when the field is secret (repr=False); deeper keys must pass `shown=`.
Problems = list[tuple[str, InvalidValue]]
# A loader takes the keys it owns out of a section's table and returns the values of their
# fields, set after cattrs has structured the rest, and the problems it found.
Loaded = tuple[dict[str, Any], Problems]


def _interface_problems(iface: InterfaceConfig) -> Problems:
    if iface.mtu < 1280 and any(a.version == 6 for a in iface.address):
        return [("mtu", InvalidValue(iface.mtu, "expected 1280 or more with an IPv6 address"))]
    return []


# The secret in the shipped conf/trivpn.toml: known to everyone, so never accepted in use.
PLACEHOLDER_SECRET = b"change-me"


def _toyvpn_problems(toy: ToyVpnConfig) -> Problems:
    problems: Problems = []
    if toy.enabled and not toy.secret:
        problems.append(
            (
                "secret",
                InvalidValue(
                    None, "required when enabled: set secret or secret_file", shown="(not set)"
                ),
            )
        )
    elif toy.secret and len(toy.secret) < 8:
        problems.append(
            ("secret", InvalidValue(None, "secret under 8 bytes; use at least 8", shown="(hidden)"))
        )
    elif toy.enabled and toy.secret == PLACEHOLDER_SECRET:
        problems.append(
            (
                "secret",
                InvalidValue(
                    None,
                    "the shipped placeholder; choose your own secret before enabling",
                    shown=repr(PLACEHOLDER_SECRET.decode()),
                ),
            )
        )
    if toy.idle_timeout <= toy.keepalive:
        problems.append(
            (
                "idle_timeout",
                InvalidValue(
                    toy.idle_timeout, f"must be greater than keepalive ({_show(toy.keepalive)})"
                ),
            )
        )
    return problems


def _wireguard_problems(wg: WireGuardConfig) -> Problems:
    problems: Problems = []
    if wg.enabled and wg.private_key is None and wg.private_key_file is None:
        required = "required when enabled: set private_key or private_key_file"
        problems.append(("private_key", InvalidValue(None, required, shown="(not set)")))
    own_key = crypto.public_key(wg.private_key) if wg.private_key is not None else None
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
    problems += find_overlaps(_allowed_ips(wg))
    return problems


def _allowed_ips(wg: WireGuardConfig) -> list[tuple[str, IPNetwork]]:
    return [
        (f"peers[{i}].allowed_ips[{j}]", net)
        for i, peer in enumerate(wg.peers)
        for j, net in enumerate(peer.allowed_ips)
    ]


def find_overlaps(networks: Iterable[tuple[str, IPNetwork]]) -> Problems:
    """Report every network that overlaps an earlier one, keyed by its own key path.

    For all address ranges handed to clients (pools, later WireGuard allowed_ips): an overlap
    would make the router's choice between two sessions arbitrary.
    """
    problems: Problems = []
    earlier: list[tuple[str, IPNetwork]] = []
    for key, net in networks:
        for other_key, other in earlier:
            if net.overlaps(other):  # False across address families
                problems.append((key, InvalidValue(net, f"overlaps {other_key} ({other})")))
                break
        earlier.append((key, net))
    return problems


def _config_problems(cfg: Config) -> Problems:
    problems: Problems = []
    # a disabled protocol's ranges don't matter: renumbering the interface must not trip on them
    pools = [("toyvpn.pool", cfg.toyvpn.pool)] if cfg.toyvpn.enabled else []
    v4_subnets = [n for n in cfg.interface.subnets if isinstance(n, ipaddress.IPv4Network)]
    for key, pool in pools:
        if not any(pool.subnet_of(s) for s in v4_subnets):
            inside = ", ".join(map(str, v4_subnets)) or "none: interface.address has no IPv4"
            problems.append(
                (key, InvalidValue(pool, f"must lie inside an interface subnet ({inside})"))
            )
        own = [a.ip for a in cfg.interface.address if a.ip in pool]
        if own:
            problems.append(
                (
                    key,
                    InvalidValue(pool, f"contains the server's own address {own[0]}; leave it out"),
                )
            )
    # overlaps among the WireGuard peers themselves were reported by its section check
    ranges: list[tuple[str, IPNetwork]] = list(pools)
    if cfg.wireguard.enabled:
        ranges += [(f"wireguard.{key}", net) for key, net in _allowed_ips(cfg.wireguard)]
    problems += find_overlaps(ranges)
    return problems


_SECTION_CHECKS: Final[Mapping[type, Callable[[Any], Problems]]] = {
    InterfaceConfig: _interface_problems,
    ToyVpnConfig: _toyvpn_problems,
    WireGuardConfig: _wireguard_problems,
    Config: _config_problems,
}


# --- structuring: TOML values -> typed values -----------------------------------------------

T = TypeVar("T")


def _parsed(parse: Callable[[str], T], value: object, allowed: str) -> T:
    if isinstance(value, str):
        try:
            return parse(value)
        except ValueError:
            pass
    raise InvalidValue(value, allowed)


def _structure_int(value: object, _: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidValue(value, "expected an integer")
    return value


def _structure_float(value: object, _: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidValue(value, "expected a number")
    if not math.isfinite(value):
        raise InvalidValue(value, "expected a finite number")
    return float(value)


def _structure_bool(value: object, _: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidValue(value, "expected true or false")
    return value


def _structure_str(value: object, _: Any) -> str:
    if not isinstance(value, str):
        raise InvalidValue(value, "expected a string")
    return value


def _structure_bytes(value: object, _: Any) -> bytes:
    if isinstance(value, bytes):  # already read from a file key
        return value
    return _structure_str(value, None).encode()


def _structure_interface(value: object, _: Any) -> IPInterface:
    allowed = "expected an IP address with prefix, e.g. 10.8.0.1/24"
    if not (isinstance(value, str) and "/" in value):  # ipaddress would default to /32
        raise InvalidValue(value, allowed)
    iface = _parsed(ipaddress.ip_interface, value, allowed)
    net = iface.network
    first_host = f"{net.network_address + 1}/{net.prefixlen}"
    if net.num_addresses > 2 and iface.ip == net.network_address:
        raise InvalidValue(
            value, f"is the subnet's network address, not a host; did you mean {first_host}?"
        )
    if net.num_addresses > 2 and net.version == 4 and iface.ip == net.broadcast_address:
        raise InvalidValue(value, f"is the subnet's broadcast address; e.g. {first_host}")
    return iface


def _network(value: object, example: str, *, v4_only: bool = False) -> IPNetwork:
    kind = "an IPv4 network" if v4_only else "an IP network"
    allowed = f"expected {kind} with prefix, e.g. {example}"
    if not (isinstance(value, str) and "/" in value):
        raise InvalidValue(value, allowed)
    net = _parsed(lambda s: ipaddress.ip_network(s, strict=False), value, allowed)
    if v4_only and net.version != 4:
        raise InvalidValue(value, allowed)
    if ipaddress.ip_interface(value).ip != net.network_address:
        raise InvalidValue(value, f"has host bits set; did you mean {net}?")
    return net


def _structure_network(value: object, _: Any) -> IPNetwork:
    return _network(value, "0.0.0.0/0")


def _structure_v4_network(value: object, _: Any) -> ipaddress.IPv4Network:
    net = _network(value, "10.8.0.128/25", v4_only=True)
    assert isinstance(net, ipaddress.IPv4Network)
    return net


def _structure_address(value: object, _: Any) -> IPAddress:
    return _parsed(ipaddress.ip_address, value, "expected an IP address, e.g. 1.1.1.1")


_VALUE_HOOKS: Final[Mapping[Any, Hook]] = {
    int: _structure_int,
    float: _structure_float,
    bool: _structure_bool,
    str: _structure_str,
    bytes: _structure_bytes,
    IPInterface: _structure_interface,
    IPNetwork: _structure_network,
    ipaddress.IPv4Network: _structure_v4_network,
    IPAddress: _structure_address,
    Endpoint: _endpoint_hook("0.0.0.0:8000 or [::]:8000"),
}


def _is_tuple_of_any_length(t: Any) -> bool:
    args = get_args(t)
    return get_origin(t) is tuple and len(args) == 2 and args[1] is Ellipsis


def _list_of(structure_item: Callable[[object], Any], item_type: Any) -> Hook:
    def structure(value: object, _: Any) -> tuple[Any, ...]:
        # a bare string is iterable too; insist on a TOML array
        if not isinstance(value, list):
            raise InvalidValue(value, "expected a list, e.g. [...]")
        items: list[Any] = []
        errors: list[Exception] = []
        for index, item in enumerate(value):
            try:
                items.append(structure_item(item))
            except (InvalidValue, cattrs.BaseValidationError) as e:
                note = IterableValidationNote(f"index {index}", index, item_type)
                e.add_note(note)
                errors.append(e)
        if errors:
            raise IterableValidationError("While structuring a list", errors, tuple[item_type, ...])
        return tuple(items)

    return structure


def _tuple_hook(tuple_type: Any, conv: cattrs.Converter) -> Hook:
    item_type = get_args(tuple_type)[0]
    item_hook = conv.get_structure_hook(item_type)
    return _list_of(lambda item: item_hook(item, item_type), item_type)


# --- structuring: TOML tables -> attrs classes ----------------------------------------------


def _is_section(t: Any) -> bool:
    return attrs.has(t) and t not in (Endpoint, PublicEndpoint)


def _noted(error: Exception, key: str, cl: type) -> Exception:
    error.add_note(AttributeValidationNote(f"{cl.__qualname__} @ {key}", key, object))
    return error


def _secret_path(value: object, base_dir: pathlib.Path | None) -> pathlib.Path:
    if not isinstance(value, str) or not value or "\0" in value:
        raise InvalidValue(value, "expected the path of a file holding the secret")
    return pathlib.Path(value) if base_dir is None else base_dir / value


def _read_secret(value: object, path: pathlib.Path) -> bytes:
    """The secret in `path` (named `value` in the file); OSError when it cannot be read."""
    with path.open("rb") as f:
        data = f.read(_MAX_SECRET_FILE + 1)
    if len(data) > _MAX_SECRET_FILE:
        raise InvalidValue(value, f"{path} is over 64 KiB; expected a file holding the secret")
    # editors end files with a newline that is not part of the secret
    return data[:-2] if data.endswith(b"\r\n") else data.removesuffix(b"\n")


def _read_secret_file(value: object, base_dir: pathlib.Path | None) -> bytes:
    path = _secret_path(value, base_dir)
    try:
        return _read_secret(value, path)
    except OSError as e:
        raise InvalidValue(value, f"cannot read {path}: {e.strerror or e}") from None


def _load_private_key(table: dict[str, Any], base_dir: pathlib.Path | None) -> Loaded:
    """[wireguard] private_key or private_key_file, which defaults to DEFAULT_PRIVATE_KEY_FILE.

    A file that does not exist is no problem (`serve` generates it); "" means no file.
    """
    inline = table.pop("private_key", None)
    file_value = table.pop("private_key_file", None)
    if inline is not None:
        problems: Problems = []
        if file_value is not None:
            both = "set either private_key or private_key_file, not both"
            problems.append(("private_key_file", InvalidValue(file_value, both)))
        try:
            return {"private_key": _structure_key(inline, None), "private_key_file": None}, problems
        except InvalidValue as e:
            return {}, [*problems, ("private_key", e)]
    if file_value is None:
        file_value = str(DEFAULT_PRIVATE_KEY_FILE)
    if file_value == "":
        return {"private_key_file": None}, []
    try:
        path = _secret_path(file_value, base_dir)
        try:
            data = _read_secret(file_value, path)
        except FileNotFoundError:
            return {"private_key_file": path}, []
        except OSError as e:
            raise InvalidValue(file_value, f"cannot read {path}: {e.strerror or e}") from None
        try:
            key = _structure_key(data, None)
        except InvalidValue as e:
            raise InvalidValue(file_value, f"{path}: {e.allowed}") from None
    except InvalidValue as e:
        return {}, [("private_key_file", e)]
    return {"private_key": key, "private_key_file": path}, []


def _load_state_dir(table: dict[str, Any], base_dir: pathlib.Path | None) -> Loaded:
    value = table.pop("dir", None)
    if value is None:
        return {}, []
    if not isinstance(value, str) or not value or "\0" in value:
        allowed = 'expected the path of a directory, e.g. "/var/lib/trivpn"'
        return {}, [("dir", InvalidValue(value, allowed))]
    path = pathlib.Path(value)
    return {"dir": path if base_dir is None else base_dir / path}, []


_LOADERS: Final[Mapping[type, Callable[[dict[str, Any], pathlib.Path | None], Loaded]]] = {
    WireGuardConfig: _load_private_key,
    StateConfig: _load_state_dir,
}


def _missing_keys_named(error: ClassValidationError, cl: type) -> list[Exception]:
    """cattrs' errors, with its KeyError for a missing required key made one of ours."""
    errors: list[Exception] = []
    for sub in error.exceptions:
        notes = [n for n in getattr(sub, "__notes__", ()) if isinstance(n, AttributeValidationNote)]
        if isinstance(sub, KeyError) and notes:
            sub = _noted(InvalidValue(None, "required", shown="(not set)"), notes[0].name, cl)
        errors.append(sub)
    return errors


def _section_hook(cl: Any, conv: cattrs.Converter, base_dir: pathlib.Path | None) -> Hook:
    attrs.resolve_types(cl)
    fields = attrs.fields(cl)
    overrides: dict[str, Any] = {}  # Any: mypy can't tell **overrides from the flag args
    for f in fields:
        if f.metadata.get(_NOT_IN_FILE) or f.metadata.get(_BY_LOADER):
            overrides[f.name] = override(omit=True)
        elif _CHECK in f.metadata or _HOOK in f.metadata:
            hook = f.metadata.get(_HOOK) or conv.get_structure_hook(f.type)
            if _CHECK in f.metadata:
                hook = _then_check(hook, f.metadata[_CHECK])
            overrides[f.name] = override(struct_hook=hook)
    structure_keys = make_dict_structure_fn(
        cl,
        conv,
        _cattrs_forbid_extra_keys=True,
        _cattrs_detailed_validation=True,
        _cattrs_use_linecache=False,
        **overrides,
    )
    file_keys = {f.metadata[_FILE_KEY]: f.name for f in fields if _FILE_KEY in f.metadata}
    section_check = _SECTION_CHECKS.get(cl)
    loader = _LOADERS.get(cl)

    def structure(value: object, _: Any) -> Any:
        if not isinstance(value, dict):
            raise InvalidValue(value, "expected a table: a [section] or { key = value, ... }")
        table = dict(value)
        errors: list[Exception] = []
        for file_key, name in file_keys.items():
            if file_key not in table:
                continue
            path = table.pop(file_key)
            try:
                if name in table:
                    raise InvalidValue(path, f"set either {name} or {file_key}, not both")
                table[name] = _read_secret_file(path, base_dir)
            except InvalidValue as e:
                errors.append(_noted(e, file_key, cl))
        loaded: dict[str, Any] = {}
        if loader is not None:
            loaded, load_problems = loader(table, base_dir)
            errors += [_noted(e, key, cl) for key, e in load_problems]
        try:
            section = structure_keys(table, cl)
        except ClassValidationError as e:
            errors += _missing_keys_named(e, cl)
        if errors:
            raise ClassValidationError(f"While structuring {cl.__name__}", errors, cl)
        section = attrs.evolve(section, **loaded)
        problems = section_check(section) if section_check else []
        if problems:
            noted = [_noted(e, key, cl) for key, e in problems]
            raise ClassValidationError(f"While checking {cl.__name__}", noted, cl)
        return section

    return structure


def _then_check(hook: Hook, check: Callable[[Any], None]) -> Hook:
    def structure(value: object, t: Any) -> Any:
        result = hook(value, t)
        check(result)
        return result

    return structure


def _converter(base_dir: pathlib.Path | None) -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    for t, hook in _VALUE_HOOKS.items():
        conv.register_structure_hook(t, hook)
    conv.register_structure_hook_factory(_is_tuple_of_any_length, lambda t: _tuple_hook(t, conv))
    conv.register_structure_hook_factory(_is_section, lambda t: _section_hook(t, conv, base_dir))
    return conv


# --- errors -> lines ------------------------------------------------------------------------

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _join(path: str, key: str) -> str:
    if "." in key or "[" in key:  # already a path, from a cross-section check
        return f"{path}.{key}" if path else key
    shown = key if _BARE_KEY.fullmatch(key) else '"' + key.replace('"', '\\"') + '"'
    return f"{path}.{shown}" if path else shown


def _keys_of(cl: Any) -> list[str]:
    keys: list[str] = []
    for f in attrs.fields(cl):
        if not f.metadata.get(_NOT_IN_FILE):
            keys.append(f.name)
        if _FILE_KEY in f.metadata:
            keys.append(f.metadata[_FILE_KEY])
    return keys


def _describe(error: BaseException, path: str, hidden: bool = False) -> list[str]:
    """One line per problem in cattrs' tree of errors; `hidden` keeps secrets out of them."""
    lines: list[str] = []
    if isinstance(error, ClassValidationError):
        fields = attrs.fields_dict(error.cl)
        with_key, without_key = error.group_exceptions()
        for sub, note in with_key:
            field = fields.get(note.name)
            hide = hidden or (field is not None and not field.repr)
            lines += _describe(sub, _join(path, note.name), hide)
        for sub in without_key:
            lines += _describe(sub, path, hidden)
    elif isinstance(error, IterableValidationError):
        with_index, without_index = error.group_exceptions()
        for sub, inote in with_index:
            lines += _describe(sub, f"{path}[{inote.index}]", hidden)
        for sub in without_index:
            lines += _describe(sub, path, hidden)
    elif isinstance(error, ForbiddenExtraKeysError):
        allowed = ", ".join(_keys_of(error.cl))
        for key in sorted(error.extra_fields):
            lines.append(f"{_join(path, key)}: unknown key — allowed: {allowed}")
    elif isinstance(error, InvalidValue):
        shown = "(hidden)" if hidden and not error.shown_by_caller else error.shown
        lines.append(f"{path or '(top level)'}: {shown} — {error.allowed}")
    else:
        raise error  # not a bad value but a bug here: let it surface
    return lines


# --- entry points ---------------------------------------------------------------------------

_TOML_POSITION = re.compile(r"(?P<msg>.*) \(at line (?P<line>\d+), column (?P<column>\d+)\)")


def _syntax_problem(source: str, error: tomllib.TOMLDecodeError) -> str:
    text = str(error)
    if m := _TOML_POSITION.fullmatch(text):
        return f"{source}: TOML syntax error at line {m['line']}, column {m['column']}: {m['msg']}"
    if text.endswith(" (at end of document)"):
        return f"{source}: TOML syntax error at end of document: {text[:-21]}"
    return f"{source}: TOML syntax error: {text}"


def parse_config(
    text: str, *, source: str = "<string>", base_dir: pathlib.Path | None = None
) -> Config:
    """Parse TOML text; relative file keys (secret_file) resolve against `base_dir` (else the
    working directory). Raises ConfigError listing every problem found."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([_syntax_problem(source, e)]) from None
    except RecursionError:
        raise ConfigError([f"{source}: TOML nested too deeply"]) from None
    try:
        config = _converter(base_dir).structure(data, Config)
    except (cattrs.BaseValidationError, InvalidValue) as e:
        raise ConfigError(_describe(e, "")) from None
    return attrs.evolve(config, source=source)


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and parse a config file; secret_file paths are relative to its directory."""
    file = pathlib.Path(path)
    try:
        raw = file.read_bytes()
    except OSError as e:
        raise ConfigError([f"{file}: cannot read the config file — {e.strerror or e}"]) from None
    try:
        text = raw.decode()
    except UnicodeDecodeError as e:
        raise ConfigError([f"{file}: not UTF-8 text (bad byte at offset {e.start})"]) from None
    return parse_config(text, source=os.fspath(path), base_dir=file.absolute().parent)


def default_config() -> Config:
    """Every key at its default: the shipped conf/trivpn.toml with ToyVPN's secret removed and
    WireGuard off (the shipped file turns it on)."""
    return Config()
