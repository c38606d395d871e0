"""Command line: `trivpn serve | check | status | genkey | genpsk | pubkey | toyvpn-connect | peer |
web`.

Each command group lives in its own module (serve, status, keys, toyvpn, peer, web), which adds
its parsers here. User mistakes become one clear line on stderr and an exit code (see
trivpn.cli.errors), never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from trivpn import __version__
from trivpn.cli import keys, peer, registry, serve, status, toyvpn, web
from trivpn.cli.errors import EXIT_BROKEN_PIPE, EXIT_CONFIG, CliError


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
        prog="trivpn", description="A VPN server for Linux: WireGuard and ToyVPN over one TUN."
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
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (
        serve,
        status,
        keys,
        toyvpn,
        peer,
        registry,
        web,
    ):  # the order `trivpn --help` lists them
        group.add_parsers(sub)
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
