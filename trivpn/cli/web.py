"""`trivpn web passwd | totp enable | totp disable | token add | token remove | token list`:
the web admin's credentials, set before it serves (trivpn.control.web.credentials).

A secret is printed only where the operator must take it: a new token (alone on stdout, once)
and a new TOTP secret's URI and QR code. A password is read, never echoed or printed.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING

from trivpn.cli import configfile
from trivpn.cli.errors import EXIT_CONFIG, CliError
from trivpn.cli.keys import warn_if_world_readable_stdout
from trivpn.cli.subcommands import add_subcommands

# imported by the commands that use them: `web token list` needs neither the QR code nor the
# host name (tests/cli/test_imports.py)
if TYPE_CHECKING:
    from trivpn.control.web.credentials import WebCredentials


def add_arguments(command: str, parser: argparse.ArgumentParser) -> None:
    """`web` and its subcommands."""
    wsub = add_subcommands(parser, dest="web_command", required=True, metavar="WEB_COMMAND")
    wsub.add_command(
        "passwd",
        "set the admin password (asked twice on a terminal, else one line on stdin)",
        partial(_config_only, cmd_passwd),
    )
    wsub.add_command("totp", "the TOTP second factor of the admin's login", _totp_arguments)
    wsub.add_command("token", "API tokens (Authorization: Bearer)", _token_arguments)


def _config_only(func: Callable[[argparse.Namespace], int], p: argparse.ArgumentParser) -> None:
    configfile.add_config_option(p)
    p.set_defaults(func=func, logs=False)


def _named(
    func: Callable[[argparse.Namespace], int], p: argparse.ArgumentParser, help: str | None = None
) -> None:
    p.add_argument("name", help=help)
    _config_only(func, p)


def _totp_arguments(totp: argparse.ArgumentParser) -> None:
    tsub = add_subcommands(totp, dest="totp_command", required=True, metavar="TOTP_COMMAND")
    tsub.add_command(
        "enable",
        "make a new TOTP secret; print its URI and QR code",
        partial(_config_only, cmd_totp_enable),
    )
    tsub.add_command(
        "disable", "log in with the password alone", partial(_config_only, cmd_totp_disable)
    )


def _token_arguments(token: argparse.ArgumentParser) -> None:
    ksub = add_subcommands(token, dest="token_command", required=True, metavar="TOKEN_COMMAND")
    ksub.add_command(
        "add",
        "make a token; print it once (it is stored hashed)",
        partial(_named, cmd_token_add, help="1 to 64 of A-Z a-z 0-9 _ . @ -"),
    )
    ksub.add_command("remove", "revoke a token", partial(_named, cmd_token_remove))
    ksub.add_command(
        "list", "token names and when they were made", partial(_config_only, cmd_token_list)
    )


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
    import getpass

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
    import platform

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
