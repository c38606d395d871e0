"""trivpn.cli.helpformat: argparse's help at the width shutil would give it, without shutil."""

import argparse
import shutil

import pytest

from trivpn.cli.helpformat import HelpFormatter, terminal_columns
from trivpn.cli.main import build_parser


@pytest.mark.parametrize("columns", [None, "100", "47", "0", "-3", "wide"])
def test_the_width_is_shutils(monkeypatch: pytest.MonkeyPatch, columns: str | None) -> None:
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    assert terminal_columns() == shutil.get_terminal_size().columns


@pytest.mark.parametrize("columns", ["60", "132"])
def test_help_reads_as_with_argparses_own_formatter(
    monkeypatch: pytest.MonkeyPatch, columns: str
) -> None:
    monkeypatch.setenv("COLUMNS", columns)
    ours = build_parser()
    assert ours.formatter_class is HelpFormatter
    theirs = build_parser()
    theirs.formatter_class = argparse.HelpFormatter
    assert ours.format_help() == theirs.format_help()
    assert max(map(len, ours.format_help().splitlines())) <= int(columns)
    with pytest.raises(SystemExit):
        ours.parse_args(["peer", "add", "--help"])
    peer_add = ours._subparsers._group_actions[0]._name_parser_map["peer"]  # type: ignore[union-attr]
    assert peer_add.formatter_class is HelpFormatter  # the subcommands' parsers use it too
