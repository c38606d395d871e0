"""Two gateways of a fleet, one database: `trivpn peer add` run on both at the same moment
never gives two peers the same address (the database's constraint decides, issue 11)."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from pathlib import Path

import pytest
from support.pg_gateway import cli_config, fleet_state

from trivpn.config.files import write_private_file
from trivpn.daemon.keyfile import load_or_create_private_key
from trivpn.proto.wireguard.keys import encode_key
from trivpn.registry.pg_store import PgRegistry

pytestmark = pytest.mark.postgres

ADDS = 50  # in all, half through each gateway's config, all processes started at once
TIMEOUT = 120.0


def test_concurrent_peer_adds_on_two_gateways_never_share_an_address(
    tmp_path: Path, pg_url: str
) -> None:
    confs = []
    key = load_or_create_private_key(tmp_path / "server.key")  # the fleet's one identity
    for node in ("gw1", "gw2"):
        (tmp_path / node).mkdir()
        write_private_file(tmp_path / node / "server.key", (encode_key(key) + "\n").encode())
        confs.append(cli_config(tmp_path / node, fleet_state(pg_url, node)))
    PgRegistry.open(pg_url).close()  # the schema; the racing is the adds'
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "trivpn", "peer", "add", f"p{i}", "-c", str(confs[i % 2])],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(ADDS)
    ]
    errors = [p.communicate(timeout=TIMEOUT)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * ADDS, errors
    with PgRegistry.open(pg_url) as r:
        peers = r.peers()
    assert sorted(p.name for p in peers) == sorted(f"p{i}" for i in range(ADDS))
    v4 = [p.addresses[0] for p in peers]
    assert len(set(v4)) == ADDS, sorted(v4)
    assert all(a in ipaddress.ip_network("10.8.0.0/24") for a in v4)
