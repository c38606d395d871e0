"""The responder's handshake in process, phase by phase: `tools/bench --mode handshakes`' in-process
half, also run alone: `.venv/bin/python tools/bench_handshake_phases.py [N] [ROUNDS]`.

N valid initiations from PEERS initiators (made with trivpn's own initiator side before any
clock starts) are answered by a Device: first whole (``Device.receive``, a server's work per
initiation), then phase by phase on a fresh device, so the phases add up to about the whole.
Times are the thread's CPU time (other processes on the machine then cost less noise), in µs
per handshake: the median of ROUNDS rounds, each round's figure in brackets.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from bench_handshakes import PEERS, initiator_key

ADDR = ("10.0.0.1", 51820)


def setup(n: int) -> tuple[Any, list[bytes]]:
    """A device with PEERS peers (cookies off), and ``n`` initiations to it, round robin."""
    from trivpn.proto.wireguard import Device, PeerConfig, crypto
    from trivpn.proto.wireguard.cookie import CookieGenerator
    from trivpn.proto.wireguard.noise import Handshake, StaticIdentity

    device = Device(
        crypto.clamp(bytes(range(1, 33))), rng=os.urandom, wallclock=time.time, under_load_rate=1e9
    )
    shakes = []
    for i in range(PEERS):
        identity = StaticIdentity.from_private_key(initiator_key(i))
        device.add_peer(PeerConfig(identity.public_key, endpoint=ADDR))
        shakes.append(Handshake(identity, device.public_key, None))
    macs = CookieGenerator(device.public_key)
    wall = time.time()
    pool = []
    for k in range(n):
        timestamp = crypto.tai64n(wall + k // PEERS)  # whitened to ~16 ms: a second apart
        msg = shakes[k % PEERS].create_initiation(k + 1, timestamp, os.urandom(32))
        pool.append(macs.add_macs(msg, 0))
    return device, pool


def _cpu(run: Callable[..., object], *args: Any) -> float:
    start = time.thread_time()
    run(*args)
    return time.thread_time() - start


def _consume_all(chunk: list[tuple[Any, Any, bytes]], now: float) -> None:
    for opened, peer, _ in chunk:
        peer.handshake.consume_initiation(opened, now)


def _respond_all(chunk: list[tuple[Any, Any, bytes]]) -> None:
    for _, peer, ephemeral in chunk:
        peer.handshake.create_response(1, ephemeral)


def _rounds_of_peers(items: list[Any]) -> Iterable[list[Any]]:
    """``items`` in runs of PEERS: each peer once per run (the pool is round robin)."""
    for start in range(0, len(items), PEERS):
        yield items[start : start + PEERS]


def measure(n: int) -> dict[str, float]:
    """µs per handshake, the whole and each phase, for one round of ``n`` initiations."""
    from trivpn.proto.wireguard import Output, crypto, messages
    from trivpn.proto.wireguard.noise import open_initiation

    us: dict[str, float] = {}
    device, pool = setup(n)
    out = Output()
    receive = device.receive

    def whole() -> None:
        for k, data in enumerate(pool):
            receive(data, ADDR, float(k), out)

    us["whole: Device.receive"] = _cpu(whole)
    answered = sum(1 for d, _ in out.datagrams if d[0] == messages.MSG_RESPONSE)
    if answered != n:
        raise SystemExit(f"bench: {answered} of {n} initiations answered ({device.counters})")

    device, pool = setup(n)
    checker, identity, peers = device._checker, device.identity, device.peers
    us["mac1 check and parse"] = _cpu(
        lambda: [(checker.check_mac1(d), messages.parse_initiation(d)) for d in pool]
    )
    parsed = [messages.parse_initiation(d) for d in pool]
    opened: list[Any] = []
    us["open_initiation (1 DH)"] = _cpu(
        lambda: opened.extend(open_initiation(identity, m) for m in parsed)
    )
    owners = [peers[o.initiator_static] for o in opened]
    ephemerals = [os.urandom(32) for _ in range(n)]
    consume = respond = 0.0
    work = list(zip(opened, owners, ephemerals, strict=True))
    for second, chunk in enumerate(_rounds_of_peers(work)):  # a second apart: no flood limit
        consume += _cpu(_consume_all, chunk, float(second))
        respond += _cpu(_respond_all, chunk)
    us["consume_initiation (0 DH)"] = consume
    us["create_response (1 base + 2 DH)"] = respond
    us["the rest (Device, Peer, keypair)"] = us["whole: Device.receive"] - sum(
        v for k, v in us.items() if not k.startswith("whole")
    )
    private = [crypto.clamp(e) for e in ephemerals]
    us["  one X25519"] = _cpu(
        lambda: [crypto.dh(a, o.ephemeral) for a, o in zip(private, opened, strict=True)]
    )
    us["  one base-point multiplication"] = _cpu(lambda: [crypto.public_key(a) for a in private])
    return {k: v / n * 1e6 for k, v in us.items()}


def report(n: int, rounds: int) -> list[str]:
    runs: dict[str, list[float]] = {}
    for _ in range(rounds):
        for name, value in measure(n).items():
            runs.setdefault(name, []).append(value)
    lines = [f"responder handshake in process, µs of CPU each: median of {rounds} rounds of {n}"]
    for name, values in runs.items():
        each = ", ".join(f"{v:.1f}" for v in values)
        lines.append(f"  {name:34} {statistics.median(values):6.1f}  [{each}]")
    return lines


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    print("\n".join(report(*(args + [2048, 5][len(args) :]))))
