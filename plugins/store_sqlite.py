"""Pipelines in SQLite: the office machine's store, embedded, no server (``sqlite:///office.db``).

Addresses follow SQLAlchemy's: ``sqlite:///office.db`` is ``office.db`` in the current folder,
``sqlite:////srv/sales/office.db`` an absolute path; ``#emea`` names one pipeline of the
database (default ``main``).  The database runs in WAL mode, so readers never wait for a writer;
a save is one ``BEGIN IMMEDIATE`` transaction, and a whole read-change-save holds the pipeline's
lock (the same advisory file lock a pipeline file uses, named after the database and the slot).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from salesmgr import storage
from salesmgr.errors import PipelineFileError
from salesmgr.plugin.hookspecs import hookimpl
from salesmgr.plugin.interfaces import Store
from salesmgr.plugins.store_sql import Location, SqlStore, named, split_slot

PREFIX = "sqlite://"


def path_of(address: str) -> str:
    """``sqlite:///office.db`` -> ``office.db``; ``sqlite:////srv/office.db`` -> ``/srv/...``."""
    rest = address[len(PREFIX):]
    if not rest.startswith("/") or rest == "/":
        raise PipelineFileError(address, "is not sqlite:///PATH (PATH relative) or "
                                "sqlite:////PATH (absolute)")
    return rest[1:]


class SqliteStore(SqlStore):
    schemes = ("sqlite",)
    help = "SQLite, embedded (no server): sqlite:///office.db#PIPELINE"

    def locate(self, address: str) -> Location:
        rest, slot = split_slot(address)
        path = path_of(rest)
        real = os.path.realpath(path)
        return Location(address, real, slot, named(f"sqlite:///{path}", address, slot))

    def local_file(self, address: str) -> Path:
        return Path(self.locate(address).database)

    @contextmanager
    def connect(self, location: Location, *, create: bool = False) -> Iterator[Any]:
        path = location.database
        if not create and not os.path.exists(path):
            raise PipelineFileError(location.shown, "no such database file")
        if os.path.isdir(path):
            raise PipelineFileError(location.shown, "is a directory, not a database file")
        # Autocommit (isolation_level None): transactions are begun explicitly, as IMMEDIATE
        # for writes.  The timeout is how long a write waits for another's transaction.
        import sqlite3  # imported by the commands that open a database, not by every command

        connection = sqlite3.connect(path, timeout=storage.LOCK_WAIT, isolation_level=None)
        try:
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA foreign_keys = ON")
            yield connection
        finally:
            connection.close()

    @contextmanager
    def hold(self, location: Location, connection: Any) -> Iterator[None]:
        with storage.lock_file(location.key):
            yield

    @contextmanager
    def writing(self, connection: Any) -> Iterator[None]:
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    @contextmanager
    def reading(self, connection: Any) -> Iterator[None]:
        if connection.in_transaction:
            yield
            return
        connection.execute("BEGIN")
        try:
            yield
        finally:
            connection.execute("COMMIT")

    def has_schema(self, connection: Any) -> bool:
        return connection.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'salesmgr_schema'"
        ).fetchone() is not None

    def identity(self, connection: Any, location: Location) -> str:
        # Like a pipeline file's home: this machine and the database's real path.
        return f"sqlite:{socket.gethostname()}:{location.database}"

    @contextmanager
    def errors(self, location: Location) -> Iterator[None]:
        import sqlite3

        try:
            yield
        except sqlite3.OperationalError as problem:
            text = str(problem)
            if "locked" in text or "busy" in text:
                raise PipelineFileError(
                    location.shown, "is in use by another salesmgr process; try again"
                ) from None
            raise PipelineFileError(location.shown, f"cannot use the database ({text})") from None
        except sqlite3.DatabaseError as problem:
            raise PipelineFileError(location.shown, f"not a usable database ({problem})") from None


@hookimpl
def salesmgr_register_stores(register: Callable[[Store], None]) -> None:
    register(SqliteStore())
