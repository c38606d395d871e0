"""The junk of `tools/bench --mode flood` (tools/bench_floodgen.py) is dropped, each kind by the
check that is there to drop it, with nothing sent back; valid mac1 under load gets cookies."""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path
from types import ModuleType

import pytest

from trivpn.proto.wireguard import Device, Output

GENERATOR = Path(__file__).resolve().parents[3] / "tools" / "bench_floodgen.py"
SOURCE = ("192.0.2.6", 40000)


def _floodgen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_floodgen", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("kind", "counters"),
    [
        ("bad-mac1", {"bad_mac1": 200}),
        ("garbage", {"malformed": 200, "malformed_unknown_type": 200}),
        ("unknown-index", {"unknown_index": 200}),
    ],
)
def test_each_flood_is_dropped_by_its_check(kind: str, counters: dict[str, int]) -> None:
    device = Device(os.urandom(32), rng=os.urandom, wallclock=time.time)
    make = _floodgen().FLOODS[kind]
    out = Output()
    for _ in range(200):
        device.receive(make(device.public_key), SOURCE, 1.0, out)
    assert out.is_empty()
    assert dict(device.counters) == counters


def test_valid_mac1_flood_is_answered_with_cookies_once_under_load() -> None:
    device = Device(os.urandom(32), rng=os.urandom, wallclock=time.time, under_load_rate=10)
    make = _floodgen().FLOODS["valid-mac1"]
    out = Output()
    for _ in range(50):
        device.receive(make(device.public_key), SOURCE, 1.0, out)
    # the first ten are opened (and fail: no peer made them), the rest get a cookie reply
    assert device.counters["invalid_initiation"] == 10
    assert device.counters["cookie_sent"] == 40
    assert len(out.datagrams) == 40 and all(len(d) == 64 for d, _ in out.datagrams)
