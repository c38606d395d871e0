"""The web admin's registry connections (trivpn.control.web.registry_pool): kept between
calls, one per call under way, closed after a call that raised, at shutdown, and when a
reload changes [state]."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from trivpn.config import StateConfig
from trivpn.control.web.registry_pool import RegistryPool
from trivpn.registry.api import RegistryStore
from trivpn.registry.store import PeerNotFound, registry_path


def test_a_connection_is_kept_between_calls_and_closed_after_an_error(tmp_path: Path) -> None:
    state = StateConfig(dir=tmp_path / "state")
    pool = RegistryPool()
    assert pool.call(state, lambda reg: reg, create=False) is None  # no file yet, none made
    assert not registry_path(state.dir).exists()
    first = pool.call(state, lambda reg: reg, create=True)
    assert first is not None and registry_path(state.dir).exists()
    assert pool.call(state, lambda reg: reg, create=False) is first  # the same connection

    def missing(reg: RegistryStore) -> None:
        reg.remove("nobody")

    with pytest.raises(PeerNotFound):
        pool.call(state, missing, create=False)
    with pytest.raises(Exception, match="closed"):
        first.peers()  # closed after its call raised
    second = pool.call(state, lambda reg: reg, create=False)
    assert second is not None and second is not first
    assert second.peers() == []

    moved = StateConfig(dir=tmp_path / "other")  # a reload changed [state]
    third = pool.call(moved, lambda reg: reg, create=True)
    assert third is not second
    with pytest.raises(Exception, match="closed"):
        second.peers()

    pool.close()
    with pytest.raises(Exception, match="closed"):
        third.peers()


def test_calls_at_once_get_a_connection_each_from_any_thread(tmp_path: Path) -> None:
    state = StateConfig(dir=tmp_path / "state")
    pool = RegistryPool()
    both = threading.Barrier(2, timeout=10)
    used: list[RegistryStore] = []

    def hold(reg: RegistryStore) -> None:
        used.append(reg)
        both.wait()  # the other call is under way too

    threads = [
        threading.Thread(target=pool.call, args=(state, hold), kwargs={"create": True})
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(used) == 2 and used[0] is not used[1]
    # kept, and usable from this thread (the worker threads that opened them are gone)
    assert pool.call(state, lambda reg: reg in used and reg.peers() == [], create=False)
    pool.close()
    for reg in used:
        with pytest.raises(Exception, match="closed"):
            reg.peers()
