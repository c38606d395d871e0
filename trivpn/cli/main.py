"""Command line: `trivpn serve | check | status | genkey | genpsk | pubkey | toyvpn-connect | peer |
web`.

Each command group lives in its own module (serve, status, keys, toyvpn, peer, registry, web),
imported only when one of its commands runs (trivpn.cli.subcommands): a command's start-up is
mostly imports (issue 13). User mistakes become one clear line on stderr and an exit code (see
trivpn.cli.errors), never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from functools import partial
from typing import Final, Protocol

from trivpn import __version__
from trivpn.cli.errors import EXIT_BROKEN_PIPE, EXIT_CONFIG, CliError
from trivpn.cli.helpformat import HelpFormatter
from trivpn.cli.subcommands import add_subcommands

# Each command and its one-line help, in the order `trivpn --help` lists them.
COMMANDS: Final = (
    ("serve", "run the VPN server in the foreground"),
    ("check", "validate a config file and exit"),
    ("status", "show the running server: peers, sessions, transfer"),
    ("genkey", "print a new WireGuard private key (as `wg genkey`)"),
    ("genpsk", "print a new preshared key (as `wg genpsk`)"),
    ("pubkey", "private key on stdin → public key (as `wg pubkey`)"),
    ("toyvpn-connect", "connect to a ToyVPN server (Linux client)"),
    ("peer", "add, list, show or remove WireGuard peers (the registry)"),
    ("registry", "move the peer registry (SQLite -> PostgreSQL)"),
    ("web", "the web admin's password, TOTP and API tokens"),
)


class CommandGroup(Protocol):
    """A module of commands (trivpn.cli.keys, …)."""

    def add_arguments(self, command: str, parser: argparse.ArgumentParser) -> None:
        """`command`'s arguments and its function (``func``) on its parser."""


def _group(command: str) -> CommandGroup:
    """The module of `command`, imported now that it runs. Import statements, not importlib:
    lint-imports sees them."""
    if command in ("serve", "check"):
        from trivpn.cli import serve

        return serve
    if command == "status":
        from trivpn.cli import status

        return status
    if command in ("genkey", "genpsk", "pubkey"):
        from trivpn.cli import keys

        return keys
    if command == "toyvpn-connect":
        from trivpn.cli import toyvpn

        return toyvpn
    if command == "peer":
        from trivpn.cli import peer

        return peer
    if command == "registry":
        from trivpn.cli import registry

        return registry
    assert command == "web", command
    from trivpn.cli import web

    return web


def _add_arguments(command: str, parser: argparse.ArgumentParser) -> None:
    _group(command).add_arguments(command, parser)


def _setup_logging(level: str, log_format: str = "human") -> None:
    import logging  # here: a command that logs nothing does not load it (issue 13)

    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        from trivpn.cli.logfmt import JsonFormatter

        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trivpn",
        description="A VPN server for Linux: WireGuard and ToyVPN over one TUN.",
        formatter_class=HelpFormatter,  # its subcommands' too: theirs is taken from here
    )
    parser.add_argument("--version", action="version", version=f"trivpn {__version__}")
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    parser.add_argument(
        "--log-format",
        default="human",
        choices=["human", "json"],
        help="human-readable lines (default) or one JSON object per line for log collectors",
    )
    # A command whose parser sets logs=False logs nothing, so logging is neither imported nor
    # configured for it (~10 ms of start-up); tests/cli/test_imports.py holds it to that.
    parser.set_defaults(logs=True)
    sub = add_subcommands(parser, dest="command", required=True, metavar="COMMAND")
    for command, help in COMMANDS:
        sub.add_command(command, help, partial(_add_arguments, command))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _run(argv)
    except BrokenPipeError:
        # The reader went away (`trivpn peer list | head`): stop quietly, as wg(8) does. wg
        # dies of SIGPIPE, which a shell reports as 141; Python ignores SIGPIPE, so say the
        # same with the exit code. Later writes (the interpreter's final flush) go nowhere.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.logs:
        _setup_logging(args.log_level, args.log_format)
    try:
        code: int = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
    except CliError as e:
        # Config problems are already "key: value — what is allowed" lines; print them bare.
        print(str(e) if e.code == EXIT_CONFIG else f"trivpn: {e}", file=sys.stderr)
        return e.code
    return code
