"""UDP endpoints as the kernel gives them and as people (and `wg`) write and read them.

`parse_host_port` is the one reader of ``host:port`` text; every caller (config keys, the UAPI's
``endpoint=``, the CLI's server argument) adds its own rules on top and turns
`EndpointSyntaxError` into its own kind of error.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Final

_DNS_LABEL: Final = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


class EndpointSyntaxError(ValueError):
    """Text that is not ``host:port``; the message says what is wrong, without the text."""


def plain_address(addr: tuple[Any, ...]) -> tuple[str, int]:
    """(host, port) of a received address: v4-mapped IPv6 shown as IPv4, flow/scope dropped."""
    host = str(addr[0])
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return host, addr[1]


def join_host_port(host: str, port: int) -> str:
    """``host:port``, or ``[v6]:port``: what `parse_host_port` reads back."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def format_endpoint(addr: tuple[Any, ...]) -> str:
    """``host:port``, or ``[v6]:port``; v4-mapped addresses shown as IPv4."""
    return join_host_port(*plain_address(addr))


def is_dns_name(host: str) -> bool:
    labels = host.removesuffix(".").split(".")
    return (
        len(host) <= 253
        and all(_DNS_LABEL.fullmatch(label) for label in labels)
        and not labels[-1].isdigit()  # "10.8.0" is a mistyped address, not a name
    )


def parse_host_port(text: str, *, names: bool = False) -> tuple[str, int]:
    """Read ``host:port`` or ``[v6]:port`` into (host, port).

    The host is an IP literal in its normal form, without brackets; with `names` it may also
    be a DNS name, kept as written. The port is 1 to 65535. The host is checked before the
    port. Raises EndpointSyntaxError, whose wording the config's messages pin: they differ
    with `names` because a key that takes names explains its brackets differently.
    """
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise EndpointSyntaxError("expected host:port")
    bracketed = host.startswith("[") and host.endswith("]")
    if bracketed:
        host = host[1:-1]
    elif ":" in host:
        raise EndpointSyntaxError("an IPv6 host needs brackets")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if names:
        host = _dialled_host(host, ip, bracketed)
    else:
        if bracketed and ":" not in host:
            raise EndpointSyntaxError("brackets are only for IPv6 hosts")
        if ip is None:
            raise EndpointSyntaxError("the host must be an IP address")
        host = str(ip)
    return host, _port(port_text)


def _dialled_host(
    host: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None, bracketed: bool
) -> str:
    if ip is None:
        if bracketed:
            raise EndpointSyntaxError("brackets are only for IPv6 addresses")
        if not is_dns_name(host):
            raise EndpointSyntaxError("the host must be a DNS name or an IP address")
        return host
    if bracketed != (ip.version == 6):
        raise EndpointSyntaxError("an IPv6 host needs brackets; others take none")
    return str(ip)


def _port(text: str) -> int:
    digits = text.lstrip("0")
    # bounded before int(): Python refuses to convert thousands of digits
    if not (text.isascii() and text.isdigit() and len(digits) <= 5):
        raise EndpointSyntaxError("the port must be 1 to 65535")
    port = int(digits or "0")
    if not 1 <= port <= 65535:
        raise EndpointSyntaxError("the port must be 1 to 65535")
    return port
