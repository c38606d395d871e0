"""trivpn: a VPN server for Linux on trio (WireGuard and ToyVPN over one TUN)."""

__version__ = "0.1.0"
