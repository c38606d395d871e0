"""Micro-benchmark of the WireGuard Device's timers: µs per tick with many peers.

A server Device gets N peers, each with persistent keepalive (25 s) and an established
session (a real handshake with a throwaway client Device, the handshakes spread over one
keepalive interval so the keepalives are too). Then the simulated clock jumps from one
``next_deadline()`` to the next, calling ``tick`` there, for one simulated minute (or until
--max-ticks), and the time spent in ``next_deadline`` + ``tick`` is measured.

Reported per N: ticks per simulated minute, µs per tick (mean), and the share of one core
the timers would take at that rate. Not a test; nothing leaves the process.

Usage: .venv/bin/python tools/bench_timers.py [--peers 1000 10000] [--minutes 1]
       [--max-ticks 50000] [--keepalive 25]
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import time

from trivpn.proto.wireguard import Device, Output, PeerConfig

SERVER_ADDR = ("198.51.100.1", 51820)
WALL_EPOCH = 1_700_000_000.0


def _client_network(i: int) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network((0x0A000000 + 2 + i, 32))  # 10.0.0.2, 10.0.0.3, ...


def build_server(peers: int, keepalive: int, seed: int) -> tuple[Device, float]:
    """A server with ``peers`` established sessions; the simulated time setup ended at."""
    rnd = random.Random(seed)
    clock = {"now": 0.0}

    def wallclock() -> float:
        return WALL_EPOCH + clock["now"]

    server = Device(
        rnd.randbytes(32), rng=rnd.randbytes, wallclock=wallclock, under_load_rate=float("inf")
    )
    out = Output()
    for i in range(peers):
        now = clock["now"] = i * keepalive / peers  # spread the keepalives over one interval
        client = Device(rnd.randbytes(32), rng=rnd.randbytes, wallclock=wallclock)
        network = _client_network(i)
        addr = (str(ipaddress.IPv4Address(0xC6336400 + 2 + i % 250)), 40000 + i // 250)
        server.add_peer(
            PeerConfig(
                public_key=client.public_key,
                allowed_ips=(network,),
                persistent_keepalive=keepalive,
                name=f"c{i}",
            )
        )
        to_server = client.add_peer(
            PeerConfig(public_key=server.public_key, endpoint=SERVER_ADDR, name="server")
        )
        # An empty packet: the client's keepalive confirms the session, and no data means no
        # reply timer on the server, only the persistent keepalive.
        (initiation, _), *_ = client.send(to_server, b"", now).datagrams
        (response, _), *_ = server.receive(initiation, addr, now).datagrams
        for data, _ in client.receive(response, SERVER_ADDR, now).datagrams:
            server.receive(data, addr, now, out)
        out.clear()
    if not all(peer.current is not None for peer in server):
        raise SystemExit("bench: a handshake did not complete; the numbers would mean nothing")
    return server, clock["now"]


def run(peers: int, keepalive: int, minutes: float, max_ticks: int, seed: int) -> None:
    started = time.perf_counter()
    server, now = build_server(peers, keepalive, seed)
    setup = time.perf_counter() - started
    # Every peer's keepalive is already due once within the next interval: steady state.
    out = Output()
    start_sim = now
    end = start_sim + minutes * 60.0
    ticks = datagrams = 0
    sim_now = start_sim
    spent = 0.0
    perf = time.perf_counter
    while ticks < max_ticks:
        t0 = perf()
        deadline = server.next_deadline()
        if deadline is None or deadline > end:
            break
        server.tick(deadline, out)
        spent += perf() - t0
        sim_now = deadline
        ticks += 1
        datagrams += len(out.datagrams)
        out.clear()
    simulated = max(sim_now - start_sim, 1e-9)
    per_minute = ticks * 60.0 / simulated
    per_tick = spent / max(ticks, 1)
    core = per_tick * per_minute / 60.0
    print(
        f"peers={peers:>6}  setup={setup:6.1f}s  ticks={ticks:>6} in {simulated:6.1f} sim s  "
        f"ticks/sim-min={per_minute:9.0f}  µs/tick={per_tick * 1e6:9.1f}  "
        f"keepalives/tick={datagrams / max(ticks, 1):4.2f}  core share={core:7.1%}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--keepalive", type=int, default=25, help="seconds (default 25)")
    parser.add_argument("--minutes", type=float, default=1.0, help="simulated minutes")
    parser.add_argument("--max-ticks", type=int, default=50_000, help="stop timing after these")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    for n in args.peers:
        run(n, args.keepalive, args.minutes, args.max_ticks, args.seed)


if __name__ == "__main__":
    main()
