"""Run the shipped config in a namespace lab and show clients' traffic crossing trivpn.

    wireguard-go client ns ──198.51.100.0/24──┐
                                               server ns: trivpn serve ─203.0.113.0/24─ internet ns
    ToyVPN client ns ───────192.0.2.4/30───────┘

The web admin listens on the server ns's own 127.0.0.1; a forwarder on the host's loopback
reaches it, so a browser on this machine can open it (with the one-time password printed)
while the demo runs.

Usage: tools/demo [--once]   (--once: show the traffic, then tear down without waiting)
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support import netlab, wglab
from support.forward import Forwarder

DEMO_SECRET = "demo-secret-not-for-production"
WG_CLIENT_ADDRESS = "10.8.0.2"
WEB_PORT = 51821  # in the server ns; on the host's loopback too when it is free


def demo_config(shipped: Path, out: Path, key_file: Path, client_public_key: str) -> Path:
    """The shipped config with the demo's changes, each printed:

    - the server's key file and the peer registry in the demo's temp dir (nothing in /var/lib);
    - an interface name of its own;
    - the wireguard-go client as a peer;
    - ToyVPN switched on, with the demo's secret (the protocol the second client speaks);
    - the web admin on, on the server ns's 127.0.0.1.
    """
    text = shipped.read_text()
    head, sep, toy = text.partition("\n[toyvpn]\n")
    if not sep:
        raise SystemExit(f"demo: {shipped} has no [toyvpn] section")
    toy = re.sub(r"(?m)^enabled\s*=.*$", "enabled = true", toy, count=1)
    toy = re.sub(r"(?m)^secret\s*=.*$", f'secret = "{DEMO_SECRET}"', toy, count=1)
    text = head + sep + toy
    before, web_sep, web = text.partition("\n[web]\n")
    if not web_sep:
        raise SystemExit(f"demo: {shipped} has no [web] section")
    web = re.sub(r"(?m)^listen\s*=.*$", f'listen = "127.0.0.1:{WEB_PORT}"', web, count=1)
    text = before + web_sep + web
    text = re.sub(
        r"(?m)^private_key_file\s*=.*$", f'private_key_file = "{key_file}"', text, count=1
    )
    # A registry of its own: the host's /var/lib/trivpn is never read or written.
    text = re.sub(r'(?m)^dir\s*=\s*"/var/lib/trivpn"', f'dir = "{out / "state"}"', text, count=1)
    # A name of its own: the TUN's UAPI socket (/var/run/wireguard/NAME.sock) is shared with
    # the host, where a real trivpn0 may be running.
    text = re.sub(r'(?m)^name\s*=\s*"trivpn0"', f'name = "tvdemo{os.getpid() % 10000}"', text)
    text += (
        f'\n[[wireguard.peers]]\nname = "demo-client"\npublic_key = "{client_public_key}"\n'
        f'allowed_ips = ["{WG_CLIENT_ADDRESS}/32"]\n'
    )
    path = out / "trivpn.toml"
    path.write_text(text)
    return path


def web_admin(server_ns: netlab.Netns, config: Path) -> tuple[Forwarder, str]:
    """A random one-time password for the admin (`trivpn web passwd`, in the demo's state
    dir) and a forwarder from the host's loopback to it; WEB_PORT when free there."""
    password = secrets.token_urlsafe(12)
    server_ns.run(
        sys.executable, "-m", "trivpn", "web", "passwd", "-c", str(config), input=password + "\n"
    )
    try:
        forwarder = Forwarder(server_ns.name, "127.0.0.1", WEB_PORT, port=WEB_PORT)
    except OSError:  # taken on the host (a real trivpn's admin?): any free port
        forwarder = Forwarder(server_ns.name, "127.0.0.1", WEB_PORT)
    return forwarder.start(), password


def login_page_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/login", timeout=5) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def show(title: str, result: subprocess.CompletedProcess[str]) -> None:
    print(f"\n$ {title}")
    print((result.stdout + result.stderr).rstrip())


