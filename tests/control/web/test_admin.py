"""The web admin's peer operations (trivpn.control.web.admin) against a real registry in
tmp_path and a front on fakes: each method's answer and each refusal, and nothing changed by
a refusal."""

from __future__ import annotations

import collections
import json
import threading
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from support.fakes import (
    SERVER_PRIVATE,
    WALL_EPOCH,
    FakeClient,
    make_front,
    until,
    virtual_wallclock,
)

from trivpn.cli.main import main
from trivpn.config import Config, parse_config
from trivpn.control.web.admin import Admin, AdminError
from trivpn.control.web.traffic import TrafficSamples
from trivpn.dataplane.wireguard.front import WireGuardFront
from trivpn.proto.policy import PeerState
from trivpn.proto.toyvpn import ToyVpnServer
from trivpn.proto.usage import UsageDelta
from trivpn.proto.wireguard import crypto, keys
from trivpn.registry.peer_rows import LIVE_FIELDS, ROW_FIELDS
from trivpn.registry.store import Registry, registry_path

STATIC_PRIVATE = crypto.clamp(bytes([7]) * 32)
STATIC_KEY = crypto.public_key(STATIC_PRIVATE)
# `peer list --json`'s fields, and the web's own
ROW_KEYS = (
    {"name", "source", "addresses", "public_key", "created"} | set(ROW_FIELDS) | set(LIVE_FIELDS)
)
WEB_KEYS = ROW_KEYS | {"online", "rx_rate_bps", "tx_rate_bps"}
GIB = 1 << 30


def config(tmp_path: Path, *, subnet: str = "10.8.0.1/24", endpoint: bool = True) -> Config:
    return parse_config(config_text(tmp_path, subnet=subnet, endpoint=endpoint))


def config_text(tmp_path: Path, *, subnet: str = "10.8.0.1/24", endpoint: bool = True) -> str:
    public_endpoint = 'public_endpoint = "vpn.example.com:51820"\n' if endpoint else ""
    return f"""
[interface]
name = "tvtest0"
address = ["{subnet}"]

[state]
dir = "{tmp_path / "state"}"

[wireguard]
enabled = true
private_key = "{keys.encode_key(SERVER_PRIVATE)}"
{public_endpoint}
[[wireguard.peers]]
name = "office"
public_key = "{keys.encode_key(STATIC_KEY)}"
allowed_ips = ["10.8.0.200/32"]
"""


class FakePeerSync:
    def __init__(self) -> None:
        self.pokes = 0

    def poke(self) -> None:
        self.pokes += 1


@attrs.define
class Source:
    cfg: Config
    wireguard: WireGuardFront | None
    peersync: Any = attrs.field(factory=FakePeerSync)
    counters: Mapping[str, int] = attrs.field(factory=collections.Counter)
    egress: str = "eth0"
    toyvpn: ToyVpnServer | None = None
    started: float = WALL_EPOCH
    fleet: None = None


@attrs.define
class Lab:
    admin: Admin
    source: Source
    samples: TrafficSamples

    @property
    def pokes(self) -> int:
        return int(self.source.peersync.pokes)

    def stored(self) -> dict[str, Any]:
        """The registry's peers by name (policies included): what a refusal must not change."""
        path = registry_path(self.source.cfg.state.dir)
        if not path.exists():
            return {}
        with Registry.open(path, create=False) as reg:
            return {p.name: p for p in reg.peers()}


def make_lab(cfg: Config, *, wireguard: bool = True) -> Lab:
    front = make_front(cfg=cfg.wireguard, private_key=SERVER_PRIVATE, wallclock=virtual_wallclock)
    source = Source(cfg, front if wireguard else None)
    samples = TrafficSamples()
    return Lab(Admin(source, samples, clock=virtual_wallclock), source, samples)


@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    return make_lab(config(tmp_path))


async def refused(call: Any, status: int, field: str | None = None) -> AdminError:
    with pytest.raises(AdminError) as caught:
        await call
    assert (caught.value.status, caught.value.field) == (status, field), str(caught.value)
    return caught.value


# --- add ------------------------------------------------------------------------------------


