"""What a key's value may be, and how its TOML value becomes one: every bad value becomes an
InvalidValue.

The value types beyond what TOML and ipaddress give (addresses, endpoints), the structure hooks
that read them, and the field metadata through which a section's attrs fields name their hooks
and checks for the loader.
"""

import ipaddress
import math
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar, get_args, get_origin

import attrs
import cattrs
from cattrs.errors import IterableValidationError, IterableValidationNote

from trivpn.config.errors import InvalidValue
from trivpn.proto.endpoints import join_host_port, parse_host_port
from trivpn.proto.ip import IPAddress as IPAddress  # the config's value types, one owner
from trivpn.proto.ip import IPNetwork as IPNetwork
from trivpn.proto.policy import QUOTA_ALLOWED, RATE_ALLOWED, Quota, parse_quota, parse_rate
from trivpn.proto.wireguard import keys

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


def by_version(value: IPAddress | IPNetwork) -> tuple[int, IPAddress | IPNetwork]:
    """A sort key for mixed addresses or networks: IPv4 before IPv6 (the two do not compare),
    then in address order (a network: by address, then by prefix length)."""
    return value.version, value


@attrs.frozen
class Endpoint:
    """A UDP address to listen on, written ``host:port`` or ``[v6]:port``."""

    host: str  # an IP literal in its normal form ("::" for "[::]")
    port: int

    @classmethod
    def parse(cls, text: str) -> "Endpoint":
        """Parse ``host:port``; ValueError (EndpointSyntaxError) says what is wrong."""
        return cls(*parse_host_port(text))

    @property
    def family(self) -> int:
        import socket  # here: the CLI's peer commands read endpoints but open no socket

        if ipaddress.ip_address(self.host).version == 6:
            return socket.AF_INET6
        return socket.AF_INET

    def __str__(self) -> str:
        return join_host_port(self.host, self.port)


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
        host, port = parse_host_port(text, names=True)
        try:
            wildcard = ipaddress.ip_address(host).is_unspecified
        except ValueError:  # a DNS name
            wildcard = False
        if wildcard:
            raise ValueError("a wildcard address cannot be dialled; use the server's own")
        return cls(host, port)

    def __str__(self) -> str:
        return join_host_port(self.host, self.port)


# --- field metadata: how a section's attrs fields tell the loader to read their keys --------

Hook = Callable[[Any, Any], Any]  # cattrs' structure hook: (value, target type) -> object

CHECK: Final = "trivpn.check"  # a value check run right after the key is structured
FILE_KEY: Final = "trivpn.file_key"  # a sibling key naming a file that holds this value
NOT_IN_FILE: Final = "trivpn.not_in_file"  # set by the loader, never read from TOML
HOOK: Final = "trivpn.hook"  # a structure hook for this key instead of its type's
BY_LOADER: Final = "trivpn.by_loader"  # a TOML key that a loader in `files` reads, not cattrs


def checked(check: Callable[[Any], None]) -> dict[str, object]:
    return {CHECK: check}


def hooked(hook: Hook, check: Callable[[Any], None] | None = None) -> dict[str, object]:
    return {HOOK: hook} if check is None else {HOOK: hook, CHECK: check}


# --- structure hooks ------------------------------------------------------------------------


def structure_key(value: object, _: Any) -> bytes:
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


def structure_quota(value: object, _: Any) -> Quota | None:
    """A traffic quota (``"50GiB/month"``, trivpn.proto.policy); ``"none"``: none."""
    return _parsed(parse_quota, value, QUOTA_ALLOWED)


def structure_rate(value: object, _: Any) -> int | None:
    """A rate limit (``"20Mbit"``) in bits per second; ``"none"``: none."""
    return _parsed(parse_rate, value, RATE_ALLOWED)


def endpoint_hook(examples: str, parse: Callable[[str], object] = Endpoint.parse) -> Hook:
    """A ``host:port`` key read by `parse` (Endpoint's or PublicEndpoint's)."""

    def structure(value: object, _: Any) -> object:
        try:
            return parse(structure_str(value, None))
        except InvalidValue:
            raise InvalidValue(value, f"expected host:port, e.g. {examples}") from None
        except ValueError as e:
            raise InvalidValue(value, f"{e}, e.g. {examples}") from None

    return structure


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


def structure_str(value: object, _: Any) -> str:
    if not isinstance(value, str):
        raise InvalidValue(value, "expected a string")
    return value


def _structure_bytes(value: object, _: Any) -> bytes:
    if isinstance(value, bytes):  # already read from a file key
        return value
    return structure_str(value, None).encode()


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


def parse_network(value: object, example: str, *, v4_only: bool = False) -> IPNetwork:
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
    return parse_network(value, "0.0.0.0/0")


def _structure_v4_network(value: object, _: Any) -> ipaddress.IPv4Network:
    net = parse_network(value, "10.8.0.128/25", v4_only=True)
    assert isinstance(net, ipaddress.IPv4Network)
    return net


def _structure_address(value: object, _: Any) -> IPAddress:
    return _parsed(ipaddress.ip_address, value, "expected an IP address, e.g. 1.1.1.1")


VALUE_HOOKS: Final[Mapping[Any, Hook]] = {
    int: _structure_int,
    float: _structure_float,
    bool: _structure_bool,
    str: structure_str,
    bytes: _structure_bytes,
    IPInterface: _structure_interface,
    IPNetwork: _structure_network,
    ipaddress.IPv4Network: _structure_v4_network,
    IPAddress: _structure_address,
    Endpoint: endpoint_hook("0.0.0.0:8000 or [::]:8000"),
}


def networks_hook(example: str) -> Hook:
    """A list of IP networks, with `example` in the message about a bad one."""

    def structure(value: object, _: Any) -> tuple[IPNetwork, ...]:
        networks: tuple[IPNetwork, ...] = list_of(
            lambda item: parse_network(item, example), IPNetwork
        )(value, None)
        return networks

    return structure


def is_tuple_of_any_length(t: Any) -> bool:
    args = get_args(t)
    return get_origin(t) is tuple and len(args) == 2 and args[1] is Ellipsis


def list_of(structure_item: Callable[[object], Any], item_type: Any) -> Hook:
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


def tuple_hook(tuple_type: Any, conv: cattrs.BaseConverter) -> Hook:
    item_type = get_args(tuple_type)[0]
    item_hook = conv.get_structure_hook(item_type)
    return list_of(lambda item: item_hook(item, item_type), item_type)