def traffic(lab: netlab.Lab, client: netlab.Netns, label: str, port: int) -> None:
    """Pings and an 8 MiB TCP transfer from ``client`` to the internet host."""
    show(
        f"ping -c 3 {netlab.INTERNET_HOST}   ({label} → internet through the tunnel)",
        client.run("ping", "-c", "3", "-i", "0.3", netlab.INTERNET_HOST, check=False),
    )
    source = netlab.tcp_transfer(lab, client, 8 << 20, port)
    print(
        f"\n$ TCP: {label} sent 8 MiB to {netlab.INTERNET_HOST}:{port}; the internet host saw "
        f"it from {source} (the server's egress address: masqueraded)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--once", action="store_true", help="do not wait for Ctrl-C")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="trivpn-demo-"))
    with netlab.Lab("demo", clients=2) as lab:
        wg_ns, toy_ns = lab.clients
        print("demo: namespaces", ", ".join(ns.name for ns in lab.namespaces))
        server_key = work / "server.key"
        fd = os.open(server_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, (wglab.wg_genkey() + "\n").encode())
        os.close(fd)
        server_public = wglab.wg_pubkey(server_key.read_text().strip())
        wg_client = wglab.WireGuardGo(wg_ns, prefix="wgdemo")
        config = demo_config(
            netlab.REPO / "conf" / "trivpn.toml", work, server_key, wg_client.public_key
        )
        print(f"demo: config {config}: conf/trivpn.toml with a temporary server key, the")
        print("      wireguard-go client as a peer, [toyvpn] enabled for the ToyVPN client, and")
        print(f"      [web] listen = 127.0.0.1:{WEB_PORT} (the admin, in the server ns)")
        forwarder, password = web_admin(lab.server, config)
        server = netlab.Trivpn(lab.server, ["serve", "-c", str(config)], work / "server.log")
        toy = None
        try:
            server.wait_log("trivpn serving")
            if not login_page_answers(forwarder.url):
                raise SystemExit(f"demo: the web admin does not answer at {forwarder.url}")
            wg_client.add_peer(
                server_public,
                endpoint=f"{netlab.SERVER_WAN}:51820",
                allowed_ips=("0.0.0.0/0",),
            )
            wg_client.up(f"{WG_CLIENT_ADDRESS}/32", routes=("default",))
            toy = netlab.Trivpn(
                toy_ns,
                [
                    "toyvpn-connect",
                    f"{toy_ns.server_ip}:8000",  # type: ignore[attr-defined]
                    "--secret",
                    DEMO_SECRET,
                    "--tun",
                    "toyvpn0",
                ],
                work / "client.log",
            )
            toy.wait_log("connected to")
            show(
                f"wg show {wg_client.ifname}   (wireguard-go client ns)",
                wg_ns.run("wg", "show", wg_client.ifname),
            )
            traffic(lab, wg_ns, "wireguard-go client", 5001)
            show(
                "ip -br addr show toyvpn0   (ToyVPN client ns)",
                toy_ns.run("ip", "-br", "addr", "show", "toyvpn0"),
            )
            traffic(lab, toy_ns, "ToyVPN client", 5002)
            show(
                "nft list table inet trivpn   (server ns)",
                lab.server.run("nft", "list", "table", "inet", "trivpn"),
            )
            print("\n--- server log ---\n" + server.log().rstrip())
            print(
                f"\ndemo: web admin at {forwarder.url}/  password {password}\n"
                "      (one-time: made for this demo's own state dir; the page is served from"
                " the\n      server ns through a forwarder on this host's loopback)"
            )
            if not args.once:
                print(
                    f"\ndemo: running; open {forwarder.url}/ in a browser on this machine. The"
                    " wireguard-go\n      client pings every 2 s. Ctrl-C stops."
                )
                while True:
                    r = wg_ns.run("ping", "-c", "1", "-W", "1", netlab.INTERNET_HOST, check=False)
                    m = re.search(r"time=([\d.]+ ms)", r.stdout)
                    print("ping", netlab.INTERNET_HOST, m.group(1) if m else "lost", flush=True)
                    time.sleep(2)
        except KeyboardInterrupt:
            print()
        finally:
            forwarder.close()
            if toy is not None:
                toy.stop()
            wg_client.stop()
            code = server.stop()
            tail = server.log().splitlines()[-4:]
            print("\n--- server shutdown ---\n" + "\n".join(tail))
            tables = lab.server.run("nft", "list", "tables").stdout.strip()
            print(f"demo: trivpn exited with {code}; tables left in the server ns: "
                  f"{tables or 'none'}")  # fmt: skip
    print("demo: namespaces removed; nothing was changed outside them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