async def test_add_peer_gives_its_row_and_its_config_once(lab: Lab) -> None:
    new = await lab.admin.add_peer({"name": "alice"})
    assert set(new.peer) == WEB_KEYS
    assert new.peer["name"] == "alice" and new.peer["source"] == "registry"
    assert new.peer["addresses"] == ["10.8.0.2"]
    assert new.peer["state"] == "active" and new.peer["online"] is False
    assert new.peer["rx_rate_bps"] is None and new.peer["tx_rate_bps"] is None
    private = next(
        line.split(" = ", 1)[1] for line in new.config.splitlines() if line.startswith("PrivateKey")
    )
    client_public = crypto.public_key(keys.parse_key(private))
    assert new.peer["public_key"] == keys.encode_key(client_public)
    assert f"PublicKey = {keys.encode_key(crypto.public_key(SERVER_PRIVATE))}" in new.config
    assert "Endpoint = vpn.example.com:51820" in new.config
    assert "PresharedKey = " in new.config
    assert new.config not in repr(new)
    assert lab.pokes == 1
    (stored,) = lab.stored().values()
    assert stored.public_key == client_public
    # the private key is in no later answer
    later = json.dumps([await lab.admin.peers(), await lab.admin.peer("alice")])
    assert private not in later and "PrivateKey" not in later
    assert private not in json.dumps(new.peer)


async def test_add_peer_with_limits(lab: Lab) -> None:
    new = await lab.admin.add_peer(
        {
            "name": "bob",
            "expires": "30d",
            "quota": "50GiB/month",
            "rate": "20Mbit",
            "rate_up": "5Mbit",
        }
    )
    row = new.peer
    assert (row["quota_bytes"], row["quota_period"]) == (50 * GIB, "month")
    assert (row["rate_down_bps"], row["rate_up_bps"]) == (20_000_000, 5_000_000)
    assert row["expires"] is not None and row["state"] == "active"
    assert await lab.admin.peer("bob") == row


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": "no spaces"}, "name"),
        ({"name": 5}, "name"),
        ({"name": "a", "quota": 5}, "quota"),
        ({"name": "a", "quota": "lots"}, "quota"),
        ({"name": "a", "rate_down": "fast"}, "rate_down"),
        ({"name": "a", "rate": "1 furlong"}, "rate"),
        ({"name": "a", "expires": "2001-01-31"}, "expires"),
        ({"name": "a", "expires": "soon"}, "expires"),
        ({"name": "a", "disabled": True}, "disabled"),
        ({"name": "a", "enabled": False}, "enabled"),
        ({"name": "a", "address": "10.8.0.9"}, "address"),
    ],
)
async def test_add_peer_refuses_a_bad_field_and_changes_nothing(
    lab: Lab, body: dict[str, Any], field: str
) -> None:
    await lab.admin.add_peer({"name": "first"})
    before = lab.stored()
    error = await refused(lab.admin.add_peer(body), 400, field)
    assert str(error).startswith(f"{field}: ")
    assert lab.stored() == before and lab.pokes == 1


@pytest.mark.parametrize(
    ("option", "field", "text"),
    [
        ("--rate-down", "rate_down", "fast"),
        ("--quota", "quota", "5GiB"),
        ("--expires", "expires", "x"),
    ],
)
async def test_a_bad_field_is_said_as_the_cli_says_it(
    lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, field: str, text: str
) -> None:
    conf = tmp_path / "trivpn.toml"
    conf.write_text(config_text(tmp_path))
    assert main(["peer", "add", "alice", option, text, "-c", str(conf)]) == 2
    said = capsys.readouterr().err.strip()
    error = await refused(lab.admin.add_peer({"name": "alice", field: text}), 400, field)
    assert said == f"{option}: {str(error).removeprefix(field + ': ')}"


async def test_add_peer_refuses_a_name_in_use(lab: Lab) -> None:
    await lab.admin.add_peer({"name": "alice"})
    before = lab.stored()
    await refused(lab.admin.add_peer({"name": "alice"}), 409)
    error = await refused(lab.admin.add_peer({"name": "office"}), 409)  # the config file's
    assert "config file" in str(error)
    assert lab.stored() == before and lab.pokes == 1


async def test_add_peer_refuses_when_no_address_is_left(tmp_path: Path) -> None:
    lab = make_lab(config(tmp_path, subnet="10.8.0.1/30"))  # one address for a peer
    await lab.admin.add_peer({"name": "alice"})
    before = lab.stored()
    error = await refused(lab.admin.add_peer({"name": "bob"}), 409)
    assert "no free IPv4 address" in str(error)
    assert lab.stored() == before


async def test_add_peer_needs_wireguard_and_a_public_endpoint(tmp_path: Path) -> None:
    off = make_lab(config(tmp_path), wireguard=False)
    assert str(await refused(off.admin.add_peer({"name": "alice"}), 409)) == "wireguard is off"
    unset = make_lab(config(tmp_path, endpoint=False))
    error = await refused(unset.admin.add_peer({"name": "alice"}), 409)
    assert str(error).startswith("wireguard.public_endpoint: (not set) — required by adding")
    assert not registry_path(tmp_path / "state").exists()


