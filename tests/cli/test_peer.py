"""`trivpn peer add | list | show | remove`: the printed client config and the registry agree."""

from __future__ import annotations

import configparser
import ipaddress
import json
import logging
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from trivpn.cli.main import main
from trivpn.proto.wireguard import keys
from trivpn.registry import store

STATIC_PUB = keys.pubkey(keys.genkey(lambda n: b"\x07" * n))


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    path = tmp_path / "trivpn.toml"
    path.write_text(
        f"""
        [interface]
        address = ["10.8.0.1/24", "fd00:8::1/64"]
        [wireguard]
        enabled = true
        private_key_file = "server.key"
        public_endpoint = "vpn.example.com:51820"
        client_dns = ["10.8.0.1", "fd00:8::1"]
        client_allowed_ips = ["0.0.0.0/0", "::/0"]
        [[wireguard.peers]]
        name = "site"
        public_key = "{STATIC_PUB}"
        allowed_ips = ["10.8.0.2/32"]
        [state]
        dir = "state"
        """.replace("\n        ", "\n")
    )
    return path


def peer(conf: Path, *args: str) -> int:
    return main(["peer", *args, "-c", str(conf)])


def parse_wg_quick(text: str) -> configparser.ConfigParser:
    ini = configparser.ConfigParser(interpolation=None, strict=True)
    ini.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    ini.read_string(text)
    return ini


def in_registry(conf: Path, name: str) -> store.RegistryPeer:
    with store.Registry.open(conf.parent / "state" / "peers.db", create=False) as r:
        found = r.find(name)
    assert found is not None
    return found


