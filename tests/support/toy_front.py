"""A ToyVPN front on a fake socket and TUN (support.fakes), for tests under MockClock."""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

from support.fakes import FakeTun, FakeUdp
from trivpn.config import ToyVpnConfig
from trivpn.dataplane.router import RouteOwner, Router
from trivpn.dataplane.toyvpn import ToyVpnFront

SECRET = b"lab-secret-1234"


class ToyUdp(FakeUdp):
    def send(self, data: bytes, addr: Any) -> None:
        self.send_many([data], addr)


def toy_front(
    after_tun_write: Callable[[int], object] | None = None, **rates: int | None
) -> tuple[ToyVpnFront, ToyUdp, FakeTun]:
    """A front with ``[toyvpn]`` rates ``rates`` (rate_down, rate_up), its socket and TUN."""
    sock, tun = ToyUdp(), FakeTun()
    front = ToyVpnFront(
        ToyVpnConfig(enabled=True, secret=SECRET, **rates),  # type: ignore[arg-type]
        mtu=1400,
        reserved=[],
        router=Router[RouteOwner](),
        tun=tun,  # type: ignore[arg-type]
        sock=sock,  # type: ignore[arg-type]
        counters=collections.Counter(),
        after_tun_write=after_tun_write,
    )
    return front, sock, tun
