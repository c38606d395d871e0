"""The small sections: [interface], [nat], [toyvpn], [state], [metrics] and [web], each with
its section check. [wireguard] has a module of its own; `root` holds them all."""

import ipaddress
import os
import pathlib
import re
from typing import Final

import attrs

from trivpn.config.checks import (
    check_addresses,
    check_egress,
    check_ifname,
    check_mtu,
    check_search_domain,
    check_seconds,
)
from trivpn.config.errors import InvalidValue, Problems, show
from trivpn.config.values import (
    BY_LOADER,
    FILE_KEY,
    NOT_IN_FILE,
    Endpoint,
    Hook,
    IPAddress,
    IPInterface,
    IPNetwork,
    checked,
    endpoint_hook,
    hooked,
    structure_rate,
)

# --- [interface]: the TUN device ------------------------------------------------------------


@attrs.frozen(kw_only=True)
class InterfaceConfig:
    """The TUN device; its addresses' subnets are the VPN."""

    name: str = attrs.field(default="trivpn0", metadata=checked(check_ifname))
    address: tuple[IPInterface, ...] = attrs.field(
        default=(ipaddress.IPv4Interface("10.8.0.1/24"),), metadata=checked(check_addresses)
    )
    mtu: int = attrs.field(default=1420, metadata=checked(check_mtu))

    @property
    def subnets(self) -> tuple[IPNetwork, ...]:
        return tuple(dict.fromkeys(a.network for a in self.address))


def interface_problems(iface: InterfaceConfig) -> Problems:
    if iface.mtu < 1280 and any(a.version == 6 for a in iface.address):
        return [("mtu", InvalidValue(iface.mtu, "expected 1280 or more with an IPv6 address"))]
    return []


# --- [nat]: masquerading of tunnel traffic toward the outside -------------------------------


@attrs.frozen(kw_only=True)
class NatConfig:
    masquerade: bool = True
    egress: str = attrs.field(default="auto", metadata=checked(check_egress))


# --- [toyvpn]: the cleartext ToyVPN protocol ------------------------------------------------


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
    # bits per second per session, each way (down: toward the client); None: unlimited
    rate_down: int | None = attrs.field(default=None, metadata=hooked(structure_rate))
    rate_up: int | None = attrs.field(default=None, metadata=hooked(structure_rate))


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


# --- [state]: where trivpn keeps what it changes at runtime ---------------------------------

DEFAULT_STATE_DIR: Final = pathlib.Path("/var/lib/trivpn")


_NODE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def default_node() -> str:
    """This gateway's name when [state] node is not set: the host name (gethostname(2),
    without loading the socket module)."""
    return os.uname().nodename


def check_node(node: str) -> None:
    if not _NODE.fullmatch(node):
        raise InvalidValue(
            node,
            "expected 1 to 63 letters, digits, '.', '_' or '-', starting with one of the first two",
        )


def structure_database(value: object, _: object) -> str | None:
    """A libpq connection string or URI ("" or unset: the SQLite file in [state] dir). Never
    shown back: it names the database's user and host. A password belongs in
    database_password_file, which keeps it out of the file and the log."""
    hidden = "(not shown)"
    if value == "":
        return None
    if not isinstance(value, str) or "\0" in value:
        raise InvalidValue(value, 'expected a libpq connection string or URI, or ""')
    import psycopg  # only a config that names a database pays for loading libpq

    try:
        params = psycopg.conninfo.conninfo_to_dict(value)
    except psycopg.ProgrammingError as e:
        reason = str(e).splitlines()[0] if str(e) else "not understood"
        raise InvalidValue(
            None,
            f"not a libpq connection string or URI ({reason}), e.g. "
            '"postgresql://trivpn@db.example.net/trivpn"',
            shown=hidden,
        ) from None
    if "password" in params:
        raise InvalidValue(
            None, "holds a password: put it in database_password_file instead", shown=hidden
        )
    return value


@attrs.frozen(kw_only=True)
class StateConfig:
    """What trivpn changes at runtime and keeps across restarts: the peer registry, in SQLite
    in ``dir`` or in the PostgreSQL ``database`` that a fleet of gateways shares."""

    # read by files.load_state: relative to the config file's directory, like the key files
    dir: pathlib.Path = attrs.field(default=DEFAULT_STATE_DIR, metadata={BY_LOADER: True})
    database: str | None = attrs.field(
        default=None, repr=False, metadata=hooked(structure_database)
    )
    # read by files.load_state: the password, from a file only (mode 0600), never shown
    database_password_file: pathlib.Path | None = attrs.field(
        default=None, metadata={BY_LOADER: True}
    )
    database_password: str | None = attrs.field(
        default=None, repr=False, metadata={NOT_IN_FILE: True}
    )
    node: str = attrs.field(factory=default_node, metadata=checked(check_node))


def state_problems(state: StateConfig) -> Problems:
    if state.database_password_file is not None and state.database is None:
        why = "set only with database (the SQLite registry has no password)"
        return [("database_password_file", InvalidValue(str(state.database_password_file), why))]
    return []


# --- [metrics]: Prometheus metrics over HTTP ------------------------------------------------


def optional_listen_hook(examples: str) -> Hook:
    """A TCP host:port to serve on, or None for the empty string (that server off)."""
    endpoint_of = endpoint_hook(examples)

    def structure(value: object, t: object) -> Endpoint | None:
        if value == "":
            return None
        endpoint: Endpoint = endpoint_of(value, t)
        return endpoint

    return structure


@attrs.frozen(kw_only=True)
class MetricsConfig:
    """Prometheus metrics over HTTP (GET /metrics); off unless ``listen`` is set."""

    listen: Endpoint | None = attrs.field(
        default=None,
        metadata=hooked(optional_listen_hook('127.0.0.1:9586 or [::1]:9586; "" turns metrics off')),
    )


# --- [web]: the web admin and its HTTP API --------------------------------------------------


@attrs.frozen(kw_only=True)
class WebConfig:
    """The web admin; off unless ``listen`` is set. Its credentials live in the state dir
    (`trivpn web passwd`), never here."""

    listen: Endpoint | None = attrs.field(
        default=None,
        metadata=hooked(
            optional_listen_hook('127.0.0.1:51821 or [::1]:51821; "" turns the web admin off')
        ),
    )
    # HTTPS served directly: both or neither (files.load_web_tls), read by the server
    tls_cert: pathlib.Path | None = attrs.field(default=None, metadata={BY_LOADER: True})
    tls_key: pathlib.Path | None = attrs.field(default=None, metadata={BY_LOADER: True})
