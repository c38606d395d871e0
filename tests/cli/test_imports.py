"""Commands that do not run the server load none of its modules: each is a process start, and
trio, pyroute2, nftables, prometheus_client or the WireGuard device would be most of its time
(issue 13: `peer add` and `genkey` took half a second, mostly imports). Nor do they load what
they do not use of the rest: another command's module (trivpn.cli.subcommands), key text's
handshake primitives (hashlib, hmac, pynacl's bindings: `trivpn.proto.wireguard.curve25519`
is apart from `crypto` for it), and a command that logs nothing loads no logging. The times
themselves: `tools/bench --mode startup`."""

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
    "psycopg",
    "starlette",
    "jinja2",
    "hypercorn",
    "trivpn.proto.wireguard.device",
    "trivpn.dataplane",
    "trivpn.net.link",
    "trivpn.control.status_socket",
    "trivpn.control.metrics",
    "trivpn.control.web.app",
    "trivpn.control.web.serve",
    "trivpn.registry.pg_store",
    "trivpn.daemon.server",
]
# each command group's module, loaded only when one of its commands runs
COMMAND_MODULES = [
    f"trivpn.cli.{group}"
    for group in ("keys", "serve", "status", "toyvpn", "peer", "registry", "web")
]
CONFIG_MODULES = ["cattrs", "attrs", "sqlite3", "segno", "trivpn.config", "trivpn.registry"]
# the handshake's and the data path's primitives, which no key or peer command uses
HANDSHAKE_MODULES = ["trivpn.proto.wireguard.crypto", "nacl.bindings", "hashlib", "hmac"]
# what a peer command does not need: it opens no socket but the status client's (peer list);
# shutil is argparse's for the terminal's width (trivpn.cli.helpformat finds it without), and
# signal's enums would be built for one constant (trivpn.cli.errors)
UNUSED_BY_PEER_COMMANDS = [
    *SERVER_MODULES,
    *HANDSHAKE_MODULES,
    "segno",
    "shutil",
    "signal",
    *(
        m
        for m in COMMAND_MODULES
        if m not in ("trivpn.cli.peer", "trivpn.cli.keys", "trivpn.cli.status")
    ),
]

# runs a command as `trivpn` does, then says which of the modules it loaded
# (json only once the command is done: whether the command loaded it is asked too)
PROBE = """
import sys
from trivpn.cli.main import main
code = main(sys.argv[2:])
sys.stdout.flush()
loaded = set(sys.modules)
import json
print(json.dumps([code, sorted(m for m in json.loads(sys.argv[1]) if m in loaded)]),
      file=sys.stderr)
"""

# RFC 7748, section 6.1: Alice's private key and her public key, in wg(8)'s text
RFC7748_ALICE = "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo="
RFC7748_ALICE_PUBLIC = "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo="


