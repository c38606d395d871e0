"""Known-answer test against a real implementation: wireguard-go in a test namespace.

Both roles and data both ways, over loopback inside a namespace this test creates:
wireguard-go initiates (ping through it to our device, which answers the echo requests),
then a second device of ours initiates (a UDP datagram to a listener behind wireguard-go).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import netlab

from trivpn.proto.wireguard import crypto, keys

DRIVER = Path(__file__).with_name("wg_driver.py")
TUN_NET = "10.77.0"

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(shutil.which("wireguard-go") is None, reason="wireguard-go not installed"),
]


def _listening(ns: netlab.Netns, port: int) -> bool:
    return f":{port} " in ns.run("ss", "-Huln").stdout


def test_handshakes_and_data_both_ways_with_wireguard_go(tmp_path: Path) -> None:
    ns = netlab.Netns(netlab.unique_name("wgi"))
    ifname = f"wgt{os.getpid() % 100000}"
    procs: list[subprocess.Popen[str]] = []
    try:
        procs.append(ns.popen(["wireguard-go", "-f", ifname], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL))  # fmt: skip
        netlab.wait_for(
            lambda: ns.run("wg", "show", ifname, check=False).returncode == 0,
            what="wireguard-go's interface",
        )
        go_private = keys.parse_key(keys.genkey(os.urandom))
        ours_1 = keys.parse_key(keys.genkey(os.urandom))
        ours_2 = keys.parse_key(keys.genkey(os.urandom))
        key_file = tmp_path / "go.key"
        key_file.write_text(keys.encode_key(go_private) + "\n")
        key_file.chmod(0o600)
        ns.run(
            "wg", "set", ifname, "listen-port", "51820", "private-key", str(key_file),
            "peer", keys.encode_key(crypto.public_key(ours_1)),
            "allowed-ips", f"{TUN_NET}.2/32", "endpoint", "127.0.0.1:51821",
            "peer", keys.encode_key(crypto.public_key(ours_2)),
            "allowed-ips", f"{TUN_NET}.3/32", "endpoint", "127.0.0.1:51822",
        )  # fmt: skip
        ns.run("ip", "addr", "add", f"{TUN_NET}.1/24", "dev", ifname)
        ns.run("ip", "link", "set", ifname, "up")
        go_public = crypto.public_key(go_private).hex()

        def driver(private: bytes, port: int, ip: str, *extra: str) -> subprocess.Popen[str]:
            argv = [sys.executable, str(DRIVER), private.hex(), go_public, str(port), "51820"]
            p = ns.popen([*argv, ip, f"{TUN_NET}.1", *extra], stdout=subprocess.PIPE)
            procs.append(p)
            netlab.wait_for(lambda: _listening(ns, port), what=f"driver on {port}")
            return p

        # 1. wireguard-go is the initiator; our device answers and echoes.
        first = driver(ours_1, 51821, f"{TUN_NET}.2")
        ping = ns.run("ping", "-c", "3", "-i", "0.2", "-W", "3", f"{TUN_NET}.2", check=False)
        assert ping.returncode == 0, ping.stdout + ping.stderr

        # 2. our device is the initiator: its first packet waits for the handshake.
        listener = ns.popen(
            [sys.executable, "-c",
             "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
             f"s.bind(('{TUN_NET}.1', 9999)); s.settimeout(20); "
             "print(s.recvfrom(100)[0].decode(), flush=True)"],
            stdout=subprocess.PIPE,
        )  # fmt: skip
        procs.append(listener)
        netlab.wait_for(lambda: _listening(ns, 9999), what="the UDP listener")
        second = driver(ours_2, 51822, f"{TUN_NET}.3", "--initiate")
        heard, _ = listener.communicate(timeout=25)
        assert heard.strip() == "hello from trivpn"
        ping = ns.run("ping", "-c", "2", "-i", "0.2", "-W", "3", f"{TUN_NET}.3", check=False)
        assert ping.returncode == 0, ping.stdout + ping.stderr

        handshakes = ns.run("wg", "show", ifname, "latest-handshakes").stdout.split()
        assert len(handshakes) == 4 and all(int(t) > 0 for t in handshakes[1::2])

        for p in (first, second):
            p.terminate()
        logs = [p.communicate(timeout=10)[0] for p in (first, second)]
        for log in logs:
            assert "HandshakeCompleted" in log
            assert "packet 84" in log  # an echo request (20 + 64 bytes) came through
            assert "counters" not in log, log  # nothing of wireguard-go's was dropped
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()
        ns.delete()
        Path(f"/var/run/wireguard/{ifname}.sock").unlink(missing_ok=True)