# --- reads ----------------------------------------------------------------------------------


async def test_peers_lists_the_static_peer_first_with_live_fields(lab: Lab) -> None:
    await lab.admin.add_peer({"name": "alice"})
    alice_key = lab.stored()["alice"].public_key
    lab.samples.sample([(alice_key, 0, 0)], 100.0)
    lab.samples.sample([(alice_key, 10_000, 20_000)], 110.0)  # bytes in 10 s
    rows = await lab.admin.peers()
    assert [(r["name"], r["source"]) for r in rows] == [
        ("office", "config"),
        ("alice", "registry"),
    ]
    assert all(set(r) == WEB_KEYS for r in rows)
    office, alice = rows
    # the front knows both: live transfer counts (0), no handshake yet
    assert (office["received"], office["sent"], office["latest_handshake"]) == (0, 0, None)
    assert (alice["rx_rate_bps"], alice["tx_rate_bps"]) == (8000.0, 16000.0)  # bits/s
    assert office["rx_rate_bps"] is None


async def test_peer_of_an_unknown_name_is_404(lab: Lab) -> None:
    await refused(lab.admin.peer("nobody"), 404)
    await lab.admin.add_peer({"name": "alice"})
    await refused(lab.admin.peer("nobody"), 404)
    assert (await lab.admin.peer("office"))["source"] == "config"


async def test_a_handshake_makes_a_peer_online(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    lab = make_lab(config(tmp_path))
    front = lab.source.wireguard
    assert front is not None
    client = FakeClient(front, STATIC_PRIVATE)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(front.receive_loop)
        client.send(b"")  # a keepalive: the handshake first
        await until(lambda: front.device.peers[STATIC_KEY].last_handshake_time is not None)
        office = await lab.admin.peer("office")
        assert office["online"] is True
        assert office["latest_handshake"] == pytest.approx(virtual_wallclock(), abs=1)
        assert office["endpoint"] is not None and office["received"] > 0
        status = await lab.admin.status()
        assert status["totals"]["online"] == 1
        await trio.sleep(181)
        assert (await lab.admin.peer("office"))["online"] is False
        nursery.cancel_scope.cancel()


async def test_status_is_the_documents_shell_with_uptime_and_totals(lab: Lab) -> None:
    await lab.admin.add_peer({"name": "alice"})
    status = await lab.admin.status()
    assert "peers" not in status["wireguard"] and status["toyvpn"] is None
    assert status["wireguard"]["public_key"] == keys.encode_key(crypto.public_key(SERVER_PRIVATE))
    assert status["nat"]["egress"] == "eth0"
    assert status["uptime_seconds"] == pytest.approx(virtual_wallclock() - WALL_EPOCH, abs=1)
    # the front has the static peer only: the fake PeerSync applied nothing
    assert status["totals"] == {"peers": 1, "online": 0, "rx_bytes": 0, "tx_bytes": 0}


async def test_traffic_gives_the_samples_of_the_peer(lab: Lab) -> None:
    await lab.admin.add_peer({"name": "alice"})
    for wallclock, rx, tx in ((100.0, 0, 0), (110.0, 10, 20), (120.0, 40, 60)):
        lab.samples.sample([(STATIC_KEY, rx, tx)], wallclock)
    assert await lab.admin.traffic("office") == {
        "interval": 10.0,
        "samples": [
            {"time": 110.0, "rx_bps": 8.0, "tx_bps": 16.0},
            {"time": 120.0, "rx_bps": 24.0, "tx_bps": 32.0},
        ],
    }
    idle = (await lab.admin.traffic("alice"))["samples"]
    assert [(s["rx_bps"], s["tx_bps"]) for s in idle] == [(0.0, 0.0), (0.0, 0.0)]
    await refused(lab.admin.traffic("nobody"), 404)


# --- update, reset, remove ------------------------------------------------------------------


async def test_update_peer_changes_the_policy_and_says_the_new_state(lab: Lab) -> None:
    await lab.admin.add_peer({"name": "alice", "rate": "20Mbit"})
    row = await lab.admin.update_peer("alice", {"enabled": False, "quota": "1GiB/day"})
    assert (row["state"], row["enabled"]) == ("disabled", False)
    assert (row["quota_bytes"], row["quota_period"]) == (GIB, "day")
    assert lab.stored()["alice"].policy.enabled is False
    assert lab.pokes == 2
    row = await lab.admin.update_peer("alice", {"rate_down": None, "enabled": True})
    assert (row["rate_down_bps"], row["rate_up_bps"], row["state"]) == (None, 20_000_000, "active")
    assert await lab.admin.peer("alice") == row


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, None),
        ({"enabled": "no"}, "enabled"),
        ({"enabled": None}, "enabled"),
        ({"disabled": True}, "disabled"),
        ({"name": "bob"}, "name"),
        ({"quota": "50 parsecs"}, "quota"),
        ({"enabled": False, "rate_up": 7}, "rate_up"),
    ],
)
async def test_update_peer_refuses_a_bad_field_and_changes_nothing(
    lab: Lab, body: dict[str, Any], field: str | None
) -> None:
    await lab.admin.add_peer({"name": "alice"})
    before = lab.stored()
    await refused(lab.admin.update_peer("alice", body), 400, field)
    assert lab.stored() == before and lab.pokes == 1


