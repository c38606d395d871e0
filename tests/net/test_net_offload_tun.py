"""offload against the kernel: a TUN with IFF_VNET_HDR, TSO and checksum offload on.

Topology (two namespaces)::

    edge ns: sender 10.77.0.1 / fd00:77::1 on TUN tvo0, relay process on tvo0,
             out0 198.51.100.1/24, 2001:db8:77::1/64
    sink ns: eth0 198.51.100.2/24, 2001:db8:77::2/64, the TCP / UDP sink

The edge routes the sink's address into tvo0; the relay reads the kernel's 64 KiB TSO
frames, cuts them up with segment(), merges them again with coalesce() and writes the GSO
frames back into tvo0; packets coming in on tvo0 are routed (rule: iif tvo0) out of out0,
whose checksum and segmentation offloads are off, so the kernel segments our frames in
software and finishes the partial checksums we left; the sink's stack verifies them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.netlab import Netns, veth

CHILD = Path(__file__).with_name("offload_tun_child.py")
TUN = "tvo0"
ADDRS = {
    4: {"tun": "10.77.0.1", "sink": "198.51.100.2"},
    6: {"tun": "fd00:77::1", "sink": "2001:db8:77::2"},
}
TRANSFER = 4 * 1024 * 1024 + 12345
PORT = 5201

EDGE_SETUP = [
    ("ip", "addr", "add", "10.77.0.1/24", "dev", TUN),
    ("ip", "-6", "addr", "add", "fd00:77::1/64", "dev", TUN, "nodad"),
    ("ip", "link", "set", TUN, "up"),
    ("ip", "addr", "add", "198.51.100.1/24", "dev", "out0"),
    ("ip", "-6", "addr", "add", "2001:db8:77::1/64", "dev", "out0", "nodad"),
    ("ip", "route", "add", "198.51.100.2/32", "dev", TUN),
    ("ip", "-6", "route", "add", "2001:db8:77::2/128", "dev", TUN),
    ("ip", "route", "add", "198.51.100.0/24", "dev", "out0", "table", "100"),
    ("ip", "-6", "route", "add", "2001:db8:77::/64", "dev", "out0", "table", "100"),
    ("ip", "rule", "add", "iif", TUN, "lookup", "100"),
    ("ip", "-6", "rule", "add", "iif", TUN, "lookup", "100"),
    ("sysctl", "-qw", "net.ipv4.ip_forward=1"),
    ("sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"),
    ("sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0"),
    ("sysctl", "-qw", f"net.ipv4.conf.{TUN}.rp_filter=0"),
    # What comes back out of the TUN carries our own source address.
    ("sysctl", "-qw", f"net.ipv4.conf.{TUN}.accept_local=1"),
]
SINK_SETUP = [
    ("ip", "addr", "add", "198.51.100.2/24", "dev", "eth0"),
    ("ip", "-6", "addr", "add", "2001:db8:77::2/64", "dev", "eth0", "nodad"),
    ("ip", "route", "add", "10.77.0.0/24", "via", "198.51.100.1"),
    ("ip", "-6", "route", "add", "fd00:77::/64", "via", "2001:db8:77::1"),
]
# Software GSO and checksums on the way out: the kernel must finish what we wrote.
NO_OFFLOAD = """
from pyroute2.ethtool import Ethtool
ethtool = Ethtool()
for flag in ("tx-checksumming", "tcp-segmentation-offload", "generic-segmentation-offload"):
    ethtool.set_offload_flag("out0", flag, 0)
