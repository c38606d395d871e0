"""Commands that do not run the server load none of its modules: each is a process start, and
trio, pyroute2, nftables, prometheus_client or the WireGuard device would be most of its time
(issue 13: `peer add` and `genkey` took half a second, mostly imports)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SERVER_MODULES = [
    "trio",
    "pyroute2",
    "nftables",
    "prometheus_client",
    "trivpn.proto.wireguard.device",
    "trivpn.dataplane",
    "trivpn.control.status_socket",
    "trivpn.daemon.server",
]
CONFIG_MODULES = ["cattrs", "attrs", "sqlite3", "segno", "trivpn.config", "trivpn.registry"]

# runs a command as `trivpn` does, then says which of the modules it loaded
PROBE = """
import json, sys
from trivpn.cli.main import main
code = main(sys.argv[2:])
sys.stdout.flush()
print(json.dumps([code, sorted(m for m in json.loads(sys.argv[1]) if m in sys.modules)]),
      file=sys.stderr)
"""


def loaded(modules: list[str], *args: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(modules), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    code, found = json.loads(out.stderr.splitlines()[-1])
    assert code == 0, out.stderr
    return list(found)


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    path = tmp_path / "trivpn.toml"
    path.write_text(
        '[wireguard]\nenabled = true\nprivate_key_file = "server.key"\n'
        'public_endpoint = "vpn.example.com:51820"\n[state]\ndir = "state"\n'
    )
    return path


@pytest.mark.parametrize("command", ["genkey", "genpsk"])
def test_key_commands_load_neither_the_server_nor_the_config(command: str) -> None:
    assert loaded(SERVER_MODULES + CONFIG_MODULES, command) == []


def test_peer_commands_load_no_server_module(conf: Path) -> None:
    assert loaded([*SERVER_MODULES, "segno"], "peer", "add", "alice", "-c", str(conf)) == []
    # peer list also asks the running server (none here) through the control socket's client
    found = loaded([*SERVER_MODULES, "trivpn.registry.store"], "peer", "list", "-c", str(conf))
    assert found == ["trivpn.registry.store"]  # the probe sees what it should see
