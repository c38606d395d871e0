"""[toyvpn]: the cleartext ToyVPN protocol."""

import ipaddress

import attrs

from trivpn.config.checks import check_search_domain, check_seconds
from trivpn.config.errors import InvalidValue, Problems, show
from trivpn.config.fields import FILE_KEY, checked
from trivpn.config.values import Endpoint, IPAddress, IPNetwork


@attrs.frozen(kw_only=True)
class ToyVpnConfig:
    """The cleartext ToyVPN protocol (Android's ToyVpn sample); off unless enabled."""

    enabled: bool = False
    listen: Endpoint = Endpoint("0.0.0.0", 8000)  # noqa: RUF009 (frozen)
    # from `secret` or the file named by `secret_file`; never shown
    secret: bytes = attrs.field(default=b"", repr=False, metadata={FILE_KEY: "secret_file"})
    pool: ipaddress.IPv4Network = attrs.field(default=ipaddress.IPv4Network("10.8.0.128/25"))
    dns: tuple[IPAddress, ...] = (ipaddress.IPv4Address("1.1.1.1"),)
    routes: tuple[IPNetwork, ...] = (ipaddress.IPv4Network("0.0.0.0/0"),)
    search_domain: str = attrs.field(default="", metadata=checked(check_search_domain))
    keepalive: float = attrs.field(default=15.0, metadata=checked(check_seconds))
    idle_timeout: float = attrs.field(default=60.0, metadata=checked(check_seconds))


# The secret in the shipped conf/trivpn.toml: known to everyone, so never accepted in use.
PLACEHOLDER_SECRET = b"change-me"


def toyvpn_problems(toy: ToyVpnConfig) -> Problems:
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
                    toy.idle_timeout, f"must be greater than keepalive ({show(toy.keepalive)})"
                ),
            )
        )
    return problems
