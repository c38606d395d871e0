"""`tools/bench --mode handshakes`: the responder's handshakes over the wire, and cookies.

0. In process first, phase by phase (tools/bench_handshake_phases.py): where a handshake's
   CPU goes, on one core with nothing else of trivpn's running.
1. Completed responder handshakes per second: `trivpn serve` with PEERS peers, and a load
   generator in the client ns (this file run as ``gen``, built on trivpn's own proto/) that
   offers OFFERED initiations a second from all of them, round robin, and counts the valid
   responses (a response is sent once the responder has opened the initiation, checked it
   and made its keys: its handshake is complete). The initiations are made before the clock
   starts, so the generator's CPU goes to sending and counting. Cookies are turned off for
   this part (under_load_rate raised): a server under load answers an initiator with a
   cookie and then 20 handshakes a second per source IP, and the load comes from one IP.
2. Cookies: under a FLOOD_RATE flood of initiations with a valid mac1 from the flood ns
   (bench_floodgen.py valid-mac1), the seconds the wireguard-go client takes from being
   given the server as its peer to a ping answered through it; trivpn (default
   under_load_rate) and wireguard-go as the server, in turns.
"""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
import struct
import sys
import time
from pathlib import Path

PEERS = 256
OFFERED = 5000  # initiations a second: above what one core answers
FLOOD_RATE = 20_000
CONNECT_LIMIT = 30.0  # seconds a connect may take under the flood before it counts as failed
SUBNET = "10.9"  # the generator's peers: 10.9.<i // 256>.<i % 256>/32


def initiator_key(i: int) -> bytes:
    from trivpn.proto.wireguard import crypto

    return crypto.clamp(struct.pack("<I", i + 1) * 8)


# -- the generator (in the client ns) ----------------------------------------------------------


def generate(
    host: str, port: int, server_key: bytes, peers: int, rate: float, seconds: float
) -> str:
    from trivpn.proto.wireguard import crypto, messages
    from trivpn.proto.wireguard.cookie import CookieGenerator
    from trivpn.proto.wireguard.noise import Handshake, StaticIdentity

    total = int(rate * seconds)
    wall = time.time()
    shakes = [
        Handshake(StaticIdentity.from_private_key(initiator_key(i)), server_key, None)
        for i in range(peers)
    ]
    macs = CookieGenerator(server_key)
    pool: list[bytes] = []
    for n in range(total):
        peer, round_ = n % peers, n // peers
        timestamp = crypto.tai64n(wall + round_)  # whitened to ~16 ms: a second apart
        ephemeral = os.urandom(32)
        pool.append(macs.add_macs(shakes[peer].create_initiation(n + 1, timestamp, ephemeral), 0))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.setblocking(False)
    sock.connect((host, port))
    answered: set[int] = set()
    last = 0.0  # when the last response came: the server may still be catching up at the end
    sent = 0
    start = time.monotonic()
    end = start + seconds
    while (now := time.monotonic()) < end + 1.0:
        due = min(total, int((now - start) * rate))
        while sent < due:
            with contextlib.suppress(BlockingIOError):
                sock.send(pool[sent])
            sent += 1
        while True:
            try:
                data = sock.recv(2048)
            except (BlockingIOError, ConnectionRefusedError):
                break
            if len(data) == 92 and data[0] == messages.MSG_RESPONSE:
                answered.add(messages.parse_response(data).receiver)
                last = time.monotonic()
        time.sleep(0.0005)
    return f"{sent} {len(answered)} {max(last - start, seconds):.3f}"


# -- the runner --------------------------------------------------------------------------------


def _peer_tables(count: int) -> str:
    from support import wglab

    from trivpn.proto.wireguard import crypto, encode_key

    return "".join(
        wglab.peer_table(
            f"h{i}",
            encode_key(crypto.public_key(initiator_key(i))),
            f"{SUBNET}.{i // 256}.{i % 256}/32",
        )
        for i in range(count)
    )


