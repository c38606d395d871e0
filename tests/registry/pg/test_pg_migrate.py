"""`trivpn registry migrate --to URL`: a SQLite registry with peers, routes, policy and usage
copied into an empty PostgreSQL database, every row; a second run, or a database that holds a
registry, is refused with one line and exit code 2."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import pytest

from trivpn.cli.main import main
from trivpn.config import Endpoint, parse_config
from trivpn.proto.periods import QuotaPeriod
from trivpn.proto.policy import Policy, Quota
from trivpn.proto.usage import UsageDelta
from trivpn.proto.wireguard import crypto, keys
from trivpn.registry.pg_store import PgRegistry
from trivpn.registry.store import AddressPlan, LivePeer, Registry, registry_path

pytestmark = pytest.mark.postgres

CONFIG = """
[interface]
address = ["10.8.0.1/24", "fd00:8::1/64"]
[wireguard]
enabled = true
private_key_file = "server.key"
public_endpoint = "vpn.example.com:51820"
[state]
dir = "state"
"""
DEC_30 = 1798632000.0  # 2026-12-30T12:00:00Z


def pub(n: int) -> bytes:
    return crypto.public_key(keys.generate_private_key(lambda k: n.to_bytes(4, "big") * (k // 4)))


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    path = tmp_path / "trivpn.toml"
    path.write_text(CONFIG)
    return path


def fill(conf: Path) -> Registry:
    """A registry with a bit of everything: explicit and allocated addresses, routes, a psk,
    an endpoint and keepalive, a policy, usage of a registry peer, a static peer and a reset."""
    cfg = parse_config(CONFIG, base_dir=conf.parent)
    plan = AddressPlan.from_config(cfg)
    reg = Registry.open(registry_path(cfg.state.dir))
    limited = Policy(
        enabled=False,
        expires=datetime.datetime(2027, 2, 1, tzinfo=datetime.UTC),
        quota=Quota(4 * 1024**2, QuotaPeriod.TOTAL),
        rate_down=20_000_000,
        rate_up=5_000_000,
    )
    reg.add("alice", pub(1), bytes(range(32)), plan, policy=limited)
    reg.add(
        "site",
        pub(2),
        None,
        plan,
        addresses=[ipaddress.ip_address("10.8.0.77")],
        routes=[ipaddress.ip_network("192.168.50.0/24"), ipaddress.ip_network("fd50::/64")],
    )
    reg.add_live(
        "wg-abc",
        LivePeer(
            pub(3),
            None,
            (ipaddress.ip_address("10.8.0.90"),),
            (),
            Endpoint.parse("198.51.100.7:51820"),
            25,
        ),
        plan,
    )
    reg.add_usage(
        [UsageDelta(pub(1), 1000, 2000), UsageDelta(pub(9), 5, 6)],  # pub(9): a static peer's
        DEC_30,
    )
    reg.reset_key_usage(pub(2))
    return reg


def migrate(conf: Path, url: str) -> int:
    return main(["registry", "migrate", "--to", url, "-c", str(conf)])


def test_every_row_arrives_and_a_second_run_is_refused(
    conf: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with fill(conf) as source:
        peers = source.peers()
        usage = source.usage_records(None)
    assert migrate(conf, pg_url) == 0
    err = capsys.readouterr().err
    assert "copied 3 peers (5 addresses, 2 routes) and 3 usage records from " in err
    with PgRegistry.open(pg_url) as target:
        assert target.peers() == peers  # names, keys, psk, addresses, routes, policy, times
        assert target.usage_records(None) == usage
        assert target.generation() == 2  # the copy is one change
        generation = target.generation()

    assert migrate(conf, pg_url) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert err.endswith(
        "holds 3 peers and 3 usage records already; migrate only into an empty database"
    )
    with PgRegistry.open(pg_url) as target:
        assert target.generation() == generation  # nothing changed


def test_a_database_with_only_usage_is_refused_too(
    conf: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(conf).close()
    with PgRegistry.open(pg_url) as target:  # a gateway already counted a static peer's bytes
        target.add_usage([UsageDelta(pub(9), 1, 1)], DEC_30)
    assert migrate(conf, pg_url) == 2
    assert "holds 0 peers and 1 usage records already" in capsys.readouterr().err
    with PgRegistry.open(pg_url) as target:
        assert target.peers() == []


def test_no_sqlite_registry_is_one_line(
    conf: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert migrate(conf, pg_url) == 1
    err = capsys.readouterr().err.strip()
    assert err.endswith("peers.db: no peer registry (no peer was ever added)")
    with PgRegistry.open(pg_url) as target:
        assert target.peers() == []


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://gw:secret@db/trivpn", "holds a password: put it in database_password_file"),
        ("host=x nonsense", "not a libpq connection string or URI"),
        ("", "expected a PostgreSQL URI or connection string"),
    ],
)
def test_a_bad_url_is_refused_without_being_shown(
    conf: Path, url: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert migrate(conf, url) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("--to: ")
    assert "secret" not in err
