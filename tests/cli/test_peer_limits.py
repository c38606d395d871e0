"""`trivpn peer add | set --quota | --rate | --rate-down | --rate-up`, `peer reset-usage`, and
usage, quota and rates in `peer list` and `peer show` (table and JSON; from the registry, or
from the running server's status document)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from trivpn.cli.main import main
from trivpn.control import status_client
from trivpn.proto.periods import QuotaPeriod
from trivpn.proto.policy import Policy, Quota
from trivpn.proto.usage import UsageDelta, UsageRecord
from trivpn.proto.wireguard import keys
from trivpn.registry import store

STATIC_PUB = keys.pubkey(keys.genkey(lambda n: b"\x07" * n))
GiB = 1024**3
ROW_FIELDS = [
    "state",
    "enabled",
    "expires",
    "quota_bytes",
    "quota_period",
    "usage_bytes",
    "lifetime_rx_bytes",
    "lifetime_tx_bytes",
    "rate_down_bps",
    "rate_up_bps",
]


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    path = tmp_path / "trivpn.toml"
    path.write_text(
        f"""
        [interface]
        address = ["10.8.0.1/24"]
        [wireguard]
        enabled = true
        private_key_file = "server.key"
        public_endpoint = "vpn.example.com:51820"
        [[wireguard.peers]]
        name = "site"
        public_key = "{STATIC_PUB}"
        allowed_ips = ["10.8.0.2/32"]
        quota = "1GiB/total"
        rate_up = "5Mbit"
        [state]
        dir = "state"
        """.replace("\n        ", "\n")
    )
    return path


def peer(conf: Path, *args: str) -> int:
    return main(["peer", *args, "-c", str(conf)])


def registry(conf: Path) -> store.Registry:
    return store.Registry.open(conf.parent / "state" / "peers.db", create=False)


def stored(conf: Path, name: str) -> store.RegistryPeer:
    with registry(conf) as r:
        found = r.find(name)
    assert found is not None
    return found


def add_usage(conf: Path, public_key: bytes, rx: int, tx: int) -> None:
    with registry(conf) as r:
        r.add_usage([UsageDelta(public_key, rx, tx)], time.time())


def rows(conf: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, dict[str, Any]]:
    capsys.readouterr()
    assert peer(conf, "list", "--json") == 0
    return {row["name"]: row for row in json.loads(capsys.readouterr().out)}


def table(conf: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, dict[str, str]]:
    """`peer list`'s cells by peer name and column title."""
    capsys.readouterr()
    assert peer(conf, "list") == 0
    header, *lines = capsys.readouterr().out.splitlines()
    titles = re.split(r" {2,}", header)
    return {
        cells[0]: dict(zip(titles, cells, strict=True))
        for cells in (re.split(r" {2,}", line) for line in lines)
    }


