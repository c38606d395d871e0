"""The control socket: the status document, the socket's safety, and its clients
(`trivpn status`, the live columns of `trivpn peer list`)."""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import trio
from support.status_doc import ALICE, CONFIG, PSK, SECRET, SERVER_KEY, fake_server

from trivpn.cli.main import main
from trivpn.control import status_client, status_socket
from trivpn.proto.wireguard import encode_key
from trivpn.registry.sessions import Session


def test_a_fleets_gateway_says_which_gateway_each_peers_live_session_is_on() -> None:
    server = fake_server()
    server.fleet = SimpleNamespace(node="gw1", latest={})
    live = 1_700_000_000.0  # alice's handshake here

    def node(stored: Session | None) -> str | None:
        server.fleet.latest = {} if stored is None else {ALICE: stored}
        doc = status_socket.status_document(server, "tvc0", now=15.5, wallclock=live + 63)
        assert doc["node"] == "gw1"
        (peer,) = doc["wireguard"]["peers"]
        # this gateway's own handshake, as `wg show` says, whichever node is named
        assert peer["latest_handshake"] == server.wireguard.device.peers[ALICE].last_handshake_time
        return cast(str | None, peer["node"])

    assert node(None) == "gw1"
    assert node(Session("gw2", ALICE, "192.0.2.9:1", live + 30)) == "gw2"  # moved since
    assert node(Session("gw2", ALICE, "192.0.2.9:1", live - 30)) == "gw1"
    assert node(Session("gw1", ALICE, "198.51.100.2:40000", live)) == "gw1"  # as stored
    server.wireguard.device.peers[ALICE].last_handshake_time = None
    assert node(None) is None  # no handshake anywhere
    assert node(Session("gw2", ALICE, None, live)) == "gw2"


def test_document_has_the_state_and_no_secret_keys() -> None:
    server = fake_server()
    doc = status_socket.status_document(server, "tvc0", now=15.5, wallclock=1_700_000_063.0)
    assert doc["version"] == status_socket.DOCUMENT_VERSION and doc["time"] == 1_700_000_063.0
    assert doc["interface"] == {"name": "tvc0", "address": ["10.8.0.1/24"], "mtu": 1420}
    assert doc["nat"] == {"masquerade": True, "egress": "inet0"}
    (peer,) = doc["wireguard"]["peers"]
    assert peer == {
        "name": "alice",
        "public_key": encode_key(ALICE),
        "endpoint": "198.51.100.2:40000",
        "latest_handshake": 1_700_000_000.0,
        "rx_bytes": 1000,
        "tx_bytes": 2000,
        "rx_packets": 10,
        "tx_packets": 20,
        "handshakes": 2,
        "allowed_ips": ["10.8.0.2/32"],
        "persistent_keepalive": 0,
        "state": "disabled",
        "enabled": False,
        "expires": None,
        "quota_bytes": None,
        "quota_period": None,
        "rate_down_bps": None,
        "rate_up_bps": None,
        "usage_bytes": 12000,  # no quota: the bytes since the last reset
        "lifetime_rx_bytes": 5000,
        "lifetime_tx_bytes": 7000,
        "node": None,  # not a fleet
    }
    assert doc["node"] is None
    (session,) = doc["toyvpn"]["sessions"]
    assert session["endpoint"] == "[2001:db8::7]:5555"
    assert session["address"] == "10.8.0.129"
    assert (session["rx_packets"], session["rx_bytes"]) == (1, 20)
    assert session["idle_seconds"] == 3.5
    assert doc["toyvpn"]["pool"] == {"network": "10.8.0.128/25", "size": 126, "in_use": 1}
    assert doc["counters"]["wireguard"] == {"bad_mac1": 3}
    assert doc["counters"]["server"] == {"tun_no_route": 2}
    text = json.dumps(doc)
    for secret in (SERVER_KEY, PSK):
        assert encode_key(secret) not in text and secret.hex() not in text
    assert SECRET.decode() not in text


async def serve(tmp_path: Path, nursery: trio.Nursery, server: Any) -> Path:
    await nursery.start(
        lambda task_status: status_socket.serve_control(
            server, "tvc0", directory=tmp_path / "run", task_status=task_status
        )
    )
    return status_socket.socket_path("tvc0", tmp_path / "run")


