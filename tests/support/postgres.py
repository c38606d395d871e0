"""A real PostgreSQL for the tests: Debian's server, started in a temporary directory.

`PostgresServer.start` runs ``initdb`` and ``pg_ctl`` as an unprivileged user (initdb refuses
root), listening only on a unix socket in its own directory (``listen_addresses = ''``): no
TCP port, nothing outside the test. One server per test session; `PostgresServer.new_database`
makes a fresh, empty database per test (CREATE DATABASE from template0, fast) and
`drop_database` removes it.

Tests that use it are marked ``postgres``: outside CI they skip when the server binaries are
missing (``tools/setup`` installs them); in CI a missing server fails them (tests/conftest.py).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

BIN: Final = Path("/usr/lib/postgresql/15/bin")
USER: Final = "nobody"  # initdb and postgres refuse to run as root
START_TIMEOUT: Final = 60  # seconds for pg_ctl -w


def available() -> bool:
    return (BIN / "initdb").is_file() and (BIN / "pg_ctl").is_file()


def _as_user(args: list[str], *, user: str) -> list[str]:
    return args if os.geteuid() != 0 else ["runuser", "-u", user, "--", *args]


class PostgresServer:
    """One running PostgreSQL cluster in ``base`` (removed by `stop`)."""

    def __init__(self, base: Path, user: str) -> None:
        self.base = base
        self.user = user
        self.data = base / "data"
        self.socket_dir = base / "socket"
        self.superuser = user if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        self.running = False

    @classmethod
    def start(cls) -> PostgresServer:
        base = Path(tempfile.mkdtemp(prefix="trivpn-pg-"))
        user = USER if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        server = cls(base, user)
        server.socket_dir.mkdir()
        if os.geteuid() == 0:
            entry = pwd.getpwnam(user)
            for path in (base, server.socket_dir):
                os.chown(path, entry.pw_uid, entry.pw_gid)
            os.chmod(base, 0o755)  # root (the tests) reaches the socket inside
        try:
            server._run(
                BIN / "initdb",
                "-D",
                str(server.data),
                "-U",
                server.superuser,
                "--auth=trust",
                "--no-sync",
                "--encoding=UTF8",
                "--locale=C",
            )
            server.resume()
        except BaseException:
            shutil.rmtree(base, ignore_errors=True)
            raise
        return server

    def resume(self) -> None:
        """Start the server (again, after `pause`), waiting until it accepts connections."""
        options = (
            f"-c listen_addresses='' -c unix_socket_directories='{self.socket_dir}' "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=100"
        )
        self._run(
            BIN / "pg_ctl",
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.base / "log"),
            "-w",
            "-t",
            str(START_TIMEOUT),
            "start",
        )
        self.running = True

    def pause(self) -> None:
        """Stop the server as an operator would (``-m fast``: its clients are disconnected,
        committed data stays); `resume` starts it again. For a server of one's own only: the
        session's is shared by every test."""
        self._run(BIN / "pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        self.running = False

    def _run(self, *args: str | Path) -> None:
        command = _as_user([str(a) for a in args], user=self.user)
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            log = self.base / "log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{args[0]} failed: {result.stderr or result.stdout}{tail}")

    def conninfo(self, dbname: str) -> str:
        """A libpq connection string for ``dbname`` over the unix socket, as the superuser."""
        return f"host={self.socket_dir} dbname={dbname} user={self.superuser}"

    def url(self, dbname: str) -> str:
        """The same as a URI (the host, a directory, percent-encoded)."""
        from urllib.parse import quote

        return f"postgresql://{self.superuser}@/{dbname}?host={quote(str(self.socket_dir), '')}"

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.conninfo("postgres"), autocommit=True) as conn:
            conn.execute(sql)

    def new_database(self) -> str:
        """A fresh, empty database's name."""
        name = "t_" + uuid.uuid4().hex[:16]
        # file_copy: a copy of the template's files (fast with fsync off), where the default
        # strategy writes all of it through the WAL, several times slower
        self._admin(f'CREATE DATABASE "{name}" TEMPLATE template0 STRATEGY file_copy')
        return name

    def drop_database(self, name: str) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    @contextmanager
    def database(self) -> Iterator[str]:
        """The URI of a fresh, empty database, dropped on the way out (after resuming the
        server if the test paused it)."""
        name = self.new_database()
        try:
            yield self.url(name)
        finally:
            if not self.running:
                self.resume()
            self.drop_database(name)

    @contextmanager
    def password_auth_for(self, role: str) -> Iterator[None]:
        """While inside: ``role`` must log in with its password (scram-sha-256), the others
        still get in on trust."""
        hba = self.data / "pg_hba.conf"
        before = hba.read_text()
        hba.write_text(f"local all {role} scram-sha-256\n" + before)
        self._admin("SELECT pg_reload_conf()")
        try:
            yield
        finally:
            hba.write_text(before)
            self._admin("SELECT pg_reload_conf()")

    def stop(self) -> None:
        try:
            if self.running:  # not after a `pause` that a failed test did not `resume`
                self._run(BIN / "pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


def session_server() -> Iterator[PostgresServer]:
    """The body of a session-scoped fixture: one server for the whole run."""
    server = PostgresServer.start()
    try:
        yield server
    finally:
        server.stop()
