"""`wg set` listen-port, private-key and fwmark on a running `trivpn serve`, with a wireguard-go
client pinging the internet host through it the whole time.

client ns (wireguard-go 10.8.0.2) ── server ns (trivpn serve, NAT) ── internet ns.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import netlab, wglab

pytestmark = [pytest.mark.root, pytest.mark.wireguard_go, pytest.mark.lab("tvi", clients=1)]

NEW_PORT = wglab.WG_PORT + 1
START_MARK = 0x99


# Binds a UDP port, prints it, holds it until stdin closes.
_HOLD_PORT = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "s.bind(('0.0.0.0', 0))\n"
    "print(s.getsockname()[1], flush=True)\n"
    "sys.stdin.read()\n"
)


@contextlib.contextmanager
def udp_port_held(ns: netlab.Netns) -> Iterator[int]:
    """A UDP port that another process in ``ns`` has bound, while the block runs."""
    proc = ns.popen(
        [sys.executable, "-c", _HOLD_PORT], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        yield int(proc.stdout.readline())
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def udp_sockets(server: wglab.LabServer) -> str:
    """`ss -uapne` in the server ns: UDP sockets with their process, marks and options."""
    done = server.ns.run("ss", "-uapne", check=True)
    return str(done.stdout)


def test_listen_port_private_key_and_fwmark_change_live(
    lab: netlab.Lab,
    server: wglab.LabServer,
    wg_client: Callable[..., wglab.WireGuardGo],
    tmp_path: Path,
) -> None:
    (ns,) = lab.clients
    alice = wg_client(ns, "10.8.0.2")
    server.write_config(
        wglab.peer_table("alice", alice.public_key, "10.8.0.2/32"),
        wireguard={"fwmark": START_MARK},  # from the config file at start-up
    )
    proc = server.start(server.uapi_ready)
    wglab.wait_online(ns)
    server_ip = ns.server_ip  # type: ignore[attr-defined]
    assert server.wg("show", server.ifname, "fwmark").strip() == hex(START_MARK)

    # listen-port: the socket moves, the session stays; the client is pointed at the new port.
    server.wg("set", server.ifname, "listen-port", str(NEW_PORT))
    assert server.dump().listen_port == NEW_PORT
    sockets = udp_sockets(server)
    assert f":{NEW_PORT} " in sockets and f":{wglab.WG_PORT} " not in sockets, sockets
    assert f"fwmark:{hex(START_MARK)}" in sockets  # the mark moved with the socket
    proc.wait_log(f"listening on port {NEW_PORT} instead of {wglab.WG_PORT} until a restart")
    handshake = server.dump().peers[alice.public_key].latest_handshake
    alice.set("peer", server.keys.public, "endpoint", f"{server_ip}:{NEW_PORT}")
    wglab.wait_online(ns)
    assert server.dump().peers[alice.public_key].latest_handshake == handshake  # same session

    # private-key: the client that still uses the old server key is cut off ...
    new = wglab.ServerKeys.generate()
    key_file = tmp_path / "new.key"
    key_file.touch(mode=0o600)
    key_file.write_text(new.private + "\n")
    server.wg("set", server.ifname, "private-key", str(key_file))
    assert server.dump().public_key == new.public
    assert server.wg("show", server.ifname, "public-key").strip() == new.public
    proc.wait_log(f"private key changed, new public key {new.public}")
    assert not wglab.reaches_internet(ns, count=3)
    # ... until it learns the new one.
    alice.set("peer", server.keys.public, "remove")
    alice.add_peer(new.public, allowed_ips=("0.0.0.0/0",), endpoint=f"{server_ip}:{NEW_PORT}")
    wglab.wait_online(ns)

    # fwmark: a new one on the socket, shown by wg, and cleared again.
    server.wg("set", server.ifname, "fwmark", "0x1234")
    assert server.wg("show", server.ifname, "fwmark").strip() == "0x1234"
    assert "fwmark:0x1234" in udp_sockets(server)
    assert wglab.reaches_internet(ns)
    server.wg("set", server.ifname, "fwmark", "off")
    assert server.wg("show", server.ifname, "fwmark").strip() == "off"
    assert "fwmark:" not in udp_sockets(server)

    # A port in use is refused, and nothing changes.
    with udp_port_held(server.ns) as taken:
        refused = server.wg("set", server.ifname, "listen-port", str(taken), check=False)
        assert "Address already in use" in refused
    assert server.dump().listen_port == NEW_PORT

    assert proc.stop() == 0, proc.log()
    log = proc.log()
    for secret in (server.keys.private, new.private):
        assert secret not in log
    assert "Traceback" not in log
    assert os.path.exists(key_file)  # wg read it; nothing in trivpn wrote or removed it
