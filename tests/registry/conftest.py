"""The registry stores under test: ``reg`` is each store in turn, SQLite and PostgreSQL (a real
server, started once per session by support.postgres; a fresh database per test)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import postgres

from trivpn.registry.api import RegistryStore
from trivpn.registry.store import DB_NAME, Registry

STORES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(scope="session")
def pg_server() -> Iterator[postgres.PostgresServer]:
    yield from postgres.session_server()


@pytest.fixture
def pg_url(pg_server: postgres.PostgresServer) -> Iterator[str]:
    """The URI of a fresh, empty database, dropped after the test."""
    with pg_server.database() as url:
        yield url


@pytest.fixture(params=STORES)
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], RegistryStore]:
    """Opens another connection to this test's registry, of each store in turn."""
    if request.param == "sqlite":
        path = tmp_path / "state" / DB_NAME
        return lambda: Registry.open(path)
    from trivpn.registry.pg_store import PgRegistry

    url = request.getfixturevalue("pg_url")
    return lambda: PgRegistry.open(url)


@pytest.fixture
def reg(open_store: Callable[[], RegistryStore]) -> Iterator[RegistryStore]:
    with open_store() as r:
        yield r
