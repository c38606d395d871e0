"""UDP batching on loopback: GSO runs arrive as the same datagrams, GRO buffers are split."""

from __future__ import annotations

import select
import socket
import struct

import pytest

from trivpn.net import udp
from trivpn.proto.endpoints import plain_address


@pytest.fixture
def pair() -> tuple[udp.DatagramSocket, udp.DatagramSocket, tuple[str, int]]:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.bind(("127.0.0.1", 0))
    return udp.DatagramSocket(tx), udp.DatagramSocket(rx), rx.getsockname()


def receive_all(sock: udp.DatagramSocket, n: int) -> list[bytes]:
    got: list[bytes] = []
    while len(got) < n and select.select([sock.sock], [], [], 2.0)[0]:
        got += [data for data, _ in sock.drain()]
    return got


def test_runs_of_equal_sizes_arrive_as_the_same_datagrams_in_order(pair) -> None:  # type: ignore[no-untyped-def]
    tx, rx, addr = pair
    datagrams = [bytes([i]) * 1200 for i in range(70)]  # more than one GSO run (64 max)
    datagrams += [b"short tail", b"x" * 1200, b"y" * 1300, b"z" * 10]
    tx.send_many(datagrams, addr)
    assert receive_all(rx, len(datagrams)) == datagrams
    assert tx.dropped == 0


def test_gro_buffers_are_split_at_the_segment_size(pair) -> None:  # type: ignore[no-untyped-def]
    tx, rx, addr = pair
    assert rx.gro, "this kernel refused UDP_GRO; the test machine's kernel supports it"
    datagrams = [bytes([65 + i % 26]) * 1000 for i in range(40)] + [b"end"]
    tx.send_many(datagrams, addr)
    assert receive_all(rx, len(datagrams)) == datagrams


class FakeGroSocket:
    """What the kernel hands a UDP_GRO socket: one buffer and its segment size."""

    family = socket.AF_INET

    def __init__(self, buffers: list[tuple[bytes, int]]) -> None:
        self.buffers = buffers

    def setblocking(self, flag: bool) -> None:
        pass

    def setsockopt(self, *args: object) -> None:
        pass

    def recvmsg(self, bufsize: int, ancbufsize: int) -> tuple[bytes, list, int, tuple]:  # type: ignore[type-arg]
        if not self.buffers:
            raise BlockingIOError
        data, segment = self.buffers.pop(0)
        cmsg = [(udp.SOL_UDP, udp.UDP_GRO, struct.pack("=i", segment))] if segment else []
        return data, cmsg, 0, ("192.0.2.1", 51820)


def test_a_coalesced_buffer_is_split_into_its_datagrams() -> None:
    fake = FakeGroSocket([(b"a" * 100 + b"b" * 100 + b"c" * 40, 100), (b"single", 0)])
    sock = udp.DatagramSocket(fake)  # type: ignore[arg-type]
    assert [d for d, _ in sock.drain()] == [b"a" * 100, b"b" * 100, b"c" * 40, b"single"]


def test_without_offloads_everything_still_arrives(pair) -> None:  # type: ignore[no-untyped-def]
    _, rx, addr = pair
    plain = udp.DatagramSocket(socket.socket(socket.AF_INET, socket.SOCK_DGRAM), offload=False)
    datagrams = [b"a" * 500] * 10 + [b"b"]
    plain.send_many(datagrams, addr)
    assert receive_all(rx, len(datagrams)) == datagrams


def test_a_kernel_that_refuses_gso_falls_back_to_single_sends(
    pair,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    _, rx, addr = pair

    class NoGso(socket.socket):
        def sendmsg(self, *args: object, **kwargs: object) -> int:
            raise OSError(5, "Input/output error")  # EIO, as without checksum offload

    refusing = NoGso(socket.AF_INET, socket.SOCK_DGRAM)
    sock = udp.DatagramSocket(refusing)
    datagrams = [b"q" * 800] * 5
    sock.send_many(datagrams, addr)
    assert not sock.gso  # remembered: no more GSO attempts on this socket
    assert receive_all(rx, 5) == datagrams


def test_v4_endpoints_are_mapped_on_a_dual_stack_socket() -> None:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    six = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    six.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock = udp.DatagramSocket(six)
    assert sock.send(b"hello", rx.getsockname())
    data, _ = rx.recvfrom(100)
    assert data == b"hello"
    assert plain_address(("::ffff:192.0.2.7", 5, 0, 0)) == ("192.0.2.7", 5)
    assert plain_address(("2001:db8::1", 5, 0, 0)) == ("2001:db8::1", 5)
