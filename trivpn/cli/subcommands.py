"""Subcommands whose parsers are built only when one is chosen.

A command's start-up is mostly imports (issue 13): `trivpn genkey` must not import `peer add`'s
module to build a parser it will not use, nor build the parsers of every other command (each
costs about half a millisecond: argparse looks for its translations on disk). So a command is
registered by its name, its one-line help (all `--help` lists of it) and a function that adds
its arguments, which runs only when argparse meets that name on the command line.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

AddArguments = Callable[[argparse.ArgumentParser], None]

if TYPE_CHECKING:  # generic in typeshed only
    _SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]
else:
    _SubParsers = argparse._SubParsersAction


class LazySubcommands(_SubParsers):
    """The subparsers action of `add_subcommands`; its commands are added with `add_command`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending: dict[str, AddArguments] = {}
        # argparse checks a name against `choices` before it calls us: every registered
        # name, in order ("invalid choice: … (choose from …)" lists them), built or not
        self.choices = self._pending  # type: ignore[assignment]

    def add_command(self, name: str, help: str, add_arguments: AddArguments) -> None:
        """`name`, listed with `help`; `add_arguments(parser)` once the command is chosen."""
        self._pending[name] = add_arguments
        self._choices_actions.append(self._ChoicesPseudoAction(name, (), help))

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        assert isinstance(values, list)  # nargs=PARSER: the name, then the rest
        name = values[0]
        if name not in self._name_parser_map:
            self._pending[name](self.add_parser(name, formatter_class=parser.formatter_class))
        super().__call__(parser, namespace, values, option_string)


def add_subcommands(parser: argparse.ArgumentParser, **kwargs: Any) -> LazySubcommands:
    """``parser.add_subparsers(**kwargs)``, its parsers built on use (`LazySubcommands`)."""
    action = parser.add_subparsers(action=LazySubcommands, **kwargs)
    assert isinstance(action, LazySubcommands)
    return action
