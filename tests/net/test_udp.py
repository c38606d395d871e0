"""UDP batching on loopback: GSO runs arrive as the same datagrams, GRO buffers are split."""

from __future__ import annotations

import select
import socket
import struct
from contextlib import closing

import pytest

from trivpn.config import Endpoint
from trivpn.net import udp
from trivpn.proto.endpoints import plain_address


@pytest.fixture(autouse=True, params=["recvmmsg", "recvmsg"])
def receive_call(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test here runs with batched receive, and with the one-by-one fallback."""
    if request.param == "recvmsg":
        monkeypatch.setattr(udp.recvmmsg, "available", lambda: False)
    elif not udp.recvmmsg.available():
        pytest.skip("no recvmmsg here")
    return str(request.param)


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


def test_a_drain_takes_at_most_its_limit_and_leaves_the_rest(pair) -> None:  # type: ignore[no-untyped-def]
    tx, rx, addr = pair
    datagrams = [bytes([i]) * 100 for i in range(50)]
    for data in datagrams:
        tx.send(data, addr)
    assert select.select([rx.sock], [], [], 2.0)[0]
    first = [data for data, _ in rx.drain(limit=20)]
    assert first == datagrams[:20]
    assert [data for data, _ in rx.drain()] == datagrams[20:]
    assert rx.drain() == []


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
    sock = udp.DatagramSocket(fake, batched=False)  # type: ignore[arg-type]
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


# --- the sticky source ----------------------------------------------------------------------


def test_a_received_pktinfo_becomes_the_cmsg_sending_from_its_destination() -> None:
    # struct in_pktinfo {ifindex 3, spec_dst 127.0.0.1, addr 198.51.100.11}
    v4 = struct.pack("=i", 3) + socket.inet_aton("127.0.0.1") + socket.inet_aton("198.51.100.11")
    cmsg = udp.source_cmsg(socket.IPPROTO_IP, udp.IP_PKTINFO, v4)
    assert cmsg == (
        socket.IPPROTO_IP,
        udp.IP_PKTINFO,
        bytes(4) + socket.inet_aton("198.51.100.11") + bytes(4),
    )
    assert udp.cmsg_source(cmsg) == "198.51.100.11"
    # struct in6_pktinfo {addr, ifindex 3}; a v4-mapped one is shown as IPv4
    for host, shown in (
        ("2001:db8::11", "2001:db8::11"),
        ("::ffff:198.51.100.11", "198.51.100.11"),
    ):
        v6 = socket.inet_pton(socket.AF_INET6, host) + struct.pack("=i", 3)
        cmsg6 = udp.source_cmsg(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, v6)
        assert cmsg6 == (
            socket.IPPROTO_IPV6,
            socket.IPV6_PKTINFO,
            socket.inet_pton(socket.AF_INET6, host) + bytes(4),
        )
        assert udp.cmsg_source(cmsg6) == shown
    assert udp.source_cmsg(udp.SOL_UDP, udp.UDP_GRO, struct.pack("=i", 1000)) is None
    assert udp.source_cmsg(socket.IPPROTO_IP, udp.IP_PKTINFO, v4[:8]) is None  # cut short


def ask_and_answer(
    listener: udp.DatagramSocket, client: socket.socket, dialed: tuple[str, int], sizes: list[int]
) -> list[tuple[bytes, tuple[str, int]]]:
    """``client`` sends to ``dialed``; the listener answers with datagrams of ``sizes``."""
    client.sendto(b"hello", dialed)
    assert select.select([listener.sock], [], [], 2.0)[0]
    [(data, addr)] = listener.drain()
    assert data == b"hello"
    listener.send_many([bytes([i]) * size for i, size in enumerate(sizes)], addr)
    answers = []
    while len(answers) < len(sizes) and select.select([client], [], [], 2.0)[0]:
        answers.append(client.recvfrom(65535))
    assert [len(d) for d, _ in answers] == sizes
    return answers


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
@pytest.mark.parametrize("offload", [True, False])
def test_replies_leave_from_the_address_the_client_dialed(family: int, offload: bool) -> None:
    # loopback holds all of 127/8: without a sticky source, replies would come from 127.0.0.1
    listener = udp.open_listener(
        Endpoint("0.0.0.0" if family == socket.AF_INET else "::", 0), offload=offload
    )
    port = listener.sock.getsockname()[1]
    with closing(listener), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.bind(("127.0.0.1", 0))
        # one reply alone (sendmsg with pktinfo), and a GSO run beside it (both cmsgs)
        for sizes in ([100], [1000] * 5 + [10]):
            answers = ask_and_answer(listener, client, ("127.0.0.2", port), sizes)
            assert {source for _, source in answers} == {("127.0.0.2", port)}
        assert listener.source_for(client.getsockname()) == "127.0.0.2"
        # the client moves to another of the server's addresses: the replies follow
        answers = ask_and_answer(listener, client, ("127.0.0.3", port), [100, 100])
        assert {source for _, source in answers} == {("127.0.0.3", port)}


@pytest.mark.parametrize("sizes", [[100], [500] * 4])
def test_a_source_that_went_away_is_forgotten_and_the_kernel_chooses(sizes: list[int]) -> None:
    listener = udp.open_listener(Endpoint("0.0.0.0", 0))
    port = listener.sock.getsockname()[1]
    with closing(listener), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.bind(("127.0.0.1", 0))
        ask_and_answer(listener, client, ("127.0.0.2", port), [10])
        # as if 127.0.0.2 had been removed: the remembered source is not ours (EINVAL)
        gone = (
            socket.IPPROTO_IP,
            udp.IP_PKTINFO,
            bytes(4) + socket.inet_aton("192.0.2.99") + bytes(4),
        )
        listener._sources[client.getsockname()] = gone
        listener.send_many([b"x" * size for size in sizes], client.getsockname())
        for _ in sizes:
            assert select.select([client], [], [], 2.0)[0]
            _data, source = client.recvfrom(65535)
            assert source == ("127.0.0.1", port)
        assert listener.source_for(client.getsockname()) is None
        assert listener.dropped == 0


def test_the_sticky_map_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(udp, "MAX_STICKY", 3)
    listener = udp.open_listener(Endpoint("127.0.0.1", 0))
    port = listener.sock.getsockname()[1]
    clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(4)]
    with closing(listener):
        for client in clients:
            client.bind(("127.0.0.1", 0))
            client.sendto(b"x", ("127.0.0.1", port))
        got = receive_all(listener, 4)
        assert len(got) == 4
        known = [listener.source_for(c.getsockname()) for c in clients]
        assert known == [None, None, None, "127.0.0.1"]  # full at the 4th: started again
    for client in clients:
        client.close()