async def test_update_and_remove_refuse_static_and_unknown_peers(lab: Lab) -> None:
    error = await refused(lab.admin.update_peer("office", {"enabled": False}), 409)
    assert str(error) == "'office' is a peer of the config file; set it there and reload"
    await refused(lab.admin.remove_peer("office"), 409)
    for call in (  # no registry yet
        lab.admin.update_peer("nobody", {"enabled": False}),
        lab.admin.remove_peer("nobody"),
        lab.admin.reset_usage("nobody"),
    ):
        error = await refused(call, 404)
        assert str(error) == "no peer named 'nobody' in the registry"
    await lab.admin.add_peer({"name": "alice"})
    before = lab.stored()
    await refused(lab.admin.update_peer("nobody", {"enabled": False}), 404)
    await refused(lab.admin.remove_peer("nobody"), 404)
    assert lab.stored() == before and lab.pokes == 1


async def test_remove_peer_frees_its_name_and_address(lab: Lab) -> None:
    await lab.admin.add_peer({"name": "alice"})
    await lab.admin.remove_peer("alice")
    assert lab.stored() == {} and lab.pokes == 2
    await refused(lab.admin.peer("alice"), 404)
    again = await lab.admin.add_peer({"name": "alice"})
    assert again.peer["addresses"] == ["10.8.0.2"]


async def test_reset_usage_zeroes_the_period_for_registry_and_static_peers(lab: Lab) -> None:
    await lab.admin.add_peer({"name": "alice", "quota": "1GiB/month"})
    alice = lab.stored()["alice"].public_key
    with Registry.open(registry_path(lab.source.cfg.state.dir)) as reg:
        reg.add_usage(
            [UsageDelta(alice, GIB, 0), UsageDelta(STATIC_KEY, 5, 6)], virtual_wallclock()
        )
    assert (await lab.admin.peer("alice"))["state"] == PeerState.OVER_QUOTA
    row = await lab.admin.reset_usage("alice")
    assert (row["usage_bytes"], row["lifetime_rx_bytes"], row["state"]) == (0, GIB, "active")
    assert lab.pokes == 2
    office = await lab.admin.reset_usage("office")
    assert (office["usage_bytes"], office["lifetime_rx_bytes"]) == (0, 5)
    assert lab.pokes == 3
    await refused(lab.admin.reset_usage("nobody"), 404)


async def test_status_counts_toyvpn_sessions_without_listing_them(lab: Lab) -> None:
    pool = types.SimpleNamespace(size=253, in_use=2)
    lab.source.toyvpn = types.SimpleNamespace(  # type: ignore[assignment]
        sessions={1: object(), 2: object()}, pool=pool, counters={}
    )
    toyvpn = (await lab.admin.status())["toyvpn"]
    assert toyvpn["session_count"] == 2 and "sessions" not in toyvpn
    assert toyvpn["pool"] == {"network": str(lab.source.cfg.toyvpn.pool), "size": 253, "in_use": 2}


async def test_the_registry_is_never_opened_on_the_trio_thread(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened_in: list[threading.Thread] = []
    real_open = Registry.open

    def spy(path: Path, **options: Any) -> Registry:
        opened_in.append(threading.current_thread())
        return real_open(path, **options)

    monkeypatch.setattr(Registry, "open", spy)
    await lab.admin.add_peer({"name": "alice"})
    await lab.admin.peers()
    await lab.admin.peer("alice")
    await lab.admin.update_peer("alice", {"rate": "1Mbit"})
    await lab.admin.reset_usage("alice")
    await lab.admin.remove_peer("alice")
    assert len(opened_in) == 1  # in a worker thread, then kept for the next calls
    assert threading.main_thread() not in opened_in