def test_add_with_limits_then_set_and_clear_them(
    conf: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--quota", "50GiB/month", "--rate", "20Mbit", "--rate-up", "5Mbit"]
    assert peer(conf, "add", "alice", *args) == 0
    err = capsys.readouterr().err
    assert "(10.8.0.3, quota 50GiB/month, rate down 20Mbit, rate up 5Mbit)" in err
    quota = Quota(50 * GiB, QuotaPeriod.MONTH)
    limited = Policy(quota=quota, rate_down=20_000_000, rate_up=5_000_000)
    assert stored(conf, "alice").policy == limited  # --rate-up wins over --rate

    row = rows(conf, capsys)["alice"]
    assert {key: row[key] for key in ROW_FIELDS} == {
        "state": "active",
        "enabled": True,
        "expires": None,
        "quota_bytes": 50 * GiB,
        "quota_period": "month",
        "usage_bytes": 0,
        "lifetime_rx_bytes": 0,
        "lifetime_tx_bytes": 0,
        "rate_down_bps": 20_000_000,
        "rate_up_bps": 5_000_000,
    }
    cells = table(conf, capsys)
    assert (cells["alice"]["USAGE"], cells["alice"]["RATE"]) == (
        "0 B / 50 GiB month",
        "20Mbit down, 5Mbit up",
    )
    assert (cells["site"]["USAGE"], cells["site"]["RATE"]) == ("0 B / 1 GiB total", "5Mbit up")

    assert peer(conf, "set", "alice", "--rate-down", "none", "--quota", "2GiB/day") == 0
    assert capsys.readouterr().err == (
        "trivpn: peer 'alice': quota 2GiB/day, rate down none (active)\n"
    )
    assert stored(conf, "alice").policy == Policy(
        quota=Quota(2 * GiB, QuotaPeriod.DAY), rate_up=5_000_000
    )
    assert peer(conf, "set", "alice", "--rate", "none", "--quota", "none") == 0
    assert stored(conf, "alice").policy == Policy()
    assert table(conf, capsys)["alice"]["RATE"] == "-"


def test_usage_from_the_registry_makes_the_state_and_a_reset_lifts_it(
    conf: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert peer(conf, "add", "alice", "--quota", "1MiB/total") == 0
    alice = stored(conf, "alice").public_key
    add_usage(conf, alice, 700 * 1024, 400 * 1024)  # 1.07 MiB: over
    add_usage(conf, keys.parse_key(STATIC_PUB), 3 * 1024**2, 0)
    listed = rows(conf, capsys)
    assert listed["alice"]["state"] == "over_quota"
    assert listed["alice"]["usage_bytes"] == 1100 * 1024
    assert (listed["alice"]["lifetime_rx_bytes"], listed["alice"]["lifetime_tx_bytes"]) == (
        700 * 1024,
        400 * 1024,
    )
    assert (listed["site"]["state"], listed["site"]["usage_bytes"]) == ("active", 3 * 1024**2)
    cells = table(conf, capsys)
    assert (cells["alice"]["STATE"], cells["alice"]["USAGE"]) == (
        "over-quota",
        "1.07 MiB / 1 MiB total",
    )
    assert cells["site"]["USAGE"] == "3.00 MiB / 1 GiB total"

    assert peer(conf, "show", "alice") == 0
    shown = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines())
    assert shown["state"] == "over-quota" and shown["usage"] == "1.07 MiB / 1 MiB total"
    assert shown["lifetime"] == "700.00 KiB received, 400.00 KiB sent"
    assert shown["rate"] == "-"
    assert peer(conf, "show", "alice", "--json") == 0
    assert json.loads(capsys.readouterr().out) == listed["alice"]

    # more quota lifts it, and `peer set` says so
    assert peer(conf, "set", "alice", "--quota", "2MiB/total") == 0
    assert "over_quota -> active, quota 2MiB/total (active)" in capsys.readouterr().err
    assert peer(conf, "set", "alice", "--quota", "1MiB/total") == 0
    assert "active -> over_quota, quota 1MiB/total (over_quota)" in capsys.readouterr().err

    with registry(conf) as r:
        generation = r.generation()
    assert peer(conf, "reset-usage", "alice") == 0
    assert capsys.readouterr().err == (
        "trivpn: peer 'alice': usage reset; the lifetime counters stay (active)\n"
    )
    with registry(conf) as r:
        assert r.generation() == generation + 1  # a running server reloads it
        assert r.usage_records([alice])[alice] == UsageRecord(
            lifetime_rx=700 * 1024, lifetime_tx=400 * 1024, resets=1
        )
    assert rows(conf, capsys)["alice"]["state"] == "active"

    assert peer(conf, "reset-usage", "site") == 0  # a static peer: by its public key
    site = rows(conf, capsys)["site"]
    assert (site["usage_bytes"], site["lifetime_rx_bytes"]) == (0, 3 * 1024**2)


def test_reset_usage_of_a_static_peer_before_any_registry(
    conf: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert peer(conf, "reset-usage", "site") == 0
    assert "peer 'site': usage reset" in capsys.readouterr().err
    assert rows(conf, capsys)["site"]["usage_bytes"] == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["add", "x", "--quota", "5XB"], "--quota: '5XB' — expected a size and a period"),
        (["add", "x", "--quota", "5GiB"], "--quota: '5GiB' — expected a size and a period"),
        (["add", "x", "--rate", "0Mbit"], "--rate: '0Mbit' — expected a rate above 0"),
        (["add", "x", "--rate-up", "5MB"], "--rate-up: '5MB' — expected a rate above 0"),
        (["set", "alice", "--rate-down", "fast"], "--rate-down: 'fast' — expected a rate"),
        (["set", "alice", "--quota", "0B/day"], "--quota: '0B/day' — a quota of at least 1 B"),
        (
            ["set", "alice"],
            "peer set: nothing to change; give --expires, --quota, --rate, --rate-down, --rate-up",
        ),
        (["set", "site", "--quota", "none"], "set enabled, expires, quota or rates there"),
        (["reset-usage", "nobody"], "no peer named 'nobody' in the registry"),
    ],
)
def test_mistakes_are_one_line_exit_2_and_change_nothing(
    conf: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert peer(conf, "add", "alice", "--rate", "1Mbit") == 0
    with registry(conf) as r:
        before = (r.generation(), r.peers(), r.usage_records())
    capsys.readouterr()
    assert peer(conf, *args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err, err
    with registry(conf) as r:
        assert (r.generation(), r.peers(), r.usage_records()) == before


def test_live_values_come_from_the_running_server(
    conf: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert peer(conf, "add", "alice", "--quota", "1GiB/month") == 0
    alice = keys.encode_key(stored(conf, "alice").public_key)
    add_usage(conf, keys.parse_key(alice), 10, 10)  # stale: the server has more
    live_alice = {
        "public_key": alice,
        "endpoint": "198.51.100.2:40000",
        "latest_handshake": time.time() - 5,
        "rx_bytes": 600 * 1024**2,
        "tx_bytes": 500 * 1024**2,
        "state": "over_quota",
        "enabled": True,
        "expires": None,
        "quota_bytes": GiB,
        "quota_period": "month",
        "usage_bytes": 1100 * 1024**2,
        "lifetime_rx_bytes": 600 * 1024**2,
        "lifetime_tx_bytes": 500 * 1024**2,
        "rate_down_bps": None,
        "rate_up_bps": None,
    }
    # a server of before quotas: its peers carry the state but no usage
    live_site = {
        "public_key": STATIC_PUB,
        "endpoint": None,
        "latest_handshake": None,
        "rx_bytes": 0,
        "tx_bytes": 0,
        "state": "disabled",
        "enabled": False,
        "expires": None,
    }
    document = {"wireguard": {"peers": [live_alice, live_site]}}

    def query_status(path: Path, **_: object) -> dict[str, Any]:
        assert path == status_client.socket_path("trivpn0")
        return document

    monkeypatch.setattr(status_client, "query_status", query_status)
    listed = rows(conf, capsys)
    assert {key: listed["alice"][key] for key in ROW_FIELDS} == {
        key: live_alice[key] for key in ROW_FIELDS
    }
    assert listed["alice"]["received"] == 600 * 1024**2
    assert (listed["site"]["state"], listed["site"]["enabled"]) == ("disabled", False)
    assert (listed["site"]["quota_bytes"], listed["site"]["usage_bytes"]) == (GiB, 0)  # the file
    cells = table(conf, capsys)
    assert (cells["alice"]["STATE"], cells["alice"]["USAGE"]) == (
        "over-quota",
        "1.07 GiB / 1 GiB month",
    )
    assert peer(conf, "show", "alice", "--json") == 0
    assert json.loads(capsys.readouterr().out) == listed["alice"]