features = ethtool.get_features("out0").features
print(features["tx-tcp-segmentation"].enable, features["tx-checksum-ip-generic"].enable)
"""


def child(*args: str) -> list[str]:
    return [sys.executable, str(CHILD), *args]


class Relay:
    def __init__(self, ns: Netns) -> None:
        self.proc = ns.popen(
            child("relay", TUN, ADDRS[4]["sink"], ADDRS[6]["sink"]),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line == "ready\n", f"relay did not start: {line!r}"

    def stop(self) -> dict[str, int]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("stop\n")
        self.proc.stdin.flush()
        out, _ = self.proc.communicate(timeout=30)
        stats: dict[str, int] = json.loads(out)
        return stats

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def snmp(ns: Netns) -> dict[str, int]:
    """``Tcp.InCsumErrors``-style counters from /proc/net/snmp and /proc/net/snmp6."""
    counters: dict[str, int] = {}
    lines = ns.run("cat", "/proc/net/snmp").stdout.splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=True):
        group, *keys = names.split()
        for key, value in zip(keys, values.split()[1:], strict=True):
            counters[group.rstrip(":") + "." + key] = int(value)
    for line in ns.run("cat", "/proc/net/snmp6").stdout.splitlines():
        key, value = line.split()
        counters[key] = int(value)
    return counters


@pytest.fixture
def lab(make_netns: Callable[[str], Netns]) -> Iterator[tuple[Netns, Netns, Relay]]:
    edge, sink = make_netns("tvoe"), make_netns("tvos")
    veth(edge, "out0", sink, "eth0")
    offloads = edge.run(sys.executable, "-c", NO_OFFLOAD).stdout.split()
    assert offloads == ["False", "False"], offloads
    relay = Relay(edge)
    try:
        for argv in EDGE_SETUP:
            edge.run(*argv)
        for argv in SINK_SETUP:
            sink.run(*argv)
        yield edge, sink, relay
    finally:
        relay.kill()


@pytest.mark.root
@pytest.mark.parametrize("version", [4, 6])
def test_tcp_and_udp_through_segment_and_coalesce(
    lab: tuple[Netns, Netns, Relay], version: int
) -> None:
    edge, sink, relay = lab
    tun_addr, sink_addr = ADDRS[version]["tun"], ADDRS[version]["sink"]
    bind_any = "0.0.0.0" if version == 4 else "::"
    tcp_sink = sink.popen(child("tcp-sink", bind_any, str(PORT)), stdout=subprocess.PIPE)
    try:
        assert tcp_sink.stdout is not None
        assert tcp_sink.stdout.readline() == "listening\n"
        sent = edge.run(
            *child("tcp-send", tun_addr, sink_addr, str(PORT), str(TRANSFER)), timeout=40
        )
        assert sent.stdout.strip() == str(TRANSFER)
    finally:
        tcp_sink.kill()
        tcp_sink.wait(10)

    # UDP from a local socket reaches the TUN as CHECKSUM_PARTIAL (TUN_F_CSUM).
    sizes = [1, 2, 3, 255, 1000, 1201, 1400]
    udp_sink = sink.popen(
        child("udp-sink", bind_any, str(PORT), str(len(sizes))), stdout=subprocess.PIPE
    )
    try:
        assert udp_sink.stdout is not None
        assert udp_sink.stdout.readline() == "listening\n"
        edge.run(*child("udp-send", tun_addr, sink_addr, str(PORT), *map(str, sizes)))
        out, _ = udp_sink.communicate(timeout=30)
        assert sorted(json.loads(out)) == sorted(sizes)
    finally:
        if udp_sink.poll() is None:
            udp_sink.kill()
            udp_sink.wait(10)

    stats = relay.stop()
    # The kernel sent us real TSO frames and partial checksums, and we them back as GSO.
    assert stats.get("gso_frames_in", 0) > 0, stats
    assert stats.get("partial_csum_in", 0) >= len(sizes), stats
    assert stats.get("gso_frames_out", 0) > 0, stats
    assert stats["segments_in_gso_frames_out"] > 2 * stats["gso_frames_out"], stats
    # Every packet segment() produced had valid checksums; no frame was refused.
    assert stats.get("bad_checksums", 0) == 0, stats
    assert stats.get("dropped_frames", 0) == 0, stats
    assert not [key for key in stats if key.startswith("write_error")], stats
    counters = snmp(sink)
    assert counters["Tcp.InCsumErrors"] == 0
    assert counters["Udp.InCsumErrors"] == 0 and counters["Udp6InCsumErrors"] == 0
