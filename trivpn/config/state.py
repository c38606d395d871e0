"""[state]: where trivpn keeps what it changes at runtime."""

import pathlib
from typing import Any, Final

import attrs

from trivpn.config.errors import InvalidValue
from trivpn.config.fields import BY_LOADER, Loaded

DEFAULT_STATE_DIR: Final = pathlib.Path("/var/lib/trivpn")


@attrs.frozen(kw_only=True)
class StateConfig:
    """What trivpn changes at runtime and keeps across restarts: the peer registry."""

    # read by load_state_dir: relative to the config file's directory, like the key files
    dir: pathlib.Path = attrs.field(default=DEFAULT_STATE_DIR, metadata={BY_LOADER: True})


def load_state_dir(table: dict[str, Any], base_dir: pathlib.Path | None) -> Loaded:
    value = table.pop("dir", None)
    if value is None:
        return {}, []
    if not isinstance(value, str) or not value or "\0" in value:
        allowed = 'expected the path of a directory, e.g. "/var/lib/trivpn"'
        return {}, [("dir", InvalidValue(value, allowed))]
    path = pathlib.Path(value)
    return {"dir": path if base_dir is None else base_dir / path}, []
