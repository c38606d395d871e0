"""`trivpn toyvpn-connect`: the Linux ToyVPN client."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeVar

from trivpn.cli.errors import EXIT_CONFIG, CliError, run_reporting
from trivpn.proto.endpoints import EndpointSyntaxError, parse_host_port

T = TypeVar("T")


def add_arguments(command: str, p: argparse.ArgumentParser) -> None:
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


def _parse_hostport(text: str) -> tuple[str, int]:
    try:
        return parse_host_port(text, names=True)
    except EndpointSyntaxError as e:
        raise CliError(f"server: {text!r} — {e} (HOST:PORT, e.g. 198.51.100.1:8000)", 2) from None


def _check(option: str, value: T, check: Callable[[T], None]) -> None:
    """The config's own check of the same kind of value, its problem a usage error."""
    from trivpn.config import InvalidValue

    try:
        check(value)
    except InvalidValue as e:
        raise CliError(f"{option}: {e}", EXIT_CONFIG) from None


def cmd_toyvpn_connect(args: argparse.Namespace) -> int:
    from trivpn.client.toyvpn import ToyVpnConnection
    from trivpn.config.checks import check_ifname, check_seconds
    from trivpn.config.files import MAX_SECRET_FILE, read_regular_file

    host, port = _parse_hostport(args.server)
    _check("--tun", args.tun, check_ifname)
    _check("--keepalive", args.keepalive, check_seconds)
    _check("--quiet-timeout", args.quiet_timeout, check_seconds)
    if args.secret_file:
        try:
            secret = read_regular_file(args.secret_file, MAX_SECRET_FILE).removesuffix(b"\n")
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
    run_reporting(conn.run)
    return 0
