"""Subcommands built on use (trivpn.cli.subcommands): only the chosen command's parser is built,
and the parsers read as argparse's own would (help, usage errors); then the whole `trivpn`
tree: every command in it can be built and shows its help."""

from __future__ import annotations

import argparse

import pytest

from trivpn.cli.main import COMMANDS, build_parser
from trivpn.cli.subcommands import LazySubcommands, add_subcommands


def toy() -> tuple[argparse.ArgumentParser, list[str]]:
    """`toy alpha X` and `toy beta gamma [--y Y]`; the list records which parsers were built."""
    built: list[str] = []

    def alpha(p: argparse.ArgumentParser) -> None:
        built.append("alpha")
        p.add_argument("x")

    def gamma(p: argparse.ArgumentParser) -> None:
        built.append("gamma")
        p.add_argument("--y")

    def beta(p: argparse.ArgumentParser) -> None:
        built.append("beta")
        add_subcommands(p, dest="sub", required=True, metavar="SUB").add_command(
            "gamma", "the third", gamma
        )

    parser = argparse.ArgumentParser(prog="toy")
    commands = add_subcommands(parser, dest="command", required=True, metavar="COMMAND")
    commands.add_command("alpha", "the first", alpha)
    commands.add_command("beta", "the second", beta)
    return parser, built


def test_only_the_chosen_command_is_built_and_only_once() -> None:
    parser, built = toy()
    assert vars(parser.parse_args(["alpha", "1"])) == {"command": "alpha", "x": "1"}
    assert built == ["alpha"]
    assert vars(parser.parse_args(["beta", "gamma", "--y", "2"])) == {
        "command": "beta",
        "sub": "gamma",
        "y": "2",
    }
    assert vars(parser.parse_args(["alpha", "3"]))["x"] == "3"
    assert built == ["alpha", "beta", "gamma"]  # alpha's parser served twice


def test_help_lists_every_command_unbuilt(capsys: pytest.CaptureFixture[str]) -> None:
    parser, built = toy()
    with pytest.raises(SystemExit) as exit:
        parser.parse_args(["--help"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    assert "COMMAND\n    alpha     the first\n    beta      the second\n" in out
    assert built == []


def test_usage_errors_read_as_argparse_s_own(capsys: pytest.CaptureFixture[str]) -> None:
    parser, built = toy()
    for argv, said in (
        (["delta"], "argument COMMAND: invalid choice: 'delta' (choose from 'alpha', 'beta')"),
        ([], "the following arguments are required: COMMAND"),
        (["beta"], "the following arguments are required: SUB"),
        (["alpha"], "the following arguments are required: x"),
    ):
        with pytest.raises(SystemExit) as exit:
            parser.parse_args(argv)
        assert exit.value.code == 2
        assert said in capsys.readouterr().err, argv
    assert built == ["beta", "alpha"]


def test_a_subcommand_s_help_shows_its_own_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    parser, built = toy()
    with pytest.raises(SystemExit):
        parser.parse_args(["beta", "gamma", "--help"])
    assert capsys.readouterr().out.startswith("usage: toy beta gamma [-h] [--y Y]\n")
    assert built == ["beta", "gamma"]


def _subcommands(parser: argparse.ArgumentParser) -> LazySubcommands | None:
    found = [a for a in parser._actions if isinstance(a, LazySubcommands)]
    return found[0] if found else None


def _command_lines(parser: argparse.ArgumentParser, path: list[str]) -> list[str]:
    """Every command under `path` as its words, each parsed with --help (which builds it)."""
    lines = []
    sub = _subcommands(parser)
    assert sub is not None
    for name in sub.choices:
        with pytest.raises(SystemExit) as exit:
            parser.parse_args([name, "--help"])
        assert exit.value.code == 0, [*path, name]
        child = sub._name_parser_map[name]
        assert child.prog == " ".join(["trivpn", *path, name])
        lines += _command_lines(child, [*path, name]) if _subcommands(child) else []
        lines.append(" ".join([*path, name]))
    return lines


def test_every_command_of_trivpn_builds_and_shows_its_help(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = build_parser()
    lines = _command_lines(parser, [])
    capsys.readouterr()
    assert [line for line in lines if " " not in line] == [name for name, _ in COMMANDS]
    for nested in ("peer add", "peer reset-usage", "registry migrate", "web totp enable"):
        assert nested in lines
    assert "web token list" in lines
