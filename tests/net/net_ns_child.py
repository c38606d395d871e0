"""Runs trivpn.net calls inside a network namespace, for the tests in this folder.

libnftables, netlink sockets, /proc/sys/net and /dev/net/tun all act in the namespace of
the process using them, so the tests start this script with ``ip netns exec`` rather than
switching the test process itself. Usage::

    python net_ns_child.py '{"call": "link.route_get", "args": [{"ip": "192.0.2.9"}], "kwargs": {}}'

Arguments tagged ``{"ip": ...}``, ``{"net": ...}`` or ``{"iface": ...}`` become ipaddress
objects. It prints ``{"ok": result}`` or ``{"error": type, "message": text}`` as JSON, so
a test can assert on exceptions too.
"""

from __future__ import annotations

import json
import select
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Interface, ip_address, ip_interface, ip_network
from typing import Any

import trio

from trivpn.net import link, nft, sysctl, tun
from trivpn.net.offload import checksum


def decode(value: Any) -> Any:
    if isinstance(value, list):
        return [decode(item) for item in value]
    if isinstance(value, dict):
        if value.keys() == {"ip"}:
            return ip_address(value["ip"])
        if value.keys() == {"net"}:
            return ip_network(value["net"])
        if value.keys() == {"iface"}:
            return ip_interface(value["iface"])
        return {key: decode(item) for key, item in value.items()}
    return value


def encode(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [encode(item) for item in value]
    if isinstance(value, dict):
        return {str(key): encode(item) for key, item in value.items()}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)  # ipaddress objects


def echo_reply_for(request: bytes) -> bytes:
    """Answer an IPv4 ICMP echo request: swap the addresses, type 0, fresh checksums."""
    header_len = (request[0] & 0x0F) * 4
    header = bytearray(request[:header_len])
    header[12:16], header[16:20] = request[16:20], request[12:16]
    header[8] = 64  # TTL
    header[10:12] = b"\0\0"
    header[10:12] = struct.pack("!H", checksum(bytes(header)))
    icmp = bytearray(request[header_len:])
    icmp[0] = 0  # echo reply
    icmp[2:4] = b"\0\0"
    icmp[2:4] = struct.pack("!H", checksum(bytes(icmp)))
    return bytes(header + icmp)


def is_echo_request_to(packet: bytes, dst: IPv4Address) -> bool:
    if len(packet) < 28 or packet[0] >> 4 != 4 or packet[9] != 1:
        return False
    header_len = (packet[0] & 0x0F) * 4
    return packet[16:20] == dst.packed and packet[header_len] == 8


def ip_json(*args: str) -> Any:
    out = subprocess.run(["ip", "-j", *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def tun_ping(name: str, peer: str) -> dict[str, Any]:
    """Open and configure a TUN, let ``ping`` send through it, answer from user space."""
    device = tun.Tun.open(name)
    addresses = [IPv4Interface("10.9.0.1/24"), ip_interface("fd00:9::1/64")]

    async def configure() -> None:  # from inside trio, as the server will call it
        link.configure_interface(device.name, addresses, 1400)

    trio.run(configure)
    result: dict[str, Any] = {
        "name": device.name,
        "addr": ip_json("addr", "show", "dev", device.name),
        "link": ip_json("link", "show", "dev", device.name),
    }
    ping = subprocess.Popen(
        ["ping", "-n", "-c", "1", "-W", "10", peer], stdout=subprocess.PIPE, text=True
    )
    try:
        request = wait_for_echo_request(device, IPv4Address(peer))
        result["request"] = {
            "version": request[0] >> 4,
            "src": str(IPv4Address(request[12:16])),
            "dst": str(IPv4Address(request[16:20])),
        }
        result["write_ok"] = device.write(echo_reply_for(request))
        result["ping_rc"] = ping.wait(timeout=15)
        result["ping_out"] = ping.stdout.read() if ping.stdout else ""
    finally:
        if ping.poll() is None:
            ping.kill()
            ping.wait()
    device.close()
    result["exists_after_close"] = link.link_exists(result["name"])
    return result


def wait_for_echo_request(device: tun.Tun, dst: IPv4Address, timeout: float = 10) -> bytes:
    """Read batches until ping's request shows up; the kernel's own IPv6 chatter is skipped."""
    poller = select.poll()
    poller.register(device.fd, select.POLLIN)
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        poller.poll(remaining * 1000)
        for packet in device.read_batch():
            if is_echo_request_to(packet, dst):
                return packet
    raise TimeoutError(f"no ICMP echo request to {dst} within {timeout} s")


CALLABLES: dict[str, Callable[..., Any]] = {
    "tun.open_and_close": lambda name: tun.Tun.open(name).close(),
    "link.configure_interface": link.configure_interface,
    "link.add_route": link.add_route,
    "link.default_route_interface": link.default_route_interface,
    "link.route_get": link.route_get,
    "link.add_host_route": link.add_host_route,
    "link.delete_host_route": link.delete_host_route,
    "link.link_exists": link.link_exists,
    "link.link_kind": link.link_kind,
    "tun.open_twice": lambda name: [tun.Tun.open(name), tun.Tun.open(name)],
    "nft.apply": lambda *args, **kwargs: nft.apply_ruleset(nft.build_ruleset(*args, **kwargs)),
    "nft.apply_ruleset": nft.apply_ruleset,
    "nft.delete_table": nft.delete_table,
    "nft.list_table": nft.list_table,
    "nft.set_routed_networks": nft.set_routed_networks,
    "nft.forward_blockers": lambda tunnel: nft.forward_blockers(nft.list_ruleset(), tunnel),
    "sysctl.enable_forwarding": sysctl.enable_forwarding,
    "sysctl.restore": sysctl.restore,
    "scenario.tun_ping": tun_ping,
}


def main() -> None:
    request = json.loads(sys.argv[1])
    function = CALLABLES[request["call"]]
    try:
        value = function(*decode(request["args"]), **decode(request["kwargs"]))
    except Exception as exc:
        print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
    else:
        print(json.dumps({"ok": encode(value)}))


if __name__ == "__main__":
    main()
