"""Fixtures for the OS-edge tests: throw-away namespaces and calls run inside them."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Address,
    IPv6Interface,
    IPv6Network,
)
from pathlib import Path
from typing import Any

import pytest
from support.netlab import Netns, unique_name

CHILD = Path(__file__).with_name("net_ns_child.py")

NsCall = Callable[..., dict[str, Any]]


@pytest.fixture
def make_netns() -> Iterator[Callable[[str], Netns]]:
    """Creates namespaces on demand; every one of them is deleted at teardown."""
    created: list[Netns] = []

    def make(prefix: str) -> Netns:
        ns = Netns(unique_name(prefix))
        created.append(ns)
        return ns

    try:
        yield make
    finally:
        for ns in reversed(created):
            ns.delete()


@pytest.fixture
def netns(make_netns: Callable[[str], Netns]) -> Netns:
    return make_netns("tvnet")


def _tagged(value: Any) -> Any:
    """ipaddress objects as the tagged JSON the child turns back into them."""
    # Interfaces first: IPv4Interface is a subclass of IPv4Address.
    if isinstance(value, IPv4Interface | IPv6Interface):
        return {"iface": str(value)}
    if isinstance(value, IPv4Address | IPv6Address):
        return {"ip": str(value)}
    if isinstance(value, IPv4Network | IPv6Network):
        return {"net": str(value)}
    if isinstance(value, list | tuple):
        return [_tagged(item) for item in value]
    return value


def _tagged_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {key: _tagged(value) for key, value in kwargs.items()}


def _ns_call(ns: Netns, name: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Call trivpn.net function ``name`` (see net_ns_child.py) in a process inside ``ns``.

    Returns ``{"ok": result as JSON}`` or ``{"error": exception type, "message": text}``.
    """
    request = {"call": name, "args": _tagged(args), "kwargs": _tagged_kwargs(kwargs)}
    done = ns.run(sys.executable, str(CHILD), json.dumps(request), check=False)
    if done.returncode != 0:
        pytest.fail(f"child in {ns.name} failed ({done.returncode}):\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.fixture
def ns_call() -> NsCall:
    return _ns_call
