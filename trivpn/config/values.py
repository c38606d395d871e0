"""The value types of the configuration beyond what TOML and ipaddress give."""

import ipaddress
import re
import socket

import attrs

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


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