async def test_socket_answers_status_and_is_private(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        path = await serve(tmp_path, nursery, fake_server())
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
        doc = await trio.to_thread.run_sync(status_client.query_status, path)
        assert doc["wireguard"]["peers"][0]["name"] == "alice"
        nursery.cancel_scope.cancel()
    assert not path.exists()  # removed on the way out


async def test_unknown_request_gets_an_error(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        path = await serve(tmp_path, nursery, fake_server())

        def ask() -> dict[str, Any]:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(path))
                s.sendall(b"get=1\n")
                return dict(json.loads(s.makefile().read()))

        answer = await trio.to_thread.run_sync(ask)
        assert "unknown request" in answer["error"]
        nursery.cancel_scope.cancel()


async def test_stale_socket_is_replaced_and_a_live_one_left_alone(tmp_path: Path) -> None:
    path = status_socket.socket_path("tvc0", tmp_path / "run")
    path.parent.mkdir(mode=0o700)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays; nobody listens
    async with trio.open_nursery() as nursery:
        await serve(tmp_path, nursery, fake_server())
        assert (await trio.to_thread.run_sync(status_client.query_status, path))["version"] == 1
        # a second server on the same interface name must not steal the live socket
        await nursery.start(
            lambda task_status: status_socket.serve_control(
                fake_server(), "tvc0", directory=tmp_path / "run", task_status=task_status
            )
        )
        assert (await trio.to_thread.run_sync(status_client.query_status, path))["version"] == 1
        nursery.cancel_scope.cancel()


async def test_a_directory_open_to_others_is_refused(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir(mode=0o755)
    os.chmod(tmp_path / "run", 0o755)
    await status_socket.serve_control(fake_server(), "tvc0", directory=tmp_path / "run")
    assert not status_socket.socket_path("tvc0", tmp_path / "run").exists()


def test_query_without_a_server(tmp_path: Path) -> None:
    with pytest.raises(status_client.NotRunning, match="does not exist"):
        status_client.query_status(tmp_path / "nope.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(tmp_path / "stale.sock"))
    stale.close()
    with pytest.raises(status_client.ControlUnavailable, match="stale"):
        status_client.query_status(tmp_path / "stale.sock")


# --- the command line -------------------------------------------------------------------------


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    path = tmp_path / "trivpn.toml"
    path.write_text(
        CONFIG.format(alice=encode_key(ALICE), server=encode_key(SERVER_KEY))
        + '[state]\ndir = "state"\n'
    )
    return path


async def test_trivpn_status_and_peer_list(
    tmp_path: Path, conf: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(status_client, "SOCKET_DIR", tmp_path / "run")
    async with trio.open_nursery() as nursery:
        await serve(tmp_path, nursery, fake_server())
        code = await trio.to_thread.run_sync(main, ["status", "-c", str(conf)])
        out = capsys.readouterr().out
        assert code == 0
        assert "interface: tvc0" in out and "alice" in out and "198.51.100.2:40000" in out
        assert "10.8.0.129" in out and "[2001:db8::7]:5555" in out

        assert await trio.to_thread.run_sync(main, ["status", "-c", str(conf), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["toyvpn"]["pool"]["in_use"] == 1

        assert await trio.to_thread.run_sync(main, ["peer", "list", "-c", str(conf)]) == 0
        alice = next(line for line in capsys.readouterr().out.splitlines() if "alice" in line)
        assert "198.51.100.2:40000" in alice and "1000 B" in alice and "ago" in alice

        assert await trio.to_thread.run_sync(main, ["peer", "list", "--json", "-c", str(conf)]) == 0
        (row,) = json.loads(capsys.readouterr().out)
        assert (row["received"], row["sent"]) == (1000, 2000)

        assert await trio.to_thread.run_sync(main, ["peer", "show", "alice", "-c", str(conf)]) == 0
        assert "transfer: 1000 B received, 1.95 KiB sent" in capsys.readouterr().out
        nursery.cancel_scope.cancel()


def test_trivpn_status_without_a_server_is_one_line(
    tmp_path: Path, conf: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(status_client, "SOCKET_DIR", tmp_path / "run")
    assert main(["status", "-c", str(conf)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("trivpn: status of tvc0: no server is running") and "\n" not in err
    # peer list still works, with "-" for what only the server knows
    assert main(["peer", "list", "-c", str(conf)]) == 0
    captured = capsys.readouterr()
    alice = next(line for line in captured.out.splitlines() if "alice" in line)
    assert alice.rstrip().endswith("-") and captured.err == ""
