"""Run the shipped config in a namespace lab and show a client's traffic crossing trivpn.

    client ns ──198.51.100.0/24── server ns: trivpn serve ──203.0.113.0/24── internet ns

Usage: tools/demo [--once]   (--once: show the traffic, then tear down without waiting)
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import netlab

DEMO_SECRET = "demo-secret-not-for-production"


def demo_config(shipped: Path, out: Path) -> Path:
    """The shipped config with ToyVPN switched on (the protocol the demo client speaks)."""
    text = shipped.read_text()
    head, sep, section = text.partition("\n[toyvpn]\n")
    if not sep:
        raise SystemExit(f"demo: {shipped} has no [toyvpn] section")
    section = re.sub(r"(?m)^enabled\s*=.*$", "enabled = true", section, count=1)
    section = re.sub(r"(?m)^secret\s*=.*$", f'secret = "{DEMO_SECRET}"', section, count=1)
    path = out / "trivpn.toml"
    path.write_text(head + sep + section)
    return path


def show(title: str, result: subprocess.CompletedProcess[str]) -> None:
    print(f"\n$ {title}")
    print((result.stdout + result.stderr).rstrip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--once", action="store_true", help="do not wait for Ctrl-C")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="trivpn-demo-"))
    config = demo_config(netlab.REPO / "conf" / "trivpn.toml", work)
    print(f"demo: config {config} (conf/trivpn.toml with [toyvpn] enabled)")
    with netlab.Lab("demo") as lab:
        client = lab.clients[0]
        print("demo: namespaces", ", ".join(ns.name for ns in lab.namespaces))
        server = netlab.Trivpn(lab.server, ["serve", "-c", str(config)], work / "server.log")
        conn = None
        try:
            server.wait_log("trivpn serving")
            conn = netlab.Trivpn(
                client,
                [
                    "toyvpn-connect",
                    f"{netlab.SERVER_WAN}:8000",
                    "--secret",
                    DEMO_SECRET,
                    "--tun",
                    "toyvpn0",
                ],
                work / "client.log",
            )
            conn.wait_log("connected to")
            print("\n--- server log ---\n" + server.log().rstrip())
            print("\n--- client log ---\n" + conn.log().rstrip())
            show(
                "ip -br addr show toyvpn0   (client ns)",
                client.run("ip", "-br", "addr", "show", "toyvpn0"),
            )
            show(
                "nft list table inet trivpn   (server ns)",
                lab.server.run("nft", "list", "table", "inet", "trivpn"),
            )
            show(
                f"ping -c 3 {netlab.INTERNET_HOST}   (client ns → internet through the tunnel)",
                client.run("ping", "-c", "3", "-i", "0.3", netlab.INTERNET_HOST, check=False),
            )
            sink = lab.internet.popen(
                [sys.executable, "-c", netlab.TCP_SINK, "5001"], stdout=subprocess.PIPE
            )
            assert sink.stdout is not None
            sink.stdout.readline()
            client.run(
                sys.executable, "-c", netlab.TCP_SEND, netlab.INTERNET_HOST, "5001", str(8 << 20)
            )
            peer = sink.stdout.readline().split()
            sink.kill()
            print(
                f"\n$ TCP: client sent 8 MiB to {netlab.INTERNET_HOST}:5001; the internet "
                f"host saw it from {peer[1]} (the server's egress: masqueraded)"
            )
            if not args.once:
                print("\ndemo: running; pinging every 2 s. Ctrl-C stops and tears down.")
                while True:
                    r = client.run("ping", "-c", "1", "-W", "1", netlab.INTERNET_HOST, check=False)
                    m = re.search(r"time=([\d.]+ ms)", r.stdout)
                    print("ping", netlab.INTERNET_HOST, m.group(1) if m else "lost", flush=True)
                    time.sleep(2)
        except KeyboardInterrupt:
            print()
        finally:
            if conn is not None:
                conn.stop()
            code = server.stop()
            tail = server.log().splitlines()[-4:]
            print("\n--- server shutdown ---\n" + "\n".join(tail))
            print(
                f"demo: trivpn exited with {code}; tables left in the server ns: "
                f"{lab.server.run('nft', 'list', 'tables').stdout.strip() or 'none'}"
            )
    print("demo: namespaces removed; nothing was changed outside them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
