"""Reading a configuration: the cattrs converter, the tiers of checks, one line per problem,
the entry points."""

import os
import pathlib
import re
import tomllib
from collections.abc import Callable, Mapping
from typing import Any, Final

import attrs
import cattrs
from cattrs.errors import (
    AttributeValidationNote,
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
)

from trivpn.config.errors import ConfigError, InvalidValue, Problems
from trivpn.config.fields import structure_keys as fields_structure_keys
from trivpn.config.files import (
    MAX_CONFIG_FILE,
    Loaded,
    load_private_key,
    load_state,
    load_web_tls,
    read_regular_file,
    read_secret_file,
)
from trivpn.config.root import Config, config_problems
from trivpn.config.sections import (
    InterfaceConfig,
    StateConfig,
    ToyVpnConfig,
    WebConfig,
    interface_problems,
    state_problems,
    toyvpn_problems,
)
from trivpn.config.values import (
    BY_LOADER,
    CHECK,
    FILE_KEY,
    HOOK,
    NOT_IN_FILE,
    VALUE_HOOKS,
    Endpoint,
    Hook,
    PublicEndpoint,
    is_tuple_of_any_length,
    tuple_hook,
)
from trivpn.config.wireguard import WireGuardConfig, wireguard_problems


def _is_section(t: Any) -> bool:
    return attrs.has(t) and t not in (Endpoint, PublicEndpoint)


def _noted(error: Exception, key: str, cl: type) -> Exception:
    error.add_note(AttributeValidationNote(f"{cl.__qualname__} @ {key}", key, object))
    return error


_SECTION_CHECKS: Final[Mapping[type, Callable[[Any], Problems]]] = {
    InterfaceConfig: interface_problems,
    ToyVpnConfig: toyvpn_problems,
    StateConfig: state_problems,
    WireGuardConfig: wireguard_problems,
    Config: config_problems,
}


_LOADERS: Final[Mapping[type, Callable[[dict[str, Any], pathlib.Path | None], Loaded]]] = {
    WireGuardConfig: load_private_key,
    StateConfig: load_state,
    WebConfig: load_web_tls,
}


def _missing_keys_named(error: ClassValidationError, cl: type) -> list[Exception]:
    """cattrs' errors, with its KeyError for a missing required key made one of ours."""
    errors: list[Exception] = []
    for sub in error.exceptions:
        notes = [n for n in getattr(sub, "__notes__", ()) if isinstance(n, AttributeValidationNote)]
        if isinstance(sub, KeyError) and notes:
            sub = _noted(InvalidValue(None, "required", shown="(not set)"), notes[0].name, cl)
        errors.append(sub)
    return errors


def _section_hook(cl: Any, conv: cattrs.BaseConverter, base_dir: pathlib.Path | None) -> Hook:
    attrs.resolve_types(cl)
    fields = attrs.fields(cl)
    hooks: dict[str, Hook] = {}
    for f in fields:
        if f.metadata.get(NOT_IN_FILE) or f.metadata.get(BY_LOADER):
            continue
        hook = f.metadata.get(HOOK) or conv.get_structure_hook(f.type)
        hooks[f.name] = _then_check(hook, f.metadata[CHECK]) if CHECK in f.metadata else hook
    structure_keys = fields_structure_keys(cl, hooks)
    file_keys = {f.metadata[FILE_KEY]: f.name for f in fields if FILE_KEY in f.metadata}
    section_check = _SECTION_CHECKS.get(cl)
    loader = _LOADERS.get(cl)

    def structure(value: object, _: Any) -> Any:
        if not isinstance(value, dict):
            raise InvalidValue(value, "expected a table: a [section] or { key = value, ... }")
        table = dict(value)
        errors: list[Exception] = []
        for file_key, name in file_keys.items():
            if file_key not in table:
                continue
            path = table.pop(file_key)
            try:
                if name in table:
                    raise InvalidValue(path, f"set either {name} or {file_key}, not both")
                table[name] = read_secret_file(path, base_dir)
            except InvalidValue as e:
                errors.append(_noted(e, file_key, cl))
        loaded: dict[str, Any] = {}
        if loader is not None:
            loaded, load_problems = loader(table, base_dir)
            errors += [_noted(e, key, cl) for key, e in load_problems]
        try:
            section = structure_keys(table)
        except ClassValidationError as e:
            errors += _missing_keys_named(e, cl)
        if errors:
            raise ClassValidationError(f"While structuring {cl.__name__}", errors, cl)
        section = attrs.evolve(section, **loaded)
        problems = section_check(section) if section_check else []
        if problems:
            noted = [_noted(e, key, cl) for key, e in problems]
            raise ClassValidationError(f"While checking {cl.__name__}", noted, cl)
        return section

    return structure


