"""The import contract of pyproject.toml ([tool.importlinter]): the real tree keeps it, and
a copy of the tree with one wrong import is refused with that import named.

Each copy is analysed with its directory first on PYTHONPATH, so lint-imports reads the
copy rather than the installed package.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "pyproject.toml"
# the `lint-imports` script, run by this interpreter wherever its bin/ directory is
_LINT = "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())"


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports with this repository's contracts on the trivpn package under ``root``."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-c", _LINT, "--no-cache", "--no-logo", str(CONFIG)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_tree_keeps_the_contract() -> None:
    done = lint_imports(REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Contracts: 3 kept, 0 broken." in done.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken", "named"),
    [
        (  # a lower layer reaching up
            "proto/ip.py",
            "from trivpn.dataplane import router",
            "Layers: imports point down only BROKEN",
            "trivpn.proto.ip -> trivpn.dataplane.router",
        ),
        (  # sibling layers that must not know each other
            "client/toyvpn.py",
            "from trivpn.daemon import server",
            "Layers: imports point down only BROKEN",
            "trivpn.client.toyvpn -> trivpn.daemon.server",
        ),
        (  # proto reading the clock
            "proto/toyvpn.py",
            "import time",
            "proto is sans-IO: no trio, sockets, clock or OS BROKEN",
            "trivpn.proto.toyvpn -> time",
        ),
        (  # a cycle inside one layer: main imports keys, keys imports main
            "cli/keys.py",
            "from trivpn.cli import main",
            "No import cycles between modules or packages BROKEN",
            ".keys -> .main",
        ),
    ],
)
def test_a_wrong_import_breaks_the_contract(
    tmp_path: Path, module: str, line: str, broken: str, named: str
) -> None:
    shutil.copytree(
        REPO / "trivpn", tmp_path / "trivpn", ignore=shutil.ignore_patterns("__pycache__")
    )
    with (tmp_path / "trivpn" / module).open("a") as f:
        f.write(f"\n{line}\n")
    done = lint_imports(tmp_path)
    assert done.returncode != 0
    assert broken in done.stdout
    assert named in done.stdout, done.stdout