def probe(
    modules: list[str], *args: str, stdin: str = "", codes: tuple[int, ...] = (0,)
) -> tuple[list[str], str, str]:
    """Which of `modules` the command loaded, its stdout and its stderr; it must exit with
    one of `codes`."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(modules), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    code, found = json.loads(out.stderr.splitlines()[-1])
    assert code in codes, out.stderr
    return list(found), out.stdout, out.stderr


def loaded(modules: list[str], *args: str) -> list[str]:
    return probe(modules, *args)[0]


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
    modules = SERVER_MODULES + CONFIG_MODULES + HANDSHAKE_MODULES + COMMAND_MODULES
    modules += ["logging", "shutil", "signal"]
    assert loaded(modules, command) == ["trivpn.cli.keys"]  # the probe sees what it should see


def test_pubkey_loads_only_libsodium_and_gives_the_rfc_7748_key() -> None:
    modules = [*SERVER_MODULES, *CONFIG_MODULES, *HANDSHAKE_MODULES, "logging", "nacl._sodium"]
    modules += [m for m in COMMAND_MODULES if m != "trivpn.cli.keys"]
    found, out, _ = probe(modules, "pubkey", stdin=RFC7748_ALICE + "\n")
    assert found == ["nacl._sodium"]  # the one call into libsodium, without nacl.bindings
    assert out == RFC7748_ALICE_PUBLIC + "\n"


def test_peer_add_loads_no_server_or_handshake_module(conf: Path) -> None:
    modules = [*UNUSED_BY_PEER_COMMANDS, "socket", "logging"]
    found, _, err = probe(modules, "peer", "add", "alice", "-c", str(conf))
    # it logs (the server's key file is made on first use), so logging is set up for it
    assert found == ["logging"]
    assert " INFO trivpn: wireguard: generated a new private key in " in err


def test_peer_add_loads_segno_only_for_a_qr_code(conf: Path) -> None:
    modules = [*SERVER_MODULES, "segno"]
    found, out, _ = probe(modules, "peer", "add", "bob", "--qr", "-c", str(conf))
    assert found == ["segno"]
    assert "[Interface]" in out


def test_peer_list_loads_no_server_module_and_no_logging(conf: Path) -> None:
    # peer list also asks the running server (none here) through the control socket's client
    modules = [*UNUSED_BY_PEER_COMMANDS, "logging", "trivpn.registry.store"]
    found = loaded(modules, "peer", "list", "-c", str(conf))
    assert found == ["trivpn.registry.store"]  # the probe sees what it should see


def test_peer_list_without_a_server_loads_no_socket_and_no_json(conf: Path) -> None:
    # no control socket: the status client says so before loading socket, and only --json
    # loads json
    modules = ["socket", "json", "trivpn.control.status_client"]
    found, out, err = probe(modules, "peer", "list", "-c", str(conf))
    assert found == ["trivpn.control.status_client"]  # the probe sees what it should see
    assert out == "no peers (add one with `trivpn peer add NAME`)\n"
    assert "live status unavailable" not in err
    found, out, _ = probe(modules, "peer", "list", "--json", "-c", str(conf))
    assert found == ["json", "trivpn.control.status_client"]
    assert out == "[]\n"


def test_peer_commands_that_log_nothing_load_no_logging(conf: Path) -> None:
    c = ("-c", str(conf))
    loaded([], "peer", "add", "alice", *c)
    for command in (
        ["peer", "show", "alice"],
        ["peer", "set", "alice", "--expires", "30d"],
        ["peer", "disable", "alice"],
        ["peer", "enable", "alice"],
        ["peer", "remove", "alice"],
    ):
        assert loaded([*UNUSED_BY_PEER_COMMANDS, "logging"], *command, *c) == [], command


def test_web_token_commands_load_no_server_module_and_no_logging(conf: Path) -> None:
    modules = [*SERVER_MODULES, "segno", "logging", "trivpn.control.web.credentials"]
    found, out, _ = probe(modules, "web", "token", "add", "ci", "-c", str(conf))
    assert found == ["trivpn.control.web.credentials"]  # the probe sees what it should see
    assert len(out.strip()) >= 43
    assert loaded(modules, "web", "token", "list", "-c", str(conf)) == [
        "trivpn.control.web.credentials"
    ]


@pytest.mark.parametrize(
    "nat",
    ["[nat]\nmasquerade = false\n", '[nat]\negress = "eth9"\n'],
    ids=["no-masquerade", "named-egress"],
)
def test_check_loads_no_server_module(conf: Path, nat: str) -> None:
    conf.write_text(conf.read_text() + nat)
    modules = [*SERVER_MODULES, *HANDSHAKE_MODULES, "segno", "sqlite3", "trivpn.registry"]
    modules += [m for m in COMMAND_MODULES if m != "trivpn.cli.serve"]
    found, out, _ = probe(modules, "check", "-c", str(conf))
    assert found == []
    assert out == f"{conf}: OK\n"


def test_check_asks_the_kernel_for_an_auto_egress_and_loads_nothing_else(conf: Path) -> None:
    # exit 2 where this machine has no default route: the question was asked all the same
    found, _, _ = probe([*SERVER_MODULES, "segno"], "check", "-c", str(conf), codes=(0, 2))
    assert found == ["pyroute2", "trivpn.net.link"]
