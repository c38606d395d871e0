"""`trivpn registry migrate --to URL`: the config's SQLite registry ([state] dir) copied into an
empty PostgreSQL database (trivpn.registry.migrate), before the config names it in
[state] database. The database's password comes from [state] database_password_file when the
config sets one; never from the command line, where `ps` shows it."""

from __future__ import annotations

import argparse
import sys
import time

from trivpn.cli import configfile
from trivpn.cli.errors import EXIT_CONFIG, CliError
from trivpn.cli.subcommands import add_subcommands


def add_arguments(command: str, parser: argparse.ArgumentParser) -> None:
    """`registry` and its subcommands."""
    rsub = add_subcommands(parser, dest="registry_command", required=True, metavar="COMMAND")
    rsub.add_command(
        "migrate",
        "copy the SQLite registry of [state] dir into an empty PostgreSQL database",
        _migrate_arguments,
    )


def _migrate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--to",
        required=True,
        metavar="URL",
        help="the database: a libpq URI or connection string, e.g. postgresql://trivpn@db/trivpn",
    )
    configfile.add_config_option(p)
    p.set_defaults(func=cmd_migrate, logs=False)


def cmd_migrate(args: argparse.Namespace) -> int:
    from trivpn.config import InvalidValue
    from trivpn.config.sections import structure_database
    from trivpn.registry.migrate import copy_registry
    from trivpn.registry.pg_store import PgRegistry, RegistryNotEmpty
    from trivpn.registry.store import Registry, RegistryError, registry_path

    cfg = configfile.load(args.config)
    try:
        url = structure_database(args.to, None)
    except InvalidValue as e:
        raise CliError(f"--to: {e.allowed}", EXIT_CONFIG) from None
    if url is None:
        raise CliError("--to: expected a PostgreSQL URI or connection string", EXIT_CONFIG)
    path = registry_path(cfg.state.dir)
    try:
        with (
            Registry.open(path, create=False) as source,
            PgRegistry.open(
                url, password=cfg.state.database_password, node=cfg.state.node
            ) as target,
        ):
            copied = copy_registry(source, target, time.time())
            where = target.where
    except RegistryNotEmpty as e:
        raise CliError(str(e), EXIT_CONFIG) from None
    except RegistryError as e:
        raise CliError(str(e), 1) from None
    print(
        f"trivpn: copied {copied.peers} peers ({copied.addresses} addresses, {copied.routes} "
        f"routes) and {copied.usage} usage records from {path} to {where}",
        file=sys.stderr,
    )
    return 0
