"""Shared test set-up.

Tests marked ``root`` build their own network namespaces; tests marked ``postgres`` start a
PostgreSQL server (tests/support/postgres.py). Outside CI they skip when not root (or without
the server's binaries); in CI (``CI`` set) a missing privilege fails them, and any skip fails
the run, because a skipped test is not a passing test.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the shared helpers: `from support import netlab`

from support import postgres  # noqa: E402  (after the path above)

IN_CI = bool(os.environ.get("CI"))


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("root") and os.geteuid() != 0:
        if IN_CI:
            pytest.fail("this test needs root and network namespaces; CI must run it")
        pytest.skip("needs root and network namespaces")
    if item.get_closest_marker("postgres") and not postgres.available():
        if IN_CI:
            pytest.fail(f"this test needs PostgreSQL ({postgres.BIN}); CI must run it")
        pytest.skip("needs PostgreSQL: tools/setup installs it")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not IN_CI:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if skipped and exitstatus == 0:
        reporter.write_line(f"CI: {skipped} test(s) skipped; a skip in CI is a failure", red=True)
        session.exitstatus = 1
