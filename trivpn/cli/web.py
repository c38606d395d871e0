"""`trivpn web passwd | totp enable | totp disable | token add | token remove | token list`:
the web admin's credentials, set before it serves (trivpn.control.web.credentials).

A secret is printed only where the operator must take it: a new token (alone on stdout, once)
and a new TOTP secret's URI and QR code. A password is read, never echoed or printed.
"""

from __future__ import annotations

import argparse
import getpass
import platform
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from trivpn.cli import configfile
from trivpn.cli.errors import EXIT_CONFIG, CliError
from trivpn.cli.keys import warn_if_world_readable_stdout

# imported by the commands: `trivpn genkey` builds these parsers too (tests/cli/test_imports.py)
if TYPE_CHECKING:
    from trivpn.control.web.credentials import WebCredentials


def add_parsers(sub: Any) -> None:
    """Register `web` and its subcommands on the top-level subparsers."""
    web = sub.add_parser("web", help="the web admin's password, TOTP and API tokens")
    wsub = web.add_subparsers(dest="web_command", required=True, metavar="WEB_COMMAND")

    p = wsub.add_parser(
        "passwd",
        help="set the admin password (asked twice on a terminal, else one line on stdin)",
    )
    configfile.add_config_option(p)
    p.set_defaults(func=cmd_passwd, logs=False)

    totp = wsub.add_parser("totp", help="the TOTP second factor of the admin's login")
    tsub = totp.add_subparsers(dest="totp_command", required=True, metavar="TOTP_COMMAND")
    p = tsub.add_parser("enable", help="make a new TOTP secret; print its URI and QR code")
    configfile.add_config_option(p)
    p.set_defaults(func=cmd_totp_enable, logs=False)
    p = tsub.add_parser("disable", help="log in with the password alone")
    configfile.add_config_option(p)
    p.set_defaults(func=cmd_totp_disable, logs=False)

    token = wsub.add_parser("token", help="API tokens (Authorization: Bearer)")
    ksub = token.add_subparsers(dest="token_command", required=True, metavar="TOKEN_COMMAND")
    p = ksub.add_parser("add", help="make a token; print it once (it is stored hashed)")
    p.add_argument("name", help="1 to 64 of A-Z a-z 0-9 _ . @ -")
    configfile.add_config_option(p)
    p.set_defaults(func=cmd_token_add, logs=False)
    p = ksub.add_parser("remove", help="revoke a token")
    p.add_argument("name")
    configfile.add_config_option(p)
    p.set_defaults(func=cmd_token_remove, logs=False)
    p = ksub.add_parser("list", help="token names and when they were made")
    configfile.add_config_option(p)
    p.set_defaults(func=cmd_token_list, logs=False)


@contextmanager
def _credentials(args: argparse.Namespace) -> Iterator[WebCredentials]:
    """The credentials of the config's state dir; their errors as one-line CliErrors."""
    from trivpn.control.web.credentials import CredentialsError, Refused, WebCredentials

    creds = WebCredentials(configfile.load(args.config).state.dir)
    try:
        yield creds
    except CredentialsError as e:
        raise CliError(str(e), EXIT_CONFIG if isinstance(e, Refused) else 1) from e


def _read_password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("New web admin password: ")
        if getpass.getpass("Again: ") != first:
            raise CliError("password: (hidden) — the two entries differ", EXIT_CONFIG)
        return first
    line = sys.stdin.readline()
    return line[:-2] if line.endswith("\r\n") else line.removesuffix("\n")


def cmd_passwd(args: argparse.Namespace) -> int:
    with _credentials(args) as creds:
        creds.set_password(_read_password())
    print(f"trivpn: web admin password set ({creds.directory})", file=sys.stderr)
    return 0


def cmd_totp_enable(args: argparse.Namespace) -> int:
    from trivpn.cli.qr import terminal_qr

    with _credentials(args) as creds:
        replaced = creds.totp_enabled()
        uri = creds.enable_totp(f"admin@{platform.node() or 'trivpn'}")
    warn_if_world_readable_stdout()
    sys.stdout.write(f"{uri}\n\n{terminal_qr(uri, colored=sys.stdout.isatty())}")
    note = " with a new secret (the old one no longer works)" if replaced else ""
    print(
        f"trivpn: TOTP enabled{note}: "
        "scan the code (or add the URI) in an authenticator app; the login asks for its code "
        "from now on",
        file=sys.stderr,
    )
    return 0


def cmd_totp_disable(args: argparse.Namespace) -> int:
    with _credentials(args) as creds:
        was = creds.disable_totp()
    print(f"trivpn: TOTP {'disabled' if was else 'was not enabled'}", file=sys.stderr)
    return 0


def cmd_token_add(args: argparse.Namespace) -> int:
    with _credentials(args) as creds:
        token = creds.add_token(args.name, time.time())
    warn_if_world_readable_stdout()
    print(token)
    print(f"trivpn: added token {args.name!r}; it is shown only now", file=sys.stderr)
    return 0


def cmd_token_remove(args: argparse.Namespace) -> int:
    with _credentials(args) as creds:
        creds.remove_token(args.name)
    print(f"trivpn: removed token {args.name!r}", file=sys.stderr)
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    from trivpn.cli.status import table

    with _credentials(args) as creds:
        tokens = creds.tokens()
    if tokens:
        print(table(["NAME", "CREATED"], [(t.name, t.created) for t in tokens]))
    return 0
