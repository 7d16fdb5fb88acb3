"""A throwaway PostgreSQL server for tests and benchmarks: a cluster in a temporary folder,
started from the binaries the ``pgserver`` package carries, reached over its Unix socket only.

    server = TemporaryPostgres.start()
    address = server.new_database() + "#emea"     # postgresql://postgres:@/t1?host=...#emea
    ...
    server.stop()

Running as root (CI does), pgserver runs the server as a system user ``pgserver`` it creates
with ``useradd``; nothing has to be installed by hand.  Durability is switched off (``fsync``,
``synchronous_commit``): the cluster lives for one test run, and the tests' waits are the
database's work, not the disk's.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class PostgresUnavailable(RuntimeError):
    """The server could not start; a test needing it must fail, never skip, in CI."""


@dataclass
class TemporaryPostgres:
    folder: Path
    server: Any = field(repr=False)
    _names: Any = field(default_factory=lambda: itertools.count(1), repr=False)

    @classmethod
    def start(cls) -> TemporaryPostgres:
        try:
            import pgserver
        except ImportError as problem:
            raise PostgresUnavailable(
                "pgserver is not installed (pip install 'salesmgr[test]')"
            ) from problem
        folder = Path(tempfile.mkdtemp(prefix="salesmgr-pg-"))
        try:
            server = pgserver.get_server(folder / "data", cleanup_mode="delete")
        except Exception as problem:  # whatever pgserver raises: the log says why
            shutil.rmtree(folder, ignore_errors=True)
            raise PostgresUnavailable(f"PostgreSQL did not start: {problem}") from problem
        started = cls(folder, server)
        for setting in ("fsync = off", "synchronous_commit = off", "full_page_writes = off"):
            started.sql(f"ALTER SYSTEM SET {setting}")
        started.sql("SELECT pg_reload_conf()")
        return started

    def uri(self, database: str = "postgres") -> str:
        uri: str = self.server.get_uri(database)
        return uri

    def sql(self, statement: str, database: str = "postgres") -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.uri(database), autocommit=True) as connection:
            cursor = connection.execute(statement)
            return cursor.fetchall() if cursor.description else []

    def new_database(self, prefix: str = "t") -> str:
        """A new, empty database; returns its connection URI."""
        name = f"{prefix}{next(self._names)}"
        self.sql(f"CREATE DATABASE {name}")
        return self.uri(name)

    def drop_database(self, uri: str) -> None:
        name = uri.split("?")[0].rsplit("/", 1)[1]
        self.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        self.server.cleanup()
        shutil.rmtree(self.folder, ignore_errors=True)
