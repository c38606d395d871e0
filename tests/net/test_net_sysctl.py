"""Forwarding sysctls: on, remembered, restored; on stand-in files, then in a namespace."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support.netlab import Netns

from trivpn.net import sysctl

NsCall = Callable[..., dict[str, Any]]

V4 = sysctl.IPV4_FORWARDING
V6 = sysctl.IPV6_FORWARDING


@pytest.fixture
def fake_proc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    v4, v6 = tmp_path / "ip_forward", tmp_path / "forwarding"
    v4.write_text("0\n")
    v6.write_text("0\n")
    monkeypatch.setattr(sysctl, "IPV4_FORWARDING", str(v4))
    monkeypatch.setattr(sysctl, "IPV6_FORWARDING", str(v6))
    return v4, v6


def test_enable_and_restore(fake_proc: tuple[Path, Path]) -> None:
    v4, v6 = fake_proc
    saved = sysctl.enable_forwarding(ipv4=True, ipv6=True)
    assert saved == {str(v4): "0", str(v6): "0"}
    assert (v4.read_text(), v6.read_text()) == ("1", "1")
    sysctl.restore(saved)
    assert (v4.read_text(), v6.read_text()) == ("0", "0")


def test_only_the_asked_family_is_touched(fake_proc: tuple[Path, Path]) -> None:
    v4, v6 = fake_proc
    assert sysctl.enable_forwarding(ipv4=False, ipv6=True) == {str(v6): "0"}
    assert (v4.read_text(), v6.read_text()) == ("0\n", "1")


def test_already_on_is_not_recorded_so_restore_leaves_it_on(
    fake_proc: tuple[Path, Path],
) -> None:
    v4, v6 = fake_proc
    v4.write_text("1\n")
    saved = sysctl.enable_forwarding(ipv4=True, ipv6=True)
    assert saved == {str(v6): "0"}
    sysctl.restore(saved)
    assert (v4.read_text(), v6.read_text()) == ("1\n", "0")


def test_failure_rolls_back_what_was_changed(
    fake_proc: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    v4, _v6 = fake_proc
    monkeypatch.setattr(sysctl, "IPV6_FORWARDING", str(tmp_path / "missing" / "forwarding"))
    with pytest.raises(sysctl.SysctlError, match="missing/forwarding"):
        sysctl.enable_forwarding(ipv4=True, ipv6=True)
    assert v4.read_text() == "0"


def test_restore_tolerates_errors_and_logs(
    fake_proc: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    v4, _v6 = fake_proc
    missing = str(tmp_path / "gone" / "forwarding")
    with caplog.at_level(logging.WARNING, logger="trivpn.net.sysctl"):
        sysctl.restore({missing: "0", str(v4): "1"})
    assert v4.read_text() == "1"  # the later entry was still restored
    assert missing in caplog.text


@pytest.mark.root
def test_round_trip_in_a_namespace(make_netns: Callable[[str], Netns], ns_call: NsCall) -> None:
    ns, other = make_netns("tvsa"), make_netns("tvsb")
    for key in ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"):
        ns.run("sysctl", "-qw", f"{key}=0")
        other.run("sysctl", "-qw", f"{key}=0")

    saved = ns_call(ns, "sysctl.enable_forwarding", ipv4=True, ipv6=True)
    assert saved == {"ok": {V4: "0", V6: "0"}}
    assert ns.run("sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == "1"
    assert ns.run("sysctl", "-n", "net.ipv6.conf.all.forwarding").stdout.strip() == "1"
    # per namespace: the other one did not change
    assert other.run("sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == "0"

    assert ns_call(ns, "sysctl.restore", saved["ok"]) == {"ok": None}
    assert ns.run("sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == "0"
    assert ns.run("sysctl", "-n", "net.ipv6.conf.all.forwarding").stdout.strip() == "0"
