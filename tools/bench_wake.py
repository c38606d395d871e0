"""`tools/bench --mode wake`: what one wake-up of a UDP relay costs, by how it waits (issue 12).

A client sends one datagram at a time over loopback and times the echo: every 10 ms
("cold": the server's core idles in between, as it does between a ping's packets) and back
to back ("warm"). The servers differ only in how they wait:

  thread     a blocking recvfrom in a plain thread (no event loop at all)
  epoll      select.epoll, then a non-blocking recvfrom (tools/bare_relay.py's loop)
  trio       trio.lowlevel.wait_readable, then recvfrom (one trio task: trivpn's receive loop)
  trio-hop   trio: one task receives and writes the datagram to a pipe, a second task waits
             on the pipe and sends the echo (trivpn before TunReader.forward_ready: the TUN
             write and the TUN reader's wake were two tasks)
  data-thread  trivpn.dataplane.data_thread.DataThread echoes while trio idles in the same
             process (the issue 12 spike: its epoll, its lock, the trio instrument)

Printed: the median round trip of each (µs), and its excess over `thread`.
Loopback only; needs no root.

Usage: .venv/bin/python tools/bench_wake.py [--count 400]
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import statistics
import subprocess
import sys
import time

SERVERS = ("thread", "epoll", "trio", "trio-hop", "data-thread")
COLD_GAP = 0.010
COUNT = 400  # echoes per measurement


def serve(kind: str, sock: socket.socket) -> None:
    """Echo datagrams forever, waiting the way ``kind`` says."""
    if kind == "thread":
        while True:
            data, addr = sock.recvfrom(2048)
            sock.sendto(data, addr)
    sock.setblocking(False)
    if kind == "epoll":
        poller = select.epoll()
        poller.register(sock.fileno(), select.EPOLLIN)
        while True:
            poller.poll()
            try:
                data, addr = sock.recvfrom(2048)
            except BlockingIOError:
                continue
            sock.sendto(data, addr)
    import trio

    async def one_task() -> None:
        while True:
            await trio.lowlevel.wait_readable(sock)
            try:
                data, addr = sock.recvfrom(2048)
            except BlockingIOError:
                continue
            sock.sendto(data, addr)

    async def two_tasks() -> None:
        r, w = os.pipe()
        os.set_blocking(r, False)
        last: list[tuple[str, int]] = []

        async def receive() -> None:
            while True:
                await trio.lowlevel.wait_readable(sock)
                try:
                    data, addr = sock.recvfrom(2048)
                except BlockingIOError:
                    continue
                last[:] = [addr]
                os.write(w, data)

        async def reply() -> None:
            while True:
                await trio.lowlevel.wait_readable(r)
                sock.sendto(os.read(r, 2048), last[0])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive)
            nursery.start_soon(reply)

    async def data_thread() -> None:
        from trivpn.dataplane.data_thread import DataThread

        def echo() -> None:
            try:
                data, addr = sock.recvfrom(2048)
            except BlockingIOError:
                return
            sock.sendto(data, addr)

        thread = DataThread()
        thread.watch("echo", lambda: sock, echo)
        await thread.run()

    tasks = {"trio": one_task, "trio-hop": two_tasks, "data-thread": data_thread}
    trio.run(tasks[kind])


def measure(port: int, count: int, gap: float) -> float:
    """The median round trip in µs of ``count`` echoes, ``gap`` s apart."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect(("127.0.0.1", port))
        sock.settimeout(1)
        rtts = []
        for i in range(count + 20):
            t0 = time.perf_counter()
            sock.send(b"x" * 64)
            sock.recv(2048)
            if i >= 20:  # the first ones warm the path up
                rtts.append(time.perf_counter() - t0)
            if gap:
                time.sleep(gap)
        return statistics.median(rtts) * 1e6


def run(count: int) -> int:
    results: dict[str, tuple[float, float]] = {}
    for kind in SERVERS:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            server = subprocess.Popen(
                [sys.executable, __file__, "--serve", kind], stdin=sock.fileno(), pass_fds=()
            )
        try:
            time.sleep(0.3)
            results[kind] = (measure(port, count, COLD_GAP), measure(port, count, 0))
        finally:
            server.kill()
            server.wait()
    base_cold, base_warm = results["thread"]
    print(f"{'server':10s} {'cold (µs)':>10s} {'excess':>8s} {'warm (µs)':>10s} {'excess':>8s}")
    for kind, (cold, warm) in results.items():
        print(
            f"{kind:10s} {cold:10.0f} {cold - base_cold:8.0f} {warm:10.1f} {warm - base_warm:8.1f}"
        )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=COUNT, help="echoes per measurement")
    parser.add_argument("--serve", choices=SERVERS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:  # the server process: its socket is its stdin
        serve(args.serve, socket.socket(fileno=0))
        return 0
    return run(args.count)


if __name__ == "__main__":
    sys.exit(main())
