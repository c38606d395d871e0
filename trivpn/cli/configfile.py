"""The config file every server-side command reads: its option and its loading."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Final

from trivpn.cli.errors import EXIT_CONFIG, CliError

if TYPE_CHECKING:
    from trivpn.config import Config

DEFAULT_CONFIG: Final = "/etc/trivpn/trivpn.toml"


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", default=DEFAULT_CONFIG)


def load(path: str) -> Config:
    """The config at ``path``; its problems become one CliError (exit code 2)."""
    from trivpn.config import ConfigError, load_config  # here: `genkey` must not load cattrs

    try:
        return load_config(path)
    except ConfigError as e:
        raise CliError(str(e), EXIT_CONFIG) from e
