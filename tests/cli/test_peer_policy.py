"""`trivpn peer disable | enable | set`, `peer add --disabled | --expires`, and the state in
`peer list` and `peer show` (table and JSON)."""

from __future__ import annotations

import datetime
import json
import re
from pathlib import Path

import pytest

from trivpn.cli.main import main
from trivpn.proto.policy import Policy
from trivpn.proto.wireguard import keys
from trivpn.registry import store

STATIC_PUB = keys.pubkey(keys.genkey(lambda n: b"\x07" * n))
UTC = datetime.UTC


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
        enabled = false
        expires = 2027-01-31
        [state]
        dir = "state"
        """.replace("\n        ", "\n")
    )
    return path


def peer(conf: Path, *args: str) -> int:
    return main(["peer", *args, "-c", str(conf)])


def stored(conf: Path, name: str) -> Policy:
    with store.Registry.open(conf.parent / "state" / "peers.db", create=False) as r:
        found = r.find(name)
    assert found is not None
    return found.policy


def generation(conf: Path) -> int:
    with store.Registry.open(conf.parent / "state" / "peers.db", create=False) as r:
        return r.generation()


def listed(conf: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, dict[str, object]]:
    capsys.readouterr()
    assert peer(conf, "list", "--json") == 0
    return {row["name"]: row for row in json.loads(capsys.readouterr().out)}


def test_add_disabled_with_an_expiry_then_enable_disable_and_set(
    conf: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert peer(conf, "add", "alice", "--disabled", "--expires", "2099-12-31") == 0
    assert "(10.8.0.3, disabled, expires 2100-01-01T00:00:00Z)" in capsys.readouterr().err
    end = datetime.datetime(2100, 1, 1, tzinfo=UTC)
    assert stored(conf, "alice") == Policy(enabled=False, expires=end)

    rows = listed(conf, capsys)
    assert {k: rows["alice"][k] for k in ("state", "enabled", "expires")} == {
        "state": "disabled",
        "enabled": False,
        "expires": "2100-01-01T00:00:00Z",
    }
    assert (rows["site"]["state"], rows["site"]["expires"]) == ("disabled", "2027-02-01T00:00:00Z")

    assert peer(conf, "enable", "alice") == 0
    assert capsys.readouterr().err == "trivpn: peer 'alice': disabled -> active (active)\n"
    assert stored(conf, "alice") == Policy(expires=end)  # the expiry stays
    assert peer(conf, "enable", "alice") == 0
    assert "peer 'alice': unchanged (active)" in capsys.readouterr().err

    assert peer(conf, "set", "alice", "--expires", "never") == 0
    assert "peer 'alice': expires never (active)" in capsys.readouterr().err
    assert stored(conf, "alice") == Policy()

    # in the past on `set`: allowed, the peer is expired from now on
    assert peer(conf, "set", "alice", "--expires", "2020-01-01T00:00:00Z") == 0
    assert "active -> expired, expires 2020-01-01T00:00:00Z" in capsys.readouterr().err
    assert listed(conf, capsys)["alice"]["state"] == "expired"
    assert peer(conf, "disable", "alice") == 0
    assert listed(conf, capsys)["alice"]["state"] == "disabled"  # disabled wins


def test_a_relative_expiry_and_the_table(conf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = datetime.datetime.now(UTC).replace(microsecond=0)
    assert peer(conf, "add", "alice", "--expires", "30d") == 0
    expires = stored(conf, "alice").expires
    after = datetime.datetime.now(UTC)
    assert expires is not None
    assert before + datetime.timedelta(days=30) <= expires <= after + datetime.timedelta(days=30)
    capsys.readouterr()
    assert peer(conf, "list") == 0
    header, site, alice = capsys.readouterr().out.splitlines()
    titles = re.split(r" {2,}", header)
    assert titles[:5] == ["NAME", "STATE", "USAGE", "EXPIRES", "RATE"]
    assert site.split()[:6] == ["site", "disabled", "0", "B", "2027-02-01T00:00:00Z", "-"]
    iso = expires.isoformat().replace("+00:00", "Z")
    assert alice.split()[:6] == ["alice", "active", "0", "B", iso, "-"]

    assert peer(conf, "show", "alice") == 0
    shown = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines())
    assert shown["state"] == "active" and shown["expires"] == iso
    assert peer(conf, "show", "site", "--json") == 0
    row = json.loads(capsys.readouterr().out)
    assert (row["name"], row["state"], row["enabled"]) == ("site", "disabled", False)
    assert row["expires"] == "2027-02-01T00:00:00Z" and row["source"] == "config"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["add", "x", "--expires", "soon"], "--expires: 'soon' — "),
        (["add", "x", "--expires", "2027-02-30"], "--expires: '2027-02-30' — day is out of range"),
        (
            ["add", "x", "--expires", "2020-01-01"],
            "--expires: '2020-01-01' — 2020-01-02T00:00:00Z is in the past",
        ),
        (["add", "x", "--expires", "2030-01-01T10:00"], "a time without an offset"),
        (["set", "alice"], "peer set: nothing to change; give --expires"),
        (["set", "alice", "--expires", "tomorrow"], "--expires: 'tomorrow'"),
        (["set", "nobody", "--expires", "never"], "no peer named 'nobody' in the registry"),
        (["disable", "nobody"], "no peer named 'nobody' in the registry"),
        (["disable", "site"], "is a peer of the config file"),
        (
            ["set", "site", "--expires", "1d"],
            "set enabled, expires, quota or rates there and reload",
        ),
    ],
)
def test_mistakes_are_one_line_exit_2_and_change_nothing(
    conf: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert peer(conf, "add", "alice") == 0
    before = generation(conf)
    capsys.readouterr()
    assert peer(conf, *args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err, err
    assert generation(conf) == before
    assert stored(conf, "alice") == Policy()
    with store.Registry.open(conf.parent / "state" / "peers.db", create=False) as r:
        assert [p.name for p in r.peers()] == ["alice"]
