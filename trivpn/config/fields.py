"""Field metadata: how the attrs fields of a section tell the loader to read their keys."""

from collections.abc import Callable
from typing import Any, Final

from trivpn.config.errors import Problems

Hook = Callable[[Any, Any], Any]  # cattrs' structure hook: (value, target type) -> object


# attrs field metadata keys
CHECK: Final = "trivpn.check"  # a value check run right after the key is structured
FILE_KEY: Final = "trivpn.file_key"  # a sibling key naming a file that holds this value
NOT_IN_FILE: Final = "trivpn.not_in_file"  # set by the loader, never read from TOML
HOOK: Final = "trivpn.hook"  # a structure hook for this key instead of its type's
BY_LOADER: Final = "trivpn.by_loader"  # a TOML key that the section's loader reads, not cattrs


def checked(check: Callable[[Any], None]) -> dict[str, object]:
    return {CHECK: check}


def hooked(hook: Hook, check: Callable[[Any], None] | None = None) -> dict[str, object]:
    return {HOOK: hook} if check is None else {HOOK: hook, CHECK: check}


# A loader takes the keys it owns out of a section's table and returns the values of their
# fields, set after cattrs has structured the rest, and the problems it found.
Loaded = tuple[dict[str, Any], Problems]
