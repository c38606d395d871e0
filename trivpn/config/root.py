"""The whole configuration, and the checks that relate its sections."""

import ipaddress

import attrs

from trivpn.config.checks import find_overlaps
from trivpn.config.errors import InvalidValue, Problems
from trivpn.config.sections import (
    InterfaceConfig,
    MetricsConfig,
    NatConfig,
    StateConfig,
    ToyVpnConfig,
    WebConfig,
)
from trivpn.config.values import NOT_IN_FILE
from trivpn.config.wireguard import WireGuardConfig, peer_allowed_ips


@attrs.frozen(kw_only=True)
class Config:
    # the sections are frozen: sharing one default instance is safe
    interface: InterfaceConfig = InterfaceConfig()  # noqa: RUF009
    nat: NatConfig = NatConfig()  # noqa: RUF009
    toyvpn: ToyVpnConfig = ToyVpnConfig()  # noqa: RUF009
    wireguard: WireGuardConfig = WireGuardConfig()  # noqa: RUF009
    state: StateConfig = StateConfig()  # noqa: RUF009
    metrics: MetricsConfig = MetricsConfig()  # noqa: RUF009
    web: WebConfig = WebConfig()  # noqa: RUF009
    source: str = attrs.field(default="<string>", metadata={NOT_IN_FILE: True})


def config_problems(cfg: Config) -> Problems:
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
    # the WireGuard peers among themselves (nesting allowed) were checked by their section
    problems += find_overlaps(pools)
    if cfg.wireguard.enabled:
        routes = [(f"wireguard.{key}", net) for key, net in peer_allowed_ips(cfg.wireguard)]
        problems += find_overlaps(routes, against=pools)
    return problems
