"""Pipelines in PostgreSQL (psycopg 3): the team's store, ``postgresql://HOST/DB#PIPELINE``.

The address is a libpq connection URI (``postgresql://ana@db.example.com:5432/sales``,
``postgresql:///sales?host=/run/postgresql``; ``postgres://`` works too) followed by ``#NAME``
for one pipeline of the database (default ``main``).  The database must exist (``createdb
sales``); salesmgr creates and migrates its tables.  A whole read-change-save holds the
pipeline's advisory lock (`pg_advisory_lock`, so writers in any process or on any machine queue);
a save is one transaction that locks the pipeline's row (``SELECT ... FOR UPDATE``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from salesmgr import storage
from salesmgr.errors import PipelineFileError
from salesmgr.plugin.hookspecs import hookimpl
from salesmgr.plugin.interfaces import Store
from salesmgr.plugins.store_sql import Location, SqlStore, named, split_slot

PASSWORD = re.compile(r"(://[^:/@]*):[^@/]+@")
MIGRATION_LOCK = 0x5A1E5  # the advisory lock migrators of one database take


def lock_key(slot: str) -> int:
    """A pipeline's advisory lock: a signed 64-bit number from its slot name."""
    digest = hashlib.sha256(f"salesmgr pipeline {slot}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def psycopg_module() -> Any:
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency; a broken install
        raise PipelineFileError("postgresql://", "psycopg is not installed "
                                "(pip install 'psycopg[binary]')") from None
    return psycopg


class PostgresStore(SqlStore):
    schemes = ("postgresql", "postgres")
    help = "PostgreSQL (psycopg 3): postgresql://HOST/DB#PIPELINE"
    placeholder = "%s"
    for_update = " FOR UPDATE"

    def __init__(self) -> None:
        super().__init__()
        self._identities: dict[str, str] = {}

    def locate(self, address: str) -> Location:
        conninfo, slot = split_slot(address)
        shown = PASSWORD.sub(r"\1:***@", conninfo)
        return Location(address, conninfo, slot, named(shown, address, slot))

    @contextmanager
    def connect(self, location: Location, *, create: bool = False) -> Iterator[Any]:
        psycopg = psycopg_module()
        try:
            connection = psycopg.connect(location.database, autocommit=True, connect_timeout=10)
        except psycopg.Error as problem:
            first = str(problem).strip().splitlines()[0] if str(problem).strip() else "no answer"
            raise PipelineFileError(location.shown, f"cannot connect ({first})") from None
        with connection:
            yield connection

    @contextmanager
    def hold(self, location: Location, connection: Any) -> Iterator[None]:
        key = lock_key(location.slot)
        connection.execute(f"SET lock_timeout = '{int(storage.LOCK_WAIT * 1000)}ms'")
        connection.execute("SELECT pg_advisory_lock(%s)", (key,))
        try:
            yield
        finally:
            if not connection.closed:
                connection.execute("SELECT pg_advisory_unlock(%s)", (key,))

    @contextmanager
    def writing(self, connection: Any) -> Iterator[None]:
        with connection.transaction():
            yield

    @contextmanager
    def reading(self, connection: Any) -> Iterator[None]:
        with connection.transaction():
            connection.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            yield

    def lock_schema(self, connection: Any) -> None:
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))

    def has_schema(self, connection: Any) -> bool:
        found = connection.execute("SELECT to_regclass('salesmgr_schema')").fetchone()
        return found is not None and found[0] is not None

    def identity(self, connection: Any, location: Location) -> str:
        """The cluster's system identifier and the database's name: a dump restored elsewhere
        is another database (its pipelines become replicas of their own)."""
        found = self._identities.get(location.database)
        if found is None:
            psycopg = psycopg_module()
            try:
                with connection.transaction():
                    system = connection.execute(
                        "SELECT system_identifier FROM pg_control_system()"
                    ).fetchone()[0]
            except psycopg.errors.InsufficientPrivilege:
                system = "?"
            database = connection.execute("SELECT current_database()").fetchone()[0]
            found = self._identities[location.database] = f"postgresql:{system}/{database}"
        return found

    @contextmanager
    def errors(self, location: Location) -> Iterator[None]:
        psycopg = psycopg_module()
        try:
            yield
        except psycopg.errors.LockNotAvailable:
            raise PipelineFileError(
                location.shown, "is in use by another salesmgr process (a sync or an edit); "
                "try again when it has finished"
            ) from None
        except psycopg.Error as problem:
            first = str(problem).strip().splitlines()[0] if str(problem).strip() else "failed"
            raise PipelineFileError(location.shown, f"database error ({first})") from None


@hookimpl
def salesmgr_register_stores(register: Callable[[Store], None]) -> None:
    register(PostgresStore())
