"""recvmmsg through cffi against real sockets on loopback: datagrams, addresses, cmsgs,
truncation, an empty socket and an ICMP error."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import pytest

from trivpn.net import recvmmsg, udp

pytestmark = pytest.mark.skipif(not recvmmsg.available(), reason="no recvmmsg here")


def bound(family: int, host: str) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.setblocking(False)
    return sock


@pytest.fixture
def v4() -> Iterator[tuple[socket.socket, socket.socket]]:
    rx, tx = bound(socket.AF_INET, "127.0.0.1"), bound(socket.AF_INET, "127.0.0.1")
    yield rx, tx
    rx.close()
    tx.close()


def test_many_datagrams_arrive_in_one_call_in_order_with_their_senders(v4) -> None:  # type: ignore[no-untyped-def]
    rx, tx = v4
    other = bound(socket.AF_INET, "127.0.0.5")
    datagrams = [bytes([i]) * (1 + i * 37) for i in range(20)]
    for i, data in enumerate(datagrams):
        (other if i % 3 == 0 else tx).sendto(data, rx.getsockname())
    batch = recvmmsg.MessageBatch(entries=32)
    got = batch.receive(rx.fileno())
    assert [data for data, _, _ in got] == datagrams
    senders = [addr for _, _, addr in got]
    assert senders == [other.getsockname() if i % 3 == 0 else tx.getsockname() for i in range(20)]
    assert all(ancillary == () for _, ancillary, _ in got)
    # one sender, one object: what udp.drain's shortcut relies on
    assert senders[1] is senders[2]
    other.close()


def test_a_call_takes_at_most_its_limit_and_the_rest_waits(v4) -> None:  # type: ignore[no-untyped-def]
    rx, tx = v4
    for i in range(10):
        tx.sendto(bytes([i]), rx.getsockname())
    batch = recvmmsg.MessageBatch(entries=4)
    assert [d for d, _, _ in batch.receive(rx.fileno(), limit=3)] == [b"\0", b"\1", b"\2"]
    assert [d for d, _, _ in batch.receive(rx.fileno())] == [bytes([i]) for i in range(3, 7)]
    assert [d for d, _, _ in batch.receive(rx.fileno())] == [bytes([i]) for i in range(7, 10)]
    assert batch.receive(rx.fileno()) == []  # EAGAIN: nothing waiting, no exception


def test_ipv6_senders_come_as_the_socket_module_shows_them() -> None:
    rx, tx = bound(socket.AF_INET6, "::1"), bound(socket.AF_INET6, "::1")
    try:
        tx.sendto(b"six", rx.getsockname())
        [(data, _, addr)] = recvmmsg.MessageBatch(entries=2).receive(rx.fileno())
        assert data == b"six"
        assert addr == tx.getsockname()  # (host, port, flowinfo, scope_id)
        assert len(addr) == 4
    finally:
        rx.close()
        tx.close()


def test_a_v4_sender_on_a_dual_stack_socket_is_v4_mapped() -> None:
    rx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    rx.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    rx.bind(("::", 0))
    rx.setblocking(False)
    tx = bound(socket.AF_INET, "127.0.0.1")
    try:
        tx.sendto(b"mapped", ("127.0.0.1", rx.getsockname()[1]))
        [(_, _, addr)] = recvmmsg.MessageBatch(entries=2).receive(rx.fileno())
        assert addr == ("::ffff:127.0.0.1", tx.getsockname()[1], 0, 0)
    finally:
        rx.close()
        tx.close()


def test_pktinfo_and_gro_cmsgs_come_as_recvmsg_returns_them(v4) -> None:  # type: ignore[no-untyped-def]
    _, tx = v4
    rx = bound(socket.AF_INET, "0.0.0.0")  # loopback holds 127/8: any of it reaches rx
    rx.setsockopt(socket.IPPROTO_IP, udp.IP_PKTINFO, 1)
    rx.setsockopt(udp.SOL_UDP, udp.UDP_GRO, 1)
    port = rx.getsockname()[1]
    # one GSO send of 8 segments: with GRO on, one buffer and its segment size
    run = [bytes([i]) * 1000 for i in range(8)]
    gso = [(udp.SOL_UDP, udp.UDP_SEGMENT, struct.pack("=H", 1000))]
    tx.sendmsg(run, gso, 0, ("127.0.0.3", port))
    with rx:
        got = recvmmsg.MessageBatch(entries=8).receive(rx.fileno())
    assert [data for data, _, _ in got] == [b"".join(run)]  # loopback keeps the GSO skb whole
    [(_, ancillary, addr)] = got
    assert addr == tx.getsockname()
    kinds = {(level, kind): value for level, kind, value in ancillary}
    assert int.from_bytes(kinds[(udp.SOL_UDP, udp.UDP_GRO)][:4], "little") == 1000
    pktinfo = kinds[(socket.IPPROTO_IP, udp.IP_PKTINFO)]
    cmsg = udp.source_cmsg(socket.IPPROTO_IP, udp.IP_PKTINFO, pktinfo)
    assert cmsg is not None and udp.cmsg_source(cmsg) == "127.0.0.3"


def test_a_datagram_longer_than_the_buffer_is_dropped_and_counted(v4) -> None:  # type: ignore[no-untyped-def]
    rx, tx = v4
    for data in (b"a" * 100, b"b" * 5000, b"c" * 200):
        tx.sendto(data, rx.getsockname())
    batch = recvmmsg.MessageBatch(entries=4, size=1024)
    assert [data for data, _, _ in batch.receive(rx.fileno())] == [b"a" * 100, b"c" * 200]
    assert batch.truncated == 1


def test_an_icmp_error_is_raised_once_as_recvmsg_would(v4) -> None:  # type: ignore[no-untyped-def]
    rx, _ = v4
    closed = bound(socket.AF_INET, "127.0.0.1")
    gone = closed.getsockname()
    closed.close()
    rx.connect(gone)  # a connected UDP socket hears of the port unreachable
    rx.send(b"anyone?")
    batch = recvmmsg.MessageBatch(entries=2)
    with pytest.raises(ConnectionRefusedError):
        batch.receive(rx.fileno())
    assert batch.receive(rx.fileno()) == []


def test_a_buffer_is_reused_without_leaking_the_last_call_into_the_next(v4) -> None:  # type: ignore[no-untyped-def]
    rx, tx = v4
    batch = recvmmsg.MessageBatch(entries=2)
    tx.sendto(b"x" * 900, rx.getsockname())
    assert [d for d, _, _ in batch.receive(rx.fileno())] == [b"x" * 900]
    tx.sendto(b"short", rx.getsockname())
    assert [d for d, _, _ in batch.receive(rx.fileno())] == [b"short"]


def test_cmsgs_are_parsed_with_their_alignment() -> None:
    header = struct.Struct("@Nii")
    first = struct.pack("=i", 1400)
    second = bytes(range(12))

    def cmsg(level: int, kind: int, data: bytes) -> bytes:
        raw = header.pack(header.size + len(data), level, kind) + data
        return raw + bytes(-len(raw) % struct.calcsize("N"))

    control = cmsg(udp.SOL_UDP, udp.UDP_GRO, first) + cmsg(0, udp.IP_PKTINFO, second)
    assert recvmmsg.parse_cmsgs(control) == (
        (udp.SOL_UDP, udp.UDP_GRO, first),
        (0, udp.IP_PKTINFO, second),
    )
    assert recvmmsg.parse_cmsgs(control[:10]) == ()  # cut inside the first header
    with pytest.raises(ValueError):
        recvmmsg.parse_sockaddr(struct.pack("=H", socket.AF_UNIX) + bytes(14))
