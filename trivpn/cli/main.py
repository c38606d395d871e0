"""Command line: `trivpn serve | check | status | genkey | genpsk | pubkey | toyvpn-connect | peer`.

User mistakes become one clear line on stderr and an exit code (2 for a bad config or usage,
1 when the system refused), never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import stat
import sys
from collections.abc import Sequence
from pathlib import Path

import trio

from trivpn import __version__
from trivpn.config import Config, ConfigError, load_config

DEFAULT_CONFIG = "/etc/trivpn/trivpn.toml"
EXIT_FAILURE = 1
EXIT_CONFIG = 2


class CliError(Exception):
    """A failure explained in one line; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


def _setup_logging(level: str, log_format: str = "human") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        from trivpn.cli.logfmt import JsonFormatter

        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler])


def _load(path: str) -> Config:
    try:
        return load_config(path)
    except ConfigError as e:
        raise CliError(str(e), EXIT_CONFIG) from e


def _system_problems(cfg: Config) -> list[str]:
    """What the config asks of this machine that it cannot give (checked by check and serve)."""
    from trivpn.daemon.server import ServerError, resolve_egress

    if not cfg.nat.masquerade:
        return []
    try:
        resolve_egress(cfg)
    except ServerError as e:
        return [str(e)]
    return []


def _expected_errors() -> tuple[type[BaseException], ...]:
    from trivpn.control.metrics import MetricsError
    from trivpn.daemon.keyfile import KeyFileError
    from trivpn.daemon.server import ServerError
    from trivpn.net.link import LinkError
    from trivpn.net.nft import NftError
    from trivpn.net.tun import TunError

    return (ServerError, TunError, NftError, LinkError, KeyFileError, MetricsError, OSError)


def _unwrap(exc: BaseException) -> BaseException:
    """The single leaf of nested exception groups (trio wraps task errors), else ``exc``."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _run_reporting(fn: object) -> None:
    """trio.run(fn), turning the system's refusals into one-line CliErrors."""
    try:
        trio.run(fn)  # type: ignore[arg-type]
    except BaseException as e:
        leaf = _unwrap(e)
        if isinstance(leaf, _expected_errors()):
            raise CliError(str(leaf)) from e
        if isinstance(leaf, KeyboardInterrupt):
            return
        raise


def cmd_check(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    problems = _system_problems(cfg)
    if problems:
        raise CliError("\n".join(problems), EXIT_CONFIG)
    print(f"{args.config}: OK")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from trivpn.daemon.server import Server

    cfg = _load(args.config)
    problems = _system_problems(cfg)
    if problems:
        raise CliError("\n".join(problems), EXIT_CONFIG)
    _run_reporting(Server(cfg).run)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    import time

    from trivpn.cli import status
    from trivpn.control import status_socket

    cfg = _load(args.config)
    path = status_socket.socket_path(cfg.interface.name)
    try:
        document = status_socket.query_status(path)
    except status_socket.ControlUnavailable as e:
        raise CliError(f"status of {cfg.interface.name}: {e}") from e
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        sys.stdout.write(status.render(document, time.time()))
    return 0


def _parse_hostport(text: str) -> tuple[str, int]:
    from trivpn.proto.endpoints import EndpointSyntaxError, parse_host_port

    try:
        return parse_host_port(text, names=True)
    except EndpointSyntaxError as e:
        raise CliError(f"server: {text!r} — {e} (HOST:PORT, e.g. 198.51.100.1:8000)", 2) from None


def cmd_toyvpn_connect(args: argparse.Namespace) -> int:
    from trivpn.client.toyvpn import ToyVpnConnection

    host, port = _parse_hostport(args.server)
    if args.secret_file:
        try:
            secret = Path(args.secret_file).read_bytes().removesuffix(b"\n")
        except OSError as e:
            raise CliError(f"--secret-file: {args.secret_file!r} — {e.strerror}", 2) from e
    else:
        secret = args.secret.encode()
    if not secret:
        raise CliError("--secret or --secret-file is required", 2)
    try:
        conn = ToyVpnConnection(
            host,
            port,
            secret,
            tun_name=args.tun,
            keepalive=args.keepalive,
            quiet_timeout=args.quiet_timeout,
        )
    except OSError as e:
        raise CliError(f"server: {args.server!r} — {e}", 2) from e
    _run_reporting(conn.run)
    return 0


def _warn_if_world_readable_stdout() -> None:
    """Like wg(8): a key written to a file others can read deserves a warning."""
    try:
        st = os.fstat(sys.stdout.fileno())
    except (OSError, ValueError):
        return
    if stat.S_ISREG(st.st_mode) and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        print(
            "Warning: writing to world accessible file.\nConsider setting the umask to 077 "
            "and trying again.",
            file=sys.stderr,
        )


def cmd_genkey(args: argparse.Namespace) -> int:
    from trivpn.proto.wireguard import keys

    _warn_if_world_readable_stdout()
    print(keys.genpsk() if args.command == "genpsk" else keys.genkey())
    return 0


def cmd_pubkey(args: argparse.Namespace) -> int:
    from trivpn.proto.wireguard import keys

    try:
        print(keys.pubkey(sys.stdin.read().strip()))
    except ValueError as e:
        raise CliError(f"pubkey: {e}") from e
    return 0


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
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run the VPN server in the foreground")
    p.add_argument("-c", "--config", default=DEFAULT_CONFIG)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("check", help="validate a config file and exit")
    p.add_argument("-c", "--config", default=DEFAULT_CONFIG)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("status", help="show the running server: peers, sessions, transfer")
    p.add_argument("-c", "--config", default=DEFAULT_CONFIG)
    p.add_argument("--json", action="store_true", help="the server's status document as JSON")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("genkey", help="print a new WireGuard private key (as `wg genkey`)")
    p.set_defaults(func=cmd_genkey)
    p = sub.add_parser("genpsk", help="print a new preshared key (as `wg genpsk`)")
    p.set_defaults(func=cmd_genkey)
    p = sub.add_parser("pubkey", help="private key on stdin → public key (as `wg pubkey`)")
    p.set_defaults(func=cmd_pubkey)

    p = sub.add_parser("toyvpn-connect", help="connect to a ToyVPN server (Linux client)")
    p.add_argument("server", metavar="HOST:PORT")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--secret")
    group.add_argument("--secret-file")
    p.add_argument("--tun", default="toyvpn0", help="TUN device name (default toyvpn0)")
    p.add_argument("--keepalive", type=float, default=15.0, help="seconds (default 15)")
    p.add_argument(
        "--quiet-timeout",
        type=float,
        default=60.0,
        help="reconnect after this many seconds without hearing from the server (default 60)",
    )
    p.set_defaults(func=cmd_toyvpn_connect)

    from trivpn.cli import peer  # imports this module: not at the top

    peer.add_parsers(sub, DEFAULT_CONFIG)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.log_level, args.log_format)
    try:
        code: int = args.func(args)
    except CliError as e:
        # Config problems are already "key: value — what is allowed" lines; print them bare.
        print(str(e) if e.code == EXIT_CONFIG else f"trivpn: {e}", file=sys.stderr)
        return e.code
    return code
