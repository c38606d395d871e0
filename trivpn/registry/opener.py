"""The registry of a config: the one place that picks its store from [state].

``[state] database`` set: the PostgreSQL database a fleet of gateways shares (its password
from ``database_password_file``); unset: the SQLite file ``peers.db`` in ``[state] dir``.
"""

from __future__ import annotations

from trivpn.config import StateConfig
from trivpn.registry.api import RegistryStore
from trivpn.registry.store import Registry, registry_path


def open_registry(
    state: StateConfig, *, create: bool, any_thread: bool = False
) -> RegistryStore | None:
    """The registry of this config, opened (and migrated); None when it is a SQLite file that
    does not exist and not ``create``. A PostgreSQL registry always exists: its schema is made
    in an empty database on first open.

    `any_thread`: the caller serialises its calls but makes them from changing worker threads
    (trio.to_thread). Raises RegistryError (trivpn.registry.store) when it cannot be used."""
    if state.database is not None:
        from trivpn.registry.pg_store import PgRegistry  # libpq only when a database is named

        return PgRegistry.open(state.database, password=state.database_password, node=state.node)
    path = registry_path(state.dir)
    if not create and not path.exists():
        return None
    return Registry.open(path, create=create, any_thread=any_thread)