def _then_check(hook: Hook, check: Callable[[Any], None]) -> Hook:
    def structure(value: object, t: Any) -> Any:
        result = hook(value, t)
        check(result)
        return result

    return structure


def _converter(base_dir: pathlib.Path | None) -> cattrs.BaseConverter:
    # the base converter: every class is structured by a hook registered here, and
    # cattrs.Converter's own hooks generate code that a single use does not repay
    conv = cattrs.BaseConverter(detailed_validation=True)
    for t, hook in VALUE_HOOKS.items():
        conv.register_structure_hook(t, hook)
    conv.register_structure_hook_factory(is_tuple_of_any_length, lambda t: tuple_hook(t, conv))
    conv.register_structure_hook_factory(_is_section, lambda t: _section_hook(t, conv, base_dir))
    return conv


# --- cattrs' tree of errors -> one line per problem ----------------------------------------

# patterns, not compiled at import: `re` compiles (and caches) them when a problem is described
_BARE_KEY: Final = r"[A-Za-z0-9_-]+"


def _join(path: str, key: str) -> str:
    if "." in key or "[" in key:  # already a path, from a cross-section check
        return f"{path}.{key}" if path else key
    shown = key if re.fullmatch(_BARE_KEY, key) else '"' + key.replace('"', '\\"') + '"'
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


# --- entry points ---------------------------------------------------------------------------

_TOML_POSITION: Final = r"(?P<msg>.*) \(at line (?P<line>\d+), column (?P<column>\d+)\)"


def _syntax_problem(source: str, error: tomllib.TOMLDecodeError) -> str:
    text = str(error)
    if m := re.fullmatch(_TOML_POSITION, text):
        return f"{source}: TOML syntax error at line {m['line']}, column {m['column']}: {m['msg']}"
    if text.endswith(" (at end of document)"):
        return f"{source}: TOML syntax error at end of document: {text[:-21]}"
    return f"{source}: TOML syntax error: {text}"


def parse_config(
    text: str, *, source: str = "<string>", base_dir: pathlib.Path | None = None
) -> Config:
    """Parse TOML text; relative file keys (secret_file) resolve against `base_dir` (else the
    working directory). Raises ConfigError listing every problem found."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([_syntax_problem(source, e)]) from None
    except RecursionError:
        raise ConfigError([f"{source}: TOML nested too deeply"]) from None
    try:
        config = _converter(base_dir).structure(data, Config)
    except (cattrs.BaseValidationError, InvalidValue) as e:
        raise ConfigError(describe(e, "")) from None
    return attrs.evolve(config, source=source)


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and parse a config file; secret_file paths are relative to its directory."""
    file = pathlib.Path(path)
    try:
        raw = read_regular_file(file, MAX_CONFIG_FILE)
    except OSError as e:
        raise ConfigError([f"{file}: cannot read the config file — {e.strerror or e}"]) from None
    try:
        text = raw.decode()
    except UnicodeDecodeError as e:
        raise ConfigError([f"{file}: not UTF-8 text (bad byte at offset {e.start})"]) from None
    return parse_config(text, source=os.fspath(path), base_dir=file.absolute().parent)


def default_config() -> Config:
    """Every key at its default: the shipped conf/trivpn.toml with ToyVPN's secret removed and
    WireGuard off (the shipped file turns it on)."""
    return Config()
