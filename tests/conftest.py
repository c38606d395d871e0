"""Shared test set-up.

Tests marked ``root`` build their own network namespaces. Outside CI they skip when not
root; in CI (``CI`` set) a missing privilege fails them, and any skip fails the run, because
a skipped test is not a passing test.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the shared helpers: `from support import netlab`

IN_CI = bool(os.environ.get("CI"))


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("root") and os.geteuid() != 0:
        if IN_CI:
            pytest.fail("this test needs root and network namespaces; CI must run it")
        pytest.skip("needs root and network namespaces")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not IN_CI:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if skipped and exitstatus == 0:
        reporter.write_line(f"CI: {skipped} test(s) skipped; a skip in CI is a failure", red=True)
        session.exitstatus = 1
