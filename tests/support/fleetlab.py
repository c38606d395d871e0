"""A namespace lab for a fleet: two gateways on one link, one client, one internet host.

A switch namespace holds two bridges; every other namespace joins them by a veth pair
(TEST-NET addresses only, nothing in the machine's own namespace)::

    client 198.51.100.2 ─┐                     ┌─ 203.0.113.1 gw1, 203.0.113.3 gw2
    gw1    198.51.100.1 ─┼─ lan0 [switch] inet0 ┼─ 203.0.113.2 internet host
    gw2    198.51.100.3 ─┘                     ┘
    FLOATING 198.51.100.10: the address a test gives one gateway, then moves to the other.

Each gateway's default route is the internet host; the client has none (only its tunnel).
"""

from __future__ import annotations

from collections.abc import Sequence

from support.netlab import INTERNET_HOST, Namespaces, Netns, veth

CLIENT_LAN = "198.51.100.2"
GATEWAY_LAN = ("198.51.100.1", "198.51.100.3")
GATEWAY_EGRESS = ("203.0.113.1", "203.0.113.3")
FLOATING = "198.51.100.10"


class FleetLab(Namespaces):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self._ports = 0
        try:
            self.switch = self._ns(prefix + "w")
            for bridge in ("lan0", "inet0"):
                self.switch.run("ip", "link", "add", bridge, "type", "bridge")
                self.switch.run("ip", "link", "set", bridge, "up")
            self.client = self._ns(prefix + "c")
            self._join(self.client, "eth0", "lan0", f"{CLIENT_LAN}/24")
            self.internet = self._ns(prefix + "i")
            self._join(self.internet, "eth0", "inet0", f"{INTERNET_HOST}/24")
            self.gateways: Sequence[Netns] = [self._ns(prefix + "g"), self._ns(prefix + "g")]
            for gw, lan, egress in zip(self.gateways, GATEWAY_LAN, GATEWAY_EGRESS, strict=True):
                self._join(gw, "wan0", "lan0", f"{lan}/24")
                self._join(gw, "inet0", "inet0", f"{egress}/24")
                gw.run("ip", "route", "add", "default", "via", INTERNET_HOST)
        except BaseException:
            self.close()
            raise

    def _join(self, ns: Netns, ifname: str, bridge: str, address: str) -> None:
        self._ports += 1
        port = f"p{self._ports}"
        veth(ns, ifname, self.switch, port)
        self.switch.run("ip", "link", "set", port, "master", bridge)
        ns.run("ip", "addr", "add", address, "dev", ifname)

    def take_floating(self, gateway: Netns) -> None:
        """Give ``gateway`` the floating address (on wan0) and announce it, as keepalived
        would: a gratuitous ARP, so the link sends it there at once."""
        gateway.run("ip", "addr", "add", f"{FLOATING}/24", "dev", "wan0")
        gateway.run("python3", "-c", GARP, FLOATING, "wan0")

    def drop_floating(self, gateway: Netns) -> None:
        gateway.run("ip", "addr", "del", f"{FLOATING}/24", "dev", "wan0")


# A gratuitous ARP (a request for our own address, broadcast), from inside a lab namespace.
GARP = r"""
import socket, struct, sys
ip, ifname = socket.inet_aton(sys.argv[1]), sys.argv[2]
mac = bytes.fromhex(open(f"/sys/class/net/{ifname}/address").read().strip().replace(":", ""))
arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, mac, ip, b"\0" * 6, ip)
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifname, 0))
s.send(b"\xff" * 6 + mac + struct.pack("!H", 0x0806) + arp)
"""
