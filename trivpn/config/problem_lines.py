"""cattrs' tree of errors -> one line per problem: ``<key path>: <bad value> — <allowed>``."""

import re
from typing import Any

import attrs
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError

from trivpn.config.errors import InvalidValue
from trivpn.config.fields import FILE_KEY, NOT_IN_FILE

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _join(path: str, key: str) -> str:
    if "." in key or "[" in key:  # already a path, from a cross-section check
        return f"{path}.{key}" if path else key
    shown = key if _BARE_KEY.fullmatch(key) else '"' + key.replace('"', '\\"') + '"'
    return f"{path}.{shown}" if path else shown


def _keys_of(cl: Any) -> list[str]:
    keys: list[str] = []
    for f in attrs.fields(cl):
        if not f.metadata.get(NOT_IN_FILE):
            keys.append(f.name)
        if FILE_KEY in f.metadata:
            keys.append(f.metadata[FILE_KEY])
    return keys


def describe(error: BaseException, path: str, hidden: bool = False) -> list[str]:
    """One line per problem in cattrs' tree of errors; `hidden` keeps secrets out of them."""
    lines: list[str] = []
    if isinstance(error, ClassValidationError):
        fields = attrs.fields_dict(error.cl)
        with_key, without_key = error.group_exceptions()
        for sub, note in with_key:
            field = fields.get(note.name)
            hide = hidden or (field is not None and not field.repr)
            lines += describe(sub, _join(path, note.name), hide)
        for sub in without_key:
            lines += describe(sub, path, hidden)
    elif isinstance(error, IterableValidationError):
        with_index, without_index = error.group_exceptions()
        for sub, inote in with_index:
            lines += describe(sub, f"{path}[{inote.index}]", hidden)
        for sub in without_index:
            lines += describe(sub, path, hidden)
    elif isinstance(error, ForbiddenExtraKeysError):
        allowed = ", ".join(_keys_of(error.cl))
        for key in sorted(error.extra_fields):
            lines.append(f"{_join(path, key)}: unknown key — allowed: {allowed}")
    elif isinstance(error, InvalidValue):
        shown = "(hidden)" if hidden and not error.shown_by_caller else error.shown
        lines.append(f"{path or '(top level)'}: {shown} — {error.allowed}")
    else:
        raise error  # not a bad value but a bug here: let it surface
    return lines
