"""What the WireGuard front needs of its TUN and its UDP socket (trivpn.net's objects, or a
test's fakes)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

Addr = tuple[Any, ...]


class TunWriter(Protocol):
    def write_batch(self, packets: Sequence[bytes], *, verify_checksums: bool = True) -> int:
        """Write the packets in order; returns how many were dropped."""


class BoundSocket(Protocol):
    def getsockname(self) -> Any: ...


class UdpSocket(Protocol):
    """trivpn.net.udp.DatagramSocket as the front uses it."""

    @property
    def sock(self) -> BoundSocket:
        """The OS socket of the moment (a rebind replaces it)."""

    @property
    def fwmark(self) -> int: ...

    async def wait_readable(self) -> None: ...

    def drain(self) -> list[tuple[bytes, Addr]]: ...

    def send_many(self, datagrams: Sequence[bytes], addr: Addr | None = None) -> None: ...

    def set_mark(self, mark: int) -> None: ...

    def check_mark(self, mark: int) -> None: ...

    def rebind(self, port: int) -> None: ...

    def check_rebind(self, port: int) -> None: ...
