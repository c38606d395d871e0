"""A section's TOML table -> its attrs class, field by field, with every bad key reported.

What cattrs' generated structure function (`cattrs.gen.make_dict_structure_fn` with detailed
validation and forbidden extra keys) does, without writing and compiling a function per class:
a config is structured once per process, where generating the code took longer than running
it (issue 13: ~1 ms a class, a tenth of `trivpn peer list`). The errors are cattrs' own, noted
as its generated code notes them, so `loader.describe` reads them unchanged.
"""

from collections.abc import Callable, Mapping
from typing import Any

import attrs
from cattrs.errors import AttributeValidationNote, ClassValidationError, ForbiddenExtraKeysError

from trivpn.config.values import Hook

StructureKeys = Callable[[Mapping[str, Any]], Any]


def structure_keys(cl: type, hooks: Mapping[str, Hook]) -> StructureKeys:
    """Structure `cl` from a table whose keys are the names in `hooks`, each by its hook (value,
    field type); a missing key with a default keeps it. Raises ClassValidationError holding
    one error per bad, missing or unknown key."""
    keyed = [
        (f.name, f.alias, f.type, f.default is attrs.NOTHING, hooks[f.name])
        for f in attrs.fields(cl)
        if f.name in hooks
    ]
    allowed = frozenset(hooks)
    where = f"Structuring class {cl.__qualname__} @ attribute "
    failed = f"While structuring {cl.__name__}"

    def structure(table: Mapping[str, Any]) -> Any:
        values: dict[str, Any] = {}
        errors: list[Exception] = []
        for name, alias, t, required, hook in keyed:
            if name not in table and not required:
                continue
            try:
                values[alias] = hook(table[name], t)  # KeyError: a required key is missing
            except Exception as e:
                e.add_note(AttributeValidationNote(where + name, name, t))
                errors.append(e)
        unknown = set(table) - allowed
        if unknown:
            errors.append(ForbiddenExtraKeysError("", cl, unknown))
        if errors:
            raise ClassValidationError(failed, errors, cl)
        try:
            return cl(**values)
        except Exception as e:
            raise ClassValidationError(failed, [e], cl) from e

    return structure
