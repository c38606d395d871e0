"""UDP endpoints as the kernel gives them and as people (and `wg`) read them."""

from __future__ import annotations

from typing import Any


def plain_address(addr: tuple[Any, ...]) -> tuple[str, int]:
    """(host, port) of a received address: v4-mapped IPv6 shown as IPv4, flow/scope dropped."""
    host = str(addr[0])
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return host, addr[1]


def format_endpoint(addr: tuple[Any, ...]) -> str:
    """``host:port``, or ``[v6]:port``; v4-mapped addresses shown as IPv4."""
    host, port = plain_address(addr)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
