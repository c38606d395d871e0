"""Structuring TOML values into typed values: every bad value becomes an InvalidValue."""

import ipaddress
import math
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar, get_args, get_origin

import cattrs
from cattrs.errors import IterableValidationError, IterableValidationNote

from trivpn.config.errors import InvalidValue
from trivpn.config.fields import Hook
from trivpn.config.values import Endpoint, IPAddress, IPInterface, IPNetwork
from trivpn.proto.wireguard import keys


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


def tuple_hook(tuple_type: Any, conv: cattrs.Converter) -> Hook:
    item_type = get_args(tuple_type)[0]
    item_hook = conv.get_structure_hook(item_type)
    return list_of(lambda item: item_hook(item, item_type), item_type)