def wg_pubkey(private_text: str) -> str:
    done = subprocess.run(
        ["wg", "pubkey"], input=private_text, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


# --- peer add --------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("wg") is None, reason="wg (wireguard-tools) missing")
def test_printed_config_is_wg_quick_and_agrees_with_the_registry(
    conf: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    assert peer(conf, "add", "alice") == 0
    out, err = capsys.readouterr()
    ini = parse_wg_quick(out)
    assert ini.sections() == ["Interface", "Peer"]
    iface, server = ini["Interface"], ini["Peer"]
    stored = in_registry(conf, "alice")

    private = iface["PrivateKey"]
    assert keys.pubkey(private) == wg_pubkey(private) == keys.encode_key(stored.public_key)
    assert iface["Address"] == "10.8.0.3/32, fd00:8::2/128"  # .2 is the static peer's
    assert stored.addresses == (ipaddress.ip_address("10.8.0.3"), ipaddress.ip_address("fd00:8::2"))
    assert iface["DNS"] == "10.8.0.1, fd00:8::1"

    server_private = (conf.parent / "server.key").read_text()  # made on first use, as by serve
    assert server["PublicKey"] == wg_pubkey(server_private)
    assert stored.preshared_key is not None
    assert server["PresharedKey"] == keys.encode_key(stored.preshared_key)
    assert server["Endpoint"] == "vpn.example.com:51820"
    assert server["AllowedIPs"] == "0.0.0.0/0, ::/0"
    assert server["PersistentKeepalive"] == "25"

    # the private key went to stdout only: not to the log, stderr or the state directory
    assert private not in caplog.text and private not in err
    raw = keys.parse_key(private)
    for file in (conf.parent / "state").iterdir():
        data = file.read_bytes()
        assert private.encode() not in data and raw not in data, file
    assert "not stored" in err


@pytest.mark.root  # wg-quick re-runs itself through sudo unless root
@pytest.mark.skipif(shutil.which("wg-quick") is None, reason="wg-quick (wireguard-tools) missing")
def test_wg_quick_itself_parses_the_config(
    conf: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config_file = tmp_path / "wgt0.conf"  # wg-quick names the interface after the file
    assert peer(conf, "add", "alice", "--output", str(config_file)) == 0
    done = subprocess.run(
        ["wg-quick", "strip", str(config_file)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    stripped = parse_wg_quick(done.stdout)
    written = parse_wg_quick(config_file.read_text())
    # wg-quick took Address and DNS for itself and passes the rest on to wg unchanged
    assert dict(stripped["Interface"]) == {"PrivateKey": written["Interface"]["PrivateKey"]}
    assert dict(stripped["Peer"]) == dict(written["Peer"])


def test_every_add_makes_new_keys(conf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert peer(conf, "add", "alice") == 0
    assert peer(conf, "add", "bob") == 0
    texts = capsys.readouterr().out.split("# trivpn peer ")[1:]
    alice, bob = (parse_wg_quick(t.partition("\n")[2]) for t in texts)
    for key in ("PrivateKey", "Address"):
        assert alice["Interface"][key] != bob["Interface"][key]
    assert alice["Peer"]["PresharedKey"] != bob["Peer"]["PresharedKey"]
    assert alice["Peer"]["PublicKey"] == bob["Peer"]["PublicKey"]  # one server


def test_qr_is_printed_after_the_config(conf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert peer(conf, "add", "alice", "--qr") == 0
    out = capsys.readouterr().out
    config, _, qr = out.partition("PersistentKeepalive = 25\n")
    assert "PrivateKey = " in config
    qr_lines = qr.strip("\n").splitlines()
    assert len(qr_lines) > 20 and all(len(line) == len(qr_lines[0]) for line in qr_lines)
    assert set("".join(qr_lines)) <= set(" █▀▄")  # half blocks: two modules per line


def test_terminal_qr_is_white_on_black_on_a_terminal() -> None:
    from trivpn.cli.qr import terminal_qr

    plain = terminal_qr("hello", colored=False).splitlines()
    colored = terminal_qr("hello", colored=True).splitlines()
    assert colored == [f"\x1b[97;40m{line}\x1b[0m" for line in plain]
    assert plain[0] == "█" * len(plain[0])  # the quiet zone is light: drawn as blocks


def test_png_output_is_a_private_png(conf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = conf.parent / "alice.png"
    assert peer(conf, "add", "alice", "--output", str(png)) == 0
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 200
    assert stat.S_IMODE(png.stat().st_mode) == 0o600
    out, err = capsys.readouterr()
    assert out == ""  # the key went only into the image
    assert "alice.png" in err


def test_text_output_file_is_private_and_never_overwritten(
    conf: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = conf.parent / "alice.conf"
    assert peer(conf, "add", "alice", "--output", str(target)) == 0
    ini = parse_wg_quick(target.read_text())
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert keys.pubkey(ini["Interface"]["PrivateKey"]) == keys.encode_key(
        in_registry(conf, "alice").public_key
    )
    assert "PrivateKey" not in capsys.readouterr().out
    before = target.read_bytes()
    assert peer(conf, "add", "bob", "--output", str(target)) == 2
    assert "exists" in capsys.readouterr().err
    assert target.read_bytes() == before
    with store.Registry.open(conf.parent / "state" / "peers.db") as r:
        assert r.find("bob") is None  # refused before anything was registered


def test_a_refused_add_leaves_no_output_file(
    conf: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert peer(conf, "add", "alice") == 0
    capsys.readouterr()
    target = conf.parent / "again.conf"
    assert peer(conf, "add", "alice", "--output", str(target)) == 2
    assert capsys.readouterr().err.strip() == "a peer named 'alice' exists already"
    assert not target.exists()


def test_public_key_of_the_users_own(conf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    own = keys.pubkey(keys.genkey(os.urandom))
    assert peer(conf, "add", "carol", "--public-key", own, "--address", "10.8.0.50") == 0
    out = capsys.readouterr().out
    ini = parse_wg_quick(out)
    assert "PrivateKey" not in ini["Interface"]  # left as a comment for the user
    assert "# PrivateKey" in out and own in out
    assert ini["Interface"]["Address"] == "10.8.0.50/32, fd00:8::2/128"
    assert keys.encode_key(in_registry(conf, "carol").public_key) == own
    # a QR code without the private key could not be imported: refused
    assert (
        peer(conf, "add", "dave", "--public-key", keys.pubkey(keys.genkey(os.urandom)), "--qr") == 2
    )
    assert "--public-key" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["add", "no spaces"], "name: 'no spaces' — expected 1 to 64 characters"),
        (["add", "site"], "is in the config file"),
        (["add", "x", "--address", "10.8.0.2"], "reserved"),
        (["add", "x", "--address", "10.9.0.2"], "outside the interface subnets"),
        (["add", "x", "--address", "nope"], "--address: 'nope' — expected an IP address"),
        (["add", "x", "--address", "10.8.0.0/24"], "expected one host address"),
        (["add", "x", "--public-key", "short"], "--public-key: a key must be 44"),
        (["add", "x", "--route", "lan"], "--route: 'lan' — expected a network with its prefix"),
        (["add", "x", "--route", "10.8.0.128/26"], "overlaps the ToyVPN pool"),
        (["add", "x", "--route", "10.9.0.7/32"], "is a host address, not a route"),
        (["add", "x", "--public-key", STATIC_PUB], "in the config file"),
        (["show", "nobody"], "no peer named 'nobody'"),
        (["remove", "site"], "is a peer of the config file"),
        (["remove", "nobody"], "no peer named 'nobody' in the registry"),
    ],
)
def test_mistakes_are_one_line_with_exit_code_2(
    conf: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert peer(conf, *args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err


def test_add_needs_the_public_endpoint(conf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf.write_text(conf.read_text().replace('public_endpoint = "vpn.example.com:51820"\n', ""))
    assert peer(conf, "add", "alice") == 2
    assert capsys.readouterr().err.startswith("wireguard.public_endpoint: (not set) — required")
    assert not (conf.parent / "state").exists()


def test_add_needs_a_server_key(conf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # a server with WireGuard off needs no key, so the config is valid without one
    text = conf.read_text().replace('private_key_file = "server.key"', 'private_key_file = ""')
    conf.write_text(text.replace("enabled = true", "enabled = false"))
    assert peer(conf, "add", "alice") == 2
    err = capsys.readouterr().err
    assert err.endswith("\nwireguard.private_key: (not set) — required by `peer add`\n")
    assert not (conf.parent / "state").exists()


# --- list, show, remove ----------------------------------------------------------------------


def test_list_without_a_registry_creates_nothing(
    conf: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf.write_text(conf.read_text().split("[[wireguard.peers]]")[0] + '[state]\ndir = "state"\n')
    assert peer(conf, "list") == 0
    assert capsys.readouterr().out.startswith("no peers")
    assert peer(conf, "list", "--json") == 0
    assert json.loads(capsys.readouterr().out) == []
    assert not (conf.parent / "state").exists()


def test_list_table_and_json(conf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert peer(conf, "add", "alice") == 0
    alice_key = keys.encode_key(in_registry(conf, "alice").public_key)
    capsys.readouterr()
    assert peer(conf, "list") == 0
    header, site, alice = capsys.readouterr().out.splitlines()
    titles = ["NAME", "STATE", "USAGE", "EXPIRES", "RATE", "ADDRESS", "PUBLIC KEY", "ENDPOINT"]
    titles += ["LATEST HANDSHAKE", "RECEIVED", "SENT"]
    assert re.split(r" {2,}", header) == titles  # columns: two spaces or more apart
    live = ["-", "-", "-", "-"]
    policy = ["active", "0", "B", "never", "-"]  # no usage yet, no expiry, no rate limit
    assert site.split() == ["site", *policy, "10.8.0.2/32", STATIC_PUB, *live]
    assert alice.split() == ["alice", *policy, "10.8.0.3,", "fd00:8::2", alice_key, *live]
    assert peer(conf, "list", "--json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["source"]) for r in rows] == [("site", "config"), ("alice", "registry")]
    assert rows[1]["addresses"] == ["10.8.0.3", "fd00:8::2"]
    assert rows[1]["public_key"] == alice_key
    assert (rows[1]["endpoint"], rows[1]["latest_handshake"], rows[1]["sent"]) == (None,) * 3
    assert "preshared_key" not in rows[1]


def test_a_site_gateway_gets_its_routes(conf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert peer(conf, "add", "office", "--route", "192.168.50.0/24,fd50::/64") == 0
    stored = in_registry(conf, "office")
    assert [str(n) for n in stored.allowed_ips] == [
        "10.8.0.3/32",
        "fd00:8::2/128",
        "192.168.50.0/24",
        "fd50::/64",
    ]
    assert "(10.8.0.3, fd00:8::2, 192.168.50.0/24, fd50::/64)" in capsys.readouterr().err
    # one owner per network; a network may nest in another peer's
    assert peer(conf, "add", "other", "--route", "192.168.50.0/24") == 2
    assert "192.168.50.0/24 is taken by peer 'office'" in capsys.readouterr().err
    assert peer(conf, "add", "branch", "--route", "192.168.50.128/25") == 0
    assert peer(conf, "show", "office") == 0
    shown = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines()[-8:])
    assert shown["addresses"] == "10.8.0.3, fd00:8::2, 192.168.50.0/24, fd50::/64"


def test_show_and_remove(conf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert peer(conf, "add", "alice") == 0
    capsys.readouterr()
    assert peer(conf, "show", "alice") == 0
    shown = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines())
    assert shown["peer"] == "alice" and shown["source"] == "registry"
    assert shown["addresses"] == "10.8.0.3, fd00:8::2"
    assert shown["latest handshake"] == "-"
    assert peer(conf, "remove", "alice") == 0
    assert "10.8.0.3, fd00:8::2 are free again" in capsys.readouterr().err
    assert peer(conf, "show", "alice") == 2
    assert peer(conf, "add", "bob") == 0  # gets alice's addresses back
    assert "Address = 10.8.0.3/32, fd00:8::2/128" in capsys.readouterr().out


def test_the_peer_command_is_in_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["peer", "add", "--help"])
    out = capsys.readouterr().out
    for option in ("--address", "--public-key", "--qr", "--output", "--config"):
        assert option in out