def handshake_rate(work: Path, runs: int, seconds: int) -> list[float]:
    """Completed handshakes a second, per run, each run against a fresh server."""
    import bench
    from support import netlab, wglab

    rates: list[float] = []
    with netlab.Lab("bh") as lab:
        for i in range(runs):
            keys = wglab.ServerKeys.generate()
            ifname = wglab.unique_ifname("tvhs")
            config = work / f"handshakes-{i}.toml"
            config.write_text(
                wglab.server_config(
                    ifname,
                    keys.private,
                    _peer_tables(PEERS),
                    addresses=(bench.WG_SERVER_ADDRESS,),
                    port=bench.WG_TRIVPN_PORT,
                    wireguard={"under_load_rate": 1e9},
                )
            )
            server = netlab.Trivpn(
                lab.server,
                ["--log-level", "warning", "serve", "-c", str(config)],
                work / f"handshakes-{i}.log",
            )
            try:
                netlab.wait_for(
                    lambda server=server: (  # type: ignore[misc]
                        bench._alive(server)
                        and bench._listening(lab.server, "u", bench.WG_TRIVPN_PORT)
                    ),
                    timeout=15,
                    what="trivpn serve to listen",
                )
                print(f"bench: handshakes: {i + 1}/{runs}: {OFFERED}/s for {seconds} s", flush=True)
                out = bench._ns_run(
                    lab.clients[0],
                    sys.executable,
                    __file__,
                    "gen",
                    netlab.SERVER_WAN,
                    str(bench.WG_TRIVPN_PORT),
                    keys.public,
                    str(PEERS),
                    str(OFFERED),
                    str(seconds),
                    timeout=seconds + 120,
                )
                sent, answered, took = out.split()
                rates.append(int(answered) / float(took))
                print(
                    f"bench: handshakes: {sent} sent, {answered} answered in {took} s", flush=True
                )
            finally:
                try:
                    server.stop(timeout=10)
                except Exception:
                    server.kill()
    return rates


def connect_under_flood(work: Path, runs: int) -> dict[str, list[float]]:
    """Seconds to a first ping through each server under a valid-mac1 flood, per run."""
    import bench
    import bench_flood
    from support import netlab

    client = bench.WireGuardClient()
    trivpn = bench.WireGuardTrivpnScenario(client)
    go = bench.WireGuardGoScenario(client)
    times: dict[str, list[float]] = {trivpn.name: [], go.name: []}
    with netlab.Lab("bk", clients=2) as lab:
        client.start(lab, work)
        try:
            for i in range(runs):
                for scenario in (trivpn, go) if i % 2 == 0 else (go, trivpn):
                    scenario.start(lab, work)
                    try:
                        if scenario is trivpn:
                            key, port = trivpn.public_key, bench.WG_TRIVPN_PORT
                            alive = lambda: bench._alive(trivpn.server)  # noqa: E731
                        else:
                            assert go.server is not None
                            key, port = go.server.public_key, bench.WG_GO_PORT
                            alive = lambda: True  # noqa: E731
                        client.disconnect()
                        flood = bench_flood.start_flood(
                            lab.clients[1], "valid-mac1", port, CONNECT_LIMIT + 5, key
                        )
                        time.sleep(2.0)  # the server is under load before the peer comes
                        print(f"bench: cookies: {scenario.name}: {i + 1}/{runs}", flush=True)
                        start = time.monotonic()
                        try:
                            client.connect(key, port, alive, timeout=CONNECT_LIMIT)
                            times[scenario.name].append(time.monotonic() - start)
                        except TimeoutError:
                            times[scenario.name].append(float("inf"))
                        finally:
                            flood.kill()
                            flood.wait(10)
                    finally:
                        scenario.stop()
        finally:
            client.stop()
    return times


def _runs(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} [{', '.join(f'{v:.1f}' for v in values)}]"


def run(runs: int, seconds: int, work: Path) -> None:
    import bench_handshake_phases

    in_process = bench_handshake_phases.report(2048, max(runs, 3))
    rates = handshake_rate(work, runs, seconds)
    times = connect_under_flood(work, runs)
    print(
        f"\nbench: handshakes: {runs} runs; median [each run]; {PEERS} initiators offering "
        f"{OFFERED}/s for {seconds} s (cookies off); connects under a {FLOOD_RATE // 1000} kpps "
        "valid-mac1 flood\n"
    )
    print("\n".join(in_process) + "\n")
    print(f"completed responder handshakes/s, trivpn: {_runs(rates)}")
    for name, values in times.items():
        print(f"seconds to connect under the flood, {name}: {_runs(values)}")


if __name__ == "__main__":
    if sys.argv[1:2] != ["gen"]:
        raise SystemExit("usage: bench_handshakes.py gen HOST PORT KEY PEERS RATE SECONDS")
    from trivpn.proto.wireguard import parse_key

    host, port, key, peers, rate, secs = sys.argv[2:8]
    print(generate(host, int(port), parse_key(key), int(peers), float(rate), float(secs)))
