"""`trivpn genkey | genpsk | pubkey`: WireGuard keys in wg(8)'s text format."""

from __future__ import annotations

import argparse
import os
import stat
import sys

from trivpn.cli.errors import CliError
from trivpn.proto.wireguard import keys


def add_arguments(command: str, parser: argparse.ArgumentParser) -> None:
    """`genkey`, `genpsk` or `pubkey`: no arguments."""
    parser.set_defaults(func=cmd_pubkey if command == "pubkey" else cmd_genkey, logs=False)


def warn_if_world_readable_stdout() -> None:
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
    warn_if_world_readable_stdout()
    print(keys.genpsk(os.urandom) if args.command == "genpsk" else keys.genkey(os.urandom))
    return 0


def cmd_pubkey(args: argparse.Namespace) -> int:
    try:
        print(keys.pubkey(sys.stdin.read().strip()))
    except ValueError as e:
        raise CliError(f"pubkey: {e}") from e
    return 0
