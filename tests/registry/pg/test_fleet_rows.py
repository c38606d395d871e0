"""The fleet view of `trivpn peer list|show` (and the web API's rows, registry/peer_rows.py):
each peer's latest handshake on any gateway and which node it was on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from support.pg_gateway import cli_config, fleet_state

from trivpn.cli.main import main
from trivpn.proto.wireguard import keys
from trivpn.registry.peer_rows import merge_fleet
from trivpn.registry.pg_store import PgRegistry
from trivpn.registry.sessions import Session

pytestmark = pytest.mark.postgres

KEY = b"\x07" * 32
T = 1_800_000_000.0


def live_row(latest: float | None, endpoint: str | None = None) -> dict[str, Any]:
    return {"latest_handshake": latest, "endpoint": endpoint, "received": 5, "sent": 6}


def test_the_latest_handshake_of_the_fleet_wins_with_its_node_and_endpoint() -> None:
    row = live_row(T, "192.0.2.1:1")
    merge_fleet(row, Session("gw2", KEY, "192.0.2.2:2", T + 30), "gw1")
    assert row == {
        "latest_handshake": T + 30,
        "endpoint": "192.0.2.2:2",
        "node": "gw2",
        "received": 5,  # transfer stays this gateway's
        "sent": 6,
    }


def test_this_gateways_live_handshake_wins_when_as_late() -> None:
    row = live_row(T, "192.0.2.1:1")
    merge_fleet(row, Session("gw2", KEY, "192.0.2.2:2", T), "gw1")
    assert (row["latest_handshake"], row["endpoint"], row["node"]) == (T, "192.0.2.1:1", "gw1")


def test_no_handshake_anywhere_no_node() -> None:
    row = live_row(None)
    merge_fleet(row, Session("gw2", KEY, "192.0.2.2:2", None), "gw1")
    assert (row["latest_handshake"], row["endpoint"], row["node"]) == (None, None, None)
    row = live_row(None)
    merge_fleet(row, None, "gw1")
    assert row["node"] is None


def test_peer_list_and_show_give_the_fleet_view(
    tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    c = ("-c", str(cli_config(tmp_path, fleet_state(pg_url))))
    assert main(["peer", "add", "alice", *c]) == 0
    assert main(["peer", "add", "bob", *c]) == 0
    with PgRegistry.open(pg_url) as db:
        alice = db.find("alice")
        assert alice is not None
        db.record_sessions(
            [
                Session("gw1", alice.public_key, "192.0.2.5:4000", T),
                Session("gw2", alice.public_key, "192.0.2.6:4001", T + 60),
            ]
        )
    capsys.readouterr()
    assert main(["peer", "list", "--json", *c]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert (rows["alice"]["node"], rows["alice"]["latest_handshake"]) == ("gw2", T + 60)
    assert rows["alice"]["endpoint"] == "192.0.2.6:4001"
    assert rows["alice"]["public_key"] == keys.encode_key(alice.public_key)
    assert (rows["bob"]["node"], rows["bob"]["latest_handshake"]) == (None, None)

    assert main(["peer", "list", *c]) == 0
    table = capsys.readouterr().out
    assert "NODE" in table.splitlines()[0] and " gw2 " in table
    assert main(["peer", "show", "alice", *c]) == 0
    assert "node: gw2" in capsys.readouterr().out
