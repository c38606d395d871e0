"""Tun: batch reads and drops on a stand-in packet socket, then a real TUN in a namespace."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from support.netlab import Netns

from trivpn.net.tun import Tun, TunError

NsCall = Callable[..., dict[str, Any]]


@pytest.fixture
def packet_pipe() -> Iterator[tuple[Tun, socket.socket]]:
    """A Tun wrapped around one end of a SEQPACKET pair: packet boundaries, like a TUN fd."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    fd = ours.detach()
    os.set_blocking(fd, False)
    device = Tun(fd, "fake0")
    try:
        yield device, theirs
    finally:
        device.close()
        theirs.close()


def test_read_batch_returns_whole_packets_and_stops_when_empty(
    packet_pipe: tuple[Tun, socket.socket],
) -> None:
    device, peer = packet_pipe
    assert device.read_batch() == []
    for packet in (b"\x45first", b"\x60second", b"\x45" * 1500):
        peer.send(packet)
    assert device.read_batch() == [b"\x45first", b"\x60second", b"\x45" * 1500]
    assert device.read_batch() == []


def test_read_batch_is_bounded(packet_pipe: tuple[Tun, socket.socket]) -> None:
    device, peer = packet_pipe
    for i in range(5):
        peer.send(bytes([i]))
    assert device.read_batch(max_packets=2) == [b"\x00", b"\x01"]
    assert device.read_batch(max_packets=2) == [b"\x02", b"\x03"]
    assert device.read_batch(max_packets=2) == [b"\x04"]


def test_write_accepts_every_buffer_type(packet_pipe: tuple[Tun, socket.socket]) -> None:
    device, peer = packet_pipe
    data = bytearray(b"\x45payload")
    assert device.write(bytes(data))
    assert device.write(data)
    assert device.write(memoryview(data)[:4])
    assert [peer.recv(100) for _ in range(3)] == [b"\x45payload", b"\x45payload", b"\x45pay"]
    assert device.dropped_writes == 0


def test_write_that_would_block_is_dropped_and_counted(
    packet_pipe: tuple[Tun, socket.socket],
) -> None:
    device, _peer = packet_pipe
    results = [device.write(b"\x45" * 1000) for _ in range(10_000)]  # nobody reads: fills up
    assert results[0] is True
    assert results[-1] is False
    assert device.dropped_writes == results.count(False) > 0


def test_close_is_idempotent_and_later_use_fails_cleanly(
    packet_pipe: tuple[Tun, socket.socket],
) -> None:
    device, _peer = packet_pipe
    device.close()
    device.close()
    assert device.fd == -1
    assert device.write(b"\x45") is False
    with pytest.raises(TunError, match="fake0"):
        device.read_batch()


def test_context_manager_closes() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with Tun(ours.detach(), "fake1") as device:
        assert device.fileno() >= 0
    assert device.fd == -1
    theirs.close()


@pytest.mark.parametrize("name", ["a" * 16, "averyveryverylongname0"])
def test_overlong_name_is_refused_with_the_name(name: str) -> None:
    with pytest.raises(TunError, match=f"cannot create TUN '{name}'.*at most 15 bytes"):
        Tun.open(name)


def test_name_with_nul_is_refused() -> None:
    with pytest.raises(TunError, match="NUL"):
        Tun.open("tun\0x")


@pytest.mark.root
def test_kernel_rejects_a_bad_name_with_a_clear_error(netns: Netns, ns_call: NsCall) -> None:
    outcome = ns_call(netns, "tun.open_and_close", "bad/name")
    assert outcome["error"] == "TunError"
    assert outcome["message"].startswith("cannot create TUN 'bad/name': Invalid argument")
    assert "CAP_NET_ADMIN" in outcome["message"]


@pytest.mark.root
def test_tun_carries_a_ping_both_ways(netns: Netns, ns_call: NsCall) -> None:
    """ping -> kernel -> TUN -> read_batch; crafted reply -> write -> kernel -> ping."""
    outcome = ns_call(netns, "scenario.tun_ping", "tvtun%d", "10.9.0.2")
    assert "ok" in outcome, outcome
    result = outcome["ok"]
    assert result["name"] == "tvtun0"  # the kernel's name, from the ioctl answer

    (link,) = result["link"]
    assert link["mtu"] == 1400
    assert "UP" in link["flags"]
    assert "LOWER_UP" in link["flags"]
    (addr,) = result["addr"]
    addresses = {(a["local"], a["prefixlen"]) for a in addr["addr_info"]}
    assert {("10.9.0.1", 24), ("fd00:9::1", 64)} <= addresses

    assert result["request"] == {"version": 4, "src": "10.9.0.1", "dst": "10.9.0.2"}
    assert result["write_ok"] is True
    assert result["ping_rc"] == 0, result["ping_out"]
    assert "1 received" in result["ping_out"]
    assert result["exists_after_close"] is False
    assert "tvtun0" not in netns.run("ip", "link").stdout


@pytest.mark.root
def test_a_name_another_device_has_is_refused_naming_that_device(
    netns: Netns, ns_call: NsCall
) -> None:
    netns.run("ip", "link", "add", "tvv0", "type", "veth", "peer", "name", "tvv1")
    assert ns_call(netns, "link.link_kind", "tvv0") == {"ok": "veth"}
    assert ns_call(netns, "link.link_kind", "lo") == {"ok": ""}
    assert ns_call(netns, "link.link_kind", "nope0") == {"ok": None}
    assert ns_call(netns, "tun.open_and_close", "tvv0") == {
        "error": "TunError",
        "message": "cannot create TUN 'tvv0': the name is taken by a veth device (not a TUN); "
        "choose another name",
    }
    assert ns_call(netns, "tun.open_and_close", "lo") == {
        "error": "TunError",
        "message": "cannot create TUN 'lo': the name is taken by an existing device (not a "
        "TUN); choose another name",
    }
    assert ns_call(netns, "tun.open_twice", "tvt0") == {
        "error": "TunError",
        "message": "cannot create TUN 'tvt0': the name is taken by a TUN or TAP device already "
        "in use (another trivpn?)",
    }
