"""The registry's directory (state.dir): made 0700 when missing, one error when it cannot be."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from trivpn.registry import store


def test_a_missing_state_dir_is_made_private(tmp_path: Path) -> None:
    path = store.registry_path(tmp_path / "a" / "state")
    store.Registry.open(path, create=True).close()
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_state_dir_that_cannot_be_made_is_one_registry_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    directory = tmp_path / "file" / "state"
    with pytest.raises(store.StateDirUnusable) as raised:
        store.Registry.open(store.registry_path(directory), create=True)
    assert str(raised.value) == (f"{directory}: cannot create the state directory: Not a directory")
    assert (raised.value.directory, raised.value.reason) == (directory, "Not a directory")
    assert isinstance(raised.value, store.RegistryError)  # what the callers catch
