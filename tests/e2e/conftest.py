"""Fixtures the WireGuard end-to-end tests share.

A module marks itself ``lab(prefix, clients=1)`` for the shape of its namespace lab (the
server's interface name takes the same prefix), and ``wireguard_go`` when it needs Debian's
wireguard-go and wg. Every process a fixture starts is ended before the lab goes.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import netlab, wglab


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "lab(prefix, clients=1): the namespace lab of the tests")
    config.addinivalue_line("markers", "wireguard_go: needs wireguard-go and wg")


def pytest_runtest_setup(item: pytest.Item) -> None:
    needs_tools = item.get_closest_marker("wireguard_go") is not None
    if needs_tools and (shutil.which("wireguard-go") is None or shutil.which("wg") is None):
        pytest.skip("wireguard-go and wg (Debian's wireguard-go, wireguard-tools) not installed")


def _lab_prefix(request: pytest.FixtureRequest) -> str:
    mark = request.node.get_closest_marker("lab")
    assert mark is not None, "mark the test module with pytest.mark.lab(prefix, clients=...)"
    prefix: str = mark.args[0]
    return prefix


@pytest.fixture
def lab(request: pytest.FixtureRequest) -> Iterator[netlab.Lab]:
    mark = request.node.get_closest_marker("lab")
    clients: int = mark.kwargs.get("clients", 1) if mark else 1
    with netlab.Lab(_lab_prefix(request), clients=clients) as lab:
        yield lab


@pytest.fixture
def server(
    request: pytest.FixtureRequest, lab: netlab.Lab, tmp_path: Path
) -> Iterator[wglab.LabServer]:
    """The trivpn under test (not started), killed at teardown if the test did not stop it."""
    srv = wglab.LabServer(lab.server, tmp_path, prefix=_lab_prefix(request))
    yield srv
    srv.kill()


@pytest.fixture
def processes(lab: netlab.Lab) -> Iterator[list[netlab.Trivpn]]:
    """Other trivpn processes a test started; killed at teardown if the test did not stop them."""
    started: list[netlab.Trivpn] = []
    yield started
    for proc in reversed(started):
        proc.kill()


@pytest.fixture
def wireguard_go(lab: netlab.Lab, tmp_path: Path) -> Iterator[Callable[..., wglab.WireGuardGo]]:
    """Start wireguard-go interfaces (ns, listen_port=None); all stopped, socket files removed."""
    started: list[wglab.WireGuardGo] = []

    def start(ns: netlab.Netns, listen_port: int | None = None) -> wglab.WireGuardGo:
        log_path = tmp_path / f"wireguard-go-{len(started)}.log"
        wg = wglab.WireGuardGo(ns, listen_port=listen_port, log_path=log_path)
        started.append(wg)
        return wg

    yield start
    for wg in started:
        wg.stop()


@pytest.fixture
def wg_client(
    wireguard_go: Callable[..., wglab.WireGuardGo], server: wglab.LabServer
) -> Callable[..., wglab.WireGuardGo]:
    """wireguard-go in a client ns as ``address``/32, everything routed to the lab server
    (``listen_port``, ``with_endpoint`` as connect_client)."""

    def start(
        ns: netlab.Netns,
        address: str,
        *,
        listen_port: int | None = None,
        with_endpoint: bool = True,
    ) -> wglab.WireGuardGo:
        wg = wireguard_go(ns, listen_port)
        wglab.connect_client(wg, server.keys.public, address, with_endpoint=with_endpoint)
        return wg

    return start
