"""`trivpn serve` and `trivpn check`: run the server, or only validate what it would run."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from trivpn.cli import configfile
from trivpn.cli.errors import EXIT_CONFIG, CliError, run_reporting

if TYPE_CHECKING:
    from trivpn.config import Config


def add_arguments(command: str, parser: argparse.ArgumentParser) -> None:
    """`serve` or `check`: the config file."""
    configfile.add_config_option(parser)
    parser.set_defaults(func=cmd_serve if command == "serve" else cmd_check)


def _system_problems(cfg: Config) -> list[str]:
    """What the config asks of this machine that it cannot give (checked by check and serve)."""
    from trivpn.daemon.egress import resolve_egress
    from trivpn.daemon.errors import ServerError
    from trivpn.daemon.keyfile import key_directory_problem

    problems: list[str] = []
    if cfg.nat.masquerade:
        try:
            resolve_egress(cfg)
        except ServerError as e:
            problems.append(str(e))
    if cfg.wireguard.enabled and (key := key_directory_problem(cfg.wireguard, cfg.state.dir)):
        problems.append(key)
    return problems


def _load_checked(path: str) -> Config:
    cfg = configfile.load(path)
    problems = _system_problems(cfg)
    if problems:
        raise CliError("\n".join(problems), EXIT_CONFIG)
    return cfg


def cmd_check(args: argparse.Namespace) -> int:
    _load_checked(args.config)
    print(f"{args.config}: OK")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from trivpn.daemon.server import Server

    cfg = _load_checked(args.config)
    run_reporting(Server(cfg).run)
    return 0
