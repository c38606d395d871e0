"""argparse's help formatter, at the terminal's width as argparse finds it, without shutil.

argparse makes a formatter for every argument it adds (to check its metavar), and its
formatter imports shutil for `shutil.get_terminal_size` (with shutil: fnmatch, bz2, lzma,
zlib): a few milliseconds of every command's start-up, for a width that only --help uses
(issue 13). The width here is shutil's: $COLUMNS, else stdout's terminal, else 80.
"""

from __future__ import annotations

import argparse
import os
import sys

FALLBACK_COLUMNS = 80


def terminal_columns() -> int:
    """`shutil.get_terminal_size((80, 24)).columns`."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or FALLBACK_COLUMNS


class HelpFormatter(argparse.HelpFormatter):
    def __init__(
        self,
        prog: str,
        indent_increment: int = 2,
        max_help_position: int = 24,
        width: int | None = None,
    ) -> None:
        if width is None:  # as argparse sets it
            width = terminal_columns() - 2
        super().__init__(prog, indent_increment, max_help_position, width)
