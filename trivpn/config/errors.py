"""What goes wrong in a configuration: `ConfigError` for the user, `InvalidValue` per key."""

from collections.abc import Mapping, Sequence
from typing import Final

_SHOW_LIMIT: Final = 80


class ConfigError(Exception):
    """The configuration cannot be used; `problems` holds one line per problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))

    def __str__(self) -> str:
        return "\n".join(self.problems)


class InvalidValue(ValueError):
    """One rejected value; whoever catches it knows the key path and prefixes it."""

    def __init__(self, value: object, allowed: str, *, shown: str | None = None) -> None:
        self.shown = show(value) if shown is None else shown
        self.shown_by_caller = shown is not None  # trusted text, shown even for a secret
        self.allowed = allowed
        super().__init__(f"{self.shown} — {allowed}")


def show(value: object, depth: int = 0) -> str:
    """Render a TOML or structured value the way the user wrote it, bounded in size."""
    if depth > 3:
        text = "…"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float) and value.is_integer():
        text = str(int(value))  # as the user most likely wrote it
    elif isinstance(value, str | int | float):
        text = repr(value)
    elif isinstance(value, list | tuple):
        text = "[" + ", ".join(show(v, depth + 1) for v in value) + "]"
    elif isinstance(value, Mapping):
        text = "{" + ", ".join(f"{k} = {show(v, depth + 1)}" for k, v in value.items()) + "}"
    else:  # addresses, networks, endpoints, dates: their text form
        text = repr(str(value))
    return text if len(text) <= _SHOW_LIMIT else text[: _SHOW_LIMIT - 1] + "…"


# (key path relative to the checked object, problem). Only a problem keyed by a plain field
# name is hidden when the field is secret (repr=False); deeper keys must pass `shown=`.
Problems = list[tuple[str, InvalidValue]]
