"""trivpn.dataplane.tun_reader: packets from the TUN go to the owners of their destinations,
consecutive ones for one owner as one run."""

from __future__ import annotations

import collections
import ipaddress
import os
from collections.abc import Iterator

import pytest
import trio
import trio.testing
from support.wg_harness import ip4, ip6

from trivpn.dataplane.router import RouteOwner, Router
from trivpn.dataplane.tun_reader import FEW_WRITTEN, TunReader


class PipeTun:
    """A TUN whose fd is a pipe: readable while packets wait (one byte per packet)."""

    def __init__(self) -> None:
        self.fd, self._writer = os.pipe()
        os.set_blocking(self.fd, False)
        self._queue: list[bytes] = []

    def put(self, *packets: bytes) -> None:
        self._queue.extend(packets)
        os.write(self._writer, b"x" * len(packets))

    def read_batch(self, max_packets: int = 64) -> list[bytes]:
        batch, self._queue = self._queue[:max_packets], self._queue[max_packets:]
        os.read(self.fd, len(batch))
        return batch

    def close(self) -> None:
        os.close(self.fd)
        os.close(self._writer)


class Owner:
    def __init__(self, name: str, fail: bool = False) -> None:
        self.name = name
        self.fail = fail
        self.runs: list[list[bytes]] = []

    def __repr__(self) -> str:
        return f"owner {self.name}"

    def send(self, packets: list[bytes], now: float) -> None:
        self.runs.append(packets)
        if self.fail:
            raise RuntimeError("refused")


@pytest.fixture
def tun() -> Iterator[PipeTun]:
    pipe = PipeTun()
    yield pipe
    pipe.close()


def to(dst: str, payload: bytes = b"p") -> bytes:
    return ip4("10.8.0.1", dst, payload)


async def test_runs_go_to_their_owners_and_failures_are_counted(
    tun: PipeTun, caplog: pytest.LogCaptureFixture
) -> None:
    router: Router[RouteOwner] = Router()
    a, b, broken = Owner("a"), Owner("b"), Owner("broken", fail=True)
    router.add(ipaddress.ip_network("10.8.0.2/32"), a)
    router.add(ipaddress.ip_network("10.8.0.3/32"), b)
    router.add(ipaddress.ip_network("10.8.0.4/32"), broken)
    counters: collections.Counter[str] = collections.Counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(TunReader(tun, router, counters).run)
        tun.put(
            to("10.8.0.2", b"1"),
            to("10.8.0.2", b"2"),
            to("192.0.2.1"),  # no route: counted, and the run goes on
            to("10.8.0.2", b"3"),
            to("10.8.0.4"),
            to("10.8.0.3", b"4"),
            to("10.8.0.2", b"5"),
        )
        with trio.fail_after(5):
            while not a.runs or len(a.runs) < 2:
                await trio.testing.wait_all_tasks_blocked()
                await trio.sleep(0.001)
        nursery.cancel_scope.cancel()
    assert a.runs == [[to("10.8.0.2", b"1"), to("10.8.0.2", b"2"), to("10.8.0.2", b"3")],
                      [to("10.8.0.2", b"5")]]  # fmt: skip
    assert b.runs == [[to("10.8.0.3", b"4")]] and len(broken.runs) == 1
    assert counters == {"tun_no_route": 1, "send_error": 1}
    assert "sending packets to owner broken failed" in caplog.text


async def test_forward_ready_sends_what_waits_now_and_nothing_when_empty(tun: PipeTun) -> None:
    """What a front calls right after its TUN write: no task, no waiting."""
    router: Router[RouteOwner] = Router()
    a = Owner("a")
    router.add(ipaddress.ip_network("10.8.0.2/32"), a)
    counters: collections.Counter[str] = collections.Counter()
    reader = TunReader(tun, router, counters)
    reader.forward_ready()
    assert a.runs == []
    tun.put(to("10.8.0.2", b"1"), to("10.8.0.2", b"2"))
    reader.forward_ready()
    assert a.runs == [[to("10.8.0.2", b"1"), to("10.8.0.2", b"2")]]
    assert not counters


async def test_a_few_packets_written_are_followed_by_a_read_and_a_bulk_write_is_not(
    tun: PipeTun,
) -> None:
    """After a bulk write the reader's own turn sends the replies together."""
    router: Router[RouteOwner] = Router()
    a = Owner("a")
    router.add(ipaddress.ip_network("10.8.0.2/32"), a)
    reader = TunReader(tun, router, collections.Counter())
    tun.put(to("10.8.0.2", b"1"))
    reader.tun_written(FEW_WRITTEN + 1)
    assert a.runs == []
    reader.tun_written(FEW_WRITTEN)
    assert a.runs == [[to("10.8.0.2", b"1")]]


def tcp(packet: bytes) -> bytes:
    """``packet`` (ip4 or ip6) as a TCP segment: its protocol byte set to 6."""
    out = bytearray(packet)
    out[9 if packet[0] >> 4 == 4 else 6] = 6
    return bytes(out)


async def test_what_is_not_tcp_leaves_ahead_of_a_bulk_run_and_no_flow_is_reordered(
    tun: PipeTun,
) -> None:
    """A ping's reply read with a download's segments goes first (a client's full socket
    drops a burst's tail), and each kind keeps its order."""
    router: Router[RouteOwner] = Router()
    a, b = Owner("a"), Owner("b")
    router.add(ipaddress.ip_network("10.8.0.2/32"), a)
    router.add(ipaddress.ip_network("fd00::2/128"), b)
    reader = TunReader(tun, router, collections.Counter())
    segments = [tcp(to("10.8.0.2", b"seg%d" % i)) for i in range(4)]
    reply, dns = to("10.8.0.2", b"pong"), to("10.8.0.2", b"dns")
    segments6 = [tcp(ip6("fd00::1", "fd00::2", b"s%d" % i)) for i in range(2)]
    reply6 = ip6("fd00::1", "fd00::2", b"pong6")
    tun.put(segments[0], segments[1], reply, segments[2], dns, segments[3])
    reader.forward_ready()
    assert a.runs == [[reply, dns, *segments]]
    tun.put(segments6[0], reply6, segments6[1])
    reader.forward_ready()
    assert b.runs == [[reply6, *segments6]]
    tun.put(*segments)  # all TCP: as read
    reader.forward_ready()
    assert a.runs[-1] == segments
