"""The registry of a config: [state] database names a PostgreSQL database, and every caller
(`trivpn peer …`, the server's sync) opens it through trivpn.registry.opener, never the SQLite
file in [state] dir."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from support.pg_gateway import cli_config, fleet_state
from support.postgres import PostgresServer

from trivpn.cli.main import main
from trivpn.config import StateConfig, load_config
from trivpn.registry.opener import open_registry
from trivpn.registry.pg_store import PgRegistry
from trivpn.registry.store import Registry, registry_path
from trivpn.registry.sync import registry_opener

pytestmark = pytest.mark.postgres


def test_peer_commands_use_the_database_the_config_names(
    tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = cli_config(tmp_path, fleet_state(pg_url))
    c = ("-c", str(conf))
    assert main(["peer", "add", "alice", *c]) == 0
    assert main(["peer", "add", "bob", *c]) == 0
    assert main(["peer", "disable", "bob", *c]) == 0
    assert main(["peer", "remove", "alice", *c]) == 0
    capsys.readouterr()
    assert main(["peer", "list", "--json", *c]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(p["name"], p["enabled"]) for p in listed] == [("bob", False)]
    with PgRegistry.open(pg_url) as r:
        assert [(p.name, [str(a) for a in p.addresses]) for p in r.peers()] == [
            ("bob", ["10.8.0.3"])
        ]
    assert not registry_path(tmp_path / "state").exists()  # no SQLite file was made


def test_open_registry_picks_the_store_from_state(tmp_path: Path, pg_url: str) -> None:
    sqlite_state = StateConfig(dir=tmp_path / "state")
    assert open_registry(sqlite_state, create=False) is None  # no file yet, none made
    made = open_registry(sqlite_state, create=True)
    assert isinstance(made, Registry)
    made.close()
    pg_state = StateConfig(dir=tmp_path / "unused", database=pg_url)
    opened = registry_opener(pg_state)(False)  # a database always exists: its schema is made
    assert isinstance(opened, PgRegistry)
    assert opened.peers() == []
    opened.close()
    assert not (tmp_path / "unused").exists()


def test_the_password_file_reaches_the_database(
    tmp_path: Path, pg_server: PostgresServer, pg_url: str
) -> None:
    with PgRegistry.open(pg_url) as admin:
        admin._db.execute("CREATE ROLE gw2 LOGIN PASSWORD 'from-the-file'")
        dbname = admin._db.info.dbname
        admin._db.execute("GRANT ALL ON ALL TABLES IN SCHEMA public TO gw2")
    secret = tmp_path / "db.password"
    secret.write_text("from-the-file\n")
    os.chmod(secret, 0o600)
    conninfo = f"host={pg_server.socket_dir} dbname={dbname} user=gw2"
    conf = cli_config(
        tmp_path, f"database = '{conninfo}'\ndatabase_password_file = 'db.password'\n"
    )
    cfg = load_config(conf)
    assert "from-the-file" not in repr(cfg)
    with pg_server.password_auth_for("gw2"):
        opened = open_registry(cfg.state, create=False)
        assert isinstance(opened, PgRegistry)
        opened.close()
        assert main(["peer", "add", "carol", "-c", str(conf)]) == 0
