"""What the SQLite and PostgreSQL stores share: the schema and its numbered migrations, how a
pipeline becomes rows and back, and how a change is kept from losing another.

One database holds many pipelines, each under a *slot* name (``sqlite:///office.db#emea``: slot
``emea``; no ``#name`` means slot ``main``).  The tables keep exactly what a pipeline file keeps:
the header (ids, name, owner, currency, knowledge, what each peer knew, unknown header entries)
and every record, live or deleted (tombstones), conflict-log entries included, with its values
(unknown fields too) and the version of each field.

Writers: a change holds the pipeline (`exclusive`: an advisory lock the database or the system
keeps for the whole read-change-save, so a device's sync and an office edit queue instead of
overwriting each other) and saves in one transaction that locks the pipeline's row and checks
its revision is still the one read.  A save writes only the records whose rows changed.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Hashable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

from salesmgr import storage
from salesmgr.errors import PipelineFileError
from salesmgr.model.pipeline import Dot, Pipeline, Record
from salesmgr.plugin.interfaces import Store

DEFAULT_SLOT = "main"


@dataclass(frozen=True)
class Migration:
    """One step of the schema; the statements run in one transaction with the version bump."""

    version: int
    why: str
    statements: tuple[str, ...]


# Numbered, never edited once released: a database at any earlier version is brought forward by
# running the ones after it (tests/test_stores.py opens one made at every earlier version).
MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "pipelines and their records",
        (
            "CREATE TABLE salesmgr_schema (version INTEGER NOT NULL)",
            "INSERT INTO salesmgr_schema (version) VALUES (0)",
            """CREATE TABLE pipelines (
                slot TEXT PRIMARY KEY,
                pipeline_id TEXT NOT NULL,
                replica_id TEXT NOT NULL,
                home TEXT NOT NULL,
                header TEXT NOT NULL,
                knowledge TEXT NOT NULL,
                peers TEXT NOT NULL,
                revision BIGINT NOT NULL
            )""",
            """CREATE TABLE records (
                slot TEXT NOT NULL REFERENCES pipelines (slot) ON DELETE CASCADE,
                id TEXT NOT NULL,
                kind TEXT NOT NULL,
                deleted INTEGER NOT NULL,
                dot_counter BIGINT NOT NULL,
                dot_replica TEXT NOT NULL,
                dot_at BIGINT NOT NULL,
                record_values TEXT NOT NULL,
                field_dots TEXT NOT NULL,
                PRIMARY KEY (slot, id)
            )""",
        ),
    ),
    Migration(
        2,
        "the devices a hub serves (salesmgr hub pair / devices / revoke)",
        (
            """CREATE TABLE hub_devices (
                name TEXT PRIMARY KEY,
                pairing TEXT NOT NULL,
                pipelines TEXT NOT NULL,
                paired_at BIGINT NOT NULL,
                last_sync BIGINT,
                revoked_at BIGINT
            )""",
        ),
    ),
)
LATEST = MIGRATIONS[-1].version

RECORD_COLUMNS = (
    "id, kind, deleted, dot_counter, dot_replica, dot_at, record_values, field_dots"
)
Row = tuple[str, str, int, int, str, int, str, str]


def dumps(value: object) -> str:
    # ASCII JSON: any text (a lone surrogate, a NUL) survives every database's text type.
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def record_row(record: Record) -> Row:
    dots = {name: list(dot) for name, dot in record.field_dots.items()}
    return (
        record.id, record.kind, int(record.deleted), record.dot.counter, record.dot.replica,
        record.dot.at, dumps(record.values), dumps(dots),
    )


def row_record(row: Sequence[Any]) -> Record:
    rid, kind, deleted, counter, replica, at, values, dots = row
    return Record(
        kind, rid, json.loads(values), Dot(int(counter), replica, int(at)),
        {name: Dot(int(d[0]), d[1], int(d[2])) for name, d in json.loads(dots).items()},
        bool(deleted),
    )


def header_of(pipeline: Pipeline) -> str:
    return dumps({
        "name": pipeline.name, "owner": pipeline.owner, "currency": pipeline.currency,
        "extra": pipeline.extra,
    })


@dataclass(frozen=True)
class DeviceRow:
    """A device paired with a hub: which pipelines it may reach, and its pairing id (its
    credential is derived from that and the hub's key; it is stored nowhere)."""

    name: str
    pairing: str
    pipelines: tuple[str, ...]
    paired_at: int
    last_sync: int | None = None
    revoked_at: int | None = None


@dataclass(frozen=True)
class Location:
    """One pipeline of one database: how to reach the database, and the slot."""

    address: str  # as the user wrote it
    database: str  # what the dialect connects to (a path, a conninfo)
    slot: str
    shown: str  # the address without secrets, for messages

    @property
    def key(self) -> str:
        return f"{self.database}#{self.slot}"


@dataclass
class Snapshot:
    """What a holder last read or wrote: the revision and each record's row."""

    revision: int
    rows: dict[str, Row]


@dataclass
class Held:
    """A pipeline this thread holds: the connection its changes go through."""

    connection: Any
    depth: int = 1
    snapshot: Snapshot | None = None


class ConcurrentChange(PipelineFileError):
    """Someone saved the pipeline without holding it (never a salesmgr writer)."""


def named(shown: str, address: str, slot: str) -> str:
    """``shown`` (the database, as a message may show it) with ``#slot`` where ``address`` names
    a slot: a message names what the user wrote, not the default slot a bare database address
    stands for (a hub's address names none)."""
    return f"{shown}#{slot}" if "#" in address else shown


def split_slot(address: str) -> tuple[str, str]:
    """``...#emea`` -> (``...``, ``emea``); no fragment -> slot ``main``."""
    rest, sep, slot = address.rpartition("#")
    if not sep:
        return address, DEFAULT_SLOT
    if not slot:
        raise PipelineFileError(address, "names no pipeline after '#'")
    return rest, slot


class SqlStore(Store):
    """A store in a SQL database; a subclass says how to connect, lock and begin a write."""

    placeholder = "?"
    for_update = ""  # what locks the rows a SELECT reads until the transaction ends

    def __init__(self) -> None:
        self._local = threading.local()  # the pipelines this thread holds
        self._migrated: set[str] = set()  # databases whose schema this process has checked

    # -- what a dialect provides ---------------------------------------------------------------
    def locate(self, address: str) -> Location:
        raise NotImplementedError

    def connect(self, location: Location, *, create: bool = False) -> AbstractContextManager[Any]:
        """A connection in autocommit mode (transactions are begun explicitly)."""
        raise NotImplementedError

    def hold(self, location: Location, connection: Any) -> AbstractContextManager[None]:
        """Keep every other writer of this pipeline out until the block ends."""
        raise NotImplementedError

    def writing(self, connection: Any) -> AbstractContextManager[None]:
        """One write transaction (rolled back if the block raises)."""
        raise NotImplementedError

    def reading(self, connection: Any) -> AbstractContextManager[None]:
        """One read transaction seeing a single committed state."""
        raise NotImplementedError

    def has_schema(self, connection: Any) -> bool:
        raise NotImplementedError

    def identity(self, connection: Any, location: Location) -> str:
        """Which database this is, as a pipeline's home: a copy of it elsewhere differs."""
        raise NotImplementedError

    def errors(self, location: Location) -> AbstractContextManager[None]:
        """Turn the driver's errors into a PipelineFileError naming the address."""
        raise NotImplementedError

    # -- SQL through the dialect's parameter style --------------------------------------------
    def sql(self, text: str) -> str:
        return text if self.placeholder == "?" else text.replace("?", self.placeholder)

    def execute(self, connection: Any, text: str, params: Sequence[Any] = ()) -> Any:
        return connection.execute(self.sql(text), tuple(params))

    def one(self, connection: Any, text: str, params: Sequence[Any] = ()) -> Any:
        return self.execute(connection, text, params).fetchone()

    # -- the schema ----------------------------------------------------------------------------
    def schema_version(self, connection: Any) -> int:
        if not self.has_schema(connection):
            return 0
        return int(self.one(connection, "SELECT version FROM salesmgr_schema")[0])

    def migrate(self, connection: Any, location: Location, *, upto: int = LATEST) -> None:
        """Bring the schema forward to ``upto``; refuse a database from a newer salesmgr."""
        if location.database in self._migrated and upto == LATEST:
            return
        if self.schema_version(connection) < upto:
            with self.writing(connection):
                self.lock_schema(connection)
                version = self.schema_version(connection)  # another process may have done it
                for migration in MIGRATIONS[version:upto]:
                    for statement in migration.statements:
                        self.execute(connection, statement)
                    self.execute(
                        connection, "UPDATE salesmgr_schema SET version = ?", (migration.version,)
                    )
        version = self.schema_version(connection)
        if version > LATEST:
            raise PipelineFileError(
                location.shown,
                f"the database has schema version {version}; this salesmgr knows up to "
                f"{LATEST}: upgrade salesmgr",
            )
        if upto == LATEST:
            self._migrated.add(location.database)

    def lock_schema(self, connection: Any) -> None:
        """Inside the migration's transaction: keep other migrators out (SQLite's write lock
        already does)."""

    def slots(self, connection: Any) -> list[str]:
        rows = self.execute(connection, "SELECT slot FROM pipelines ORDER BY slot").fetchall()
        return [row[0] for row in rows]

    # -- Store -----------------------------------------------------------------------------------
    def canonical(self, address: str) -> str:
        return self.locate(address).shown

    def label(self, address: str) -> str:
        return self.locate(address).slot

    @property
    def held(self) -> dict[str, Held]:
        found: dict[str, Held] | None = getattr(self._local, "held", None)
        if found is None:
            found = self._local.held = {}
        return found

    @contextmanager
    def session(self, location: Location, *, create: bool = False) -> Iterator[Any]:
        """The held connection of this thread, or a new one for this call."""
        held = self.held.get(location.key)
        if held is not None:
            yield held.connection
            return
        with self.errors(location), self.connect(location, create=create) as connection:
            self.migrate(connection, location)
            yield connection

    @contextmanager
    def exclusive(self, address: str) -> Iterator[None]:
        location = self.locate(address)
        held = self.held.get(location.key)
        if held is not None:
            held.depth += 1
            try:
                yield
            finally:
                held.depth -= 1
            return
        with self.errors(location), self.connect(location, create=True) as connection:
            self.migrate(connection, location)
            with self.hold(location, connection):
                self.held[location.key] = Held(connection)
                try:
                    yield
                finally:
                    del self.held[location.key]

    def version(self, address: str) -> Hashable | None:
        """The pipeline's id and revision: every save bumps the revision in its transaction."""
        location = self.locate(address)
        try:
            with self.session(location) as connection, self.errors(location):
                found = self.one(
                    connection, "SELECT pipeline_id, revision FROM pipelines WHERE slot = ?",
                    (location.slot,),
                )
        except PipelineFileError:
            return None  # read says what is wrong
        return None if found is None else (found[0], int(found[1]))

    def exists(self, address: str) -> bool:
        location = self.locate(address)
        try:
            with self.session(location) as connection, self.errors(location):
                return self.one(
                    connection, "SELECT 1 FROM pipelines WHERE slot = ?", (location.slot,)
                ) is not None
        except PipelineFileError:
            return False

    def read(self, address: str) -> Pipeline:
        location = self.locate(address)
        with self.session(location) as connection, self.errors(location):
            with self.reading(connection):
                pipeline, snapshot = self.read_rows(connection, location)
            held = self.held.get(location.key)
            if held is not None:
                held.snapshot = snapshot
            here = self.identity(connection, location)
        # Read from a copy of the database (a dump restored elsewhere): a replica of its own,
        # exactly as a copied pipeline file becomes one.
        storage.settle_home(pipeline, here)
        return pipeline

    def read_rows(self, connection: Any, location: Location) -> tuple[Pipeline, Snapshot]:
        head = self.one(
            connection,
            "SELECT pipeline_id, replica_id, home, header, knowledge, peers, revision "
            "FROM pipelines WHERE slot = ?",
            (location.slot,),
        )
        if head is None:
            known = ", ".join(self.slots(connection)) or "none"
            raise PipelineFileError(
                location.shown, f"no pipeline {location.slot!r} here (it holds: {known})"
            )
        pipeline_id, replica_id, home, header, knowledge, peers, revision = head
        header = json.loads(header)
        pipeline = Pipeline(
            pipeline_id=pipeline_id, name=header["name"], owner=header["owner"],
            currency=header["currency"], replica_id=replica_id, home=home,
            knowledge={k: int(v) for k, v in json.loads(knowledge).items()},
            peers={p: {k: int(v) for k, v in known.items()}
                   for p, known in json.loads(peers).items()},
            extra=header["extra"],
        )
        rows: dict[str, Row] = {}
        cursor = self.execute(
            connection, f"SELECT {RECORD_COLUMNS} FROM records WHERE slot = ?", (location.slot,)
        )
        for row in cursor:
            record = row_record(row)
            pipeline.records[record.id] = record
            rows[record.id] = tuple(row)
        return pipeline, Snapshot(int(revision), rows)

    def create(self, address: str, pipeline: Pipeline) -> None:
        location = self.locate(address)
        with self.exclusive(address), self.session(location) as connection:
            with self.errors(location), self.writing(connection):
                if self.locked_revision(connection, location) is not None:
                    raise PipelineFileError(location.shown, "already exists; not overwriting it")
                self.write_rows(connection, location, pipeline, None, None)

    def save(self, address: str, pipeline: Pipeline) -> None:
        location = self.locate(address)
        with self.exclusive(address):
            held = self.held[location.key]
            with self.errors(location), self.writing(held.connection):
                revision = self.locked_revision(held.connection, location)
                known = held.snapshot
                if known is not None and revision != known.revision:
                    raise ConcurrentChange(
                        location.shown, "was changed by a writer that did not hold it; "
                        "nothing was saved, try again",
                    )
                held.snapshot = self.write_rows(
                    held.connection, location, pipeline, revision, known
                )

    def locked_revision(self, connection: Any, location: Location) -> int | None:
        """The pipeline's revision, its row locked until the transaction ends."""
        found = self.one(
            connection, "SELECT revision FROM pipelines WHERE slot = ?" + self.for_update,
            (location.slot,),
        )
        return None if found is None else int(found[0])

    def write_rows(
        self, connection: Any, location: Location, pipeline: Pipeline, revision: int | None,
        known: Snapshot | None,
    ) -> Snapshot:
        """Write the pipeline: all of it when new or saved blind, else the rows that changed."""
        pipeline.home = self.identity(connection, location)
        rows = {rid: record_row(record) for rid, record in pipeline.records.items()}
        head = (
            pipeline.pipeline_id, pipeline.replica_id, pipeline.home, header_of(pipeline),
            dumps(pipeline.knowledge), dumps(pipeline.peers),
        )
        if revision is None:
            revision = 1
            self.execute(
                connection,
                "INSERT INTO pipelines (pipeline_id, replica_id, home, header, knowledge, peers, "
                "revision, slot) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (*head, revision, location.slot),
            )
            changed: Iterable[Row] = rows.values()
            gone: Iterable[str] = ()
        else:
            revision += 1
            self.execute(
                connection,
                "UPDATE pipelines SET pipeline_id = ?, replica_id = ?, home = ?, header = ?, "
                "knowledge = ?, peers = ?, revision = ? WHERE slot = ?",
                (*head, revision, location.slot),
            )
            if known is None:
                self.execute(connection, "DELETE FROM records WHERE slot = ?", (location.slot,))
                changed, gone = rows.values(), ()
            else:
                changed = [row for rid, row in rows.items() if known.rows.get(rid) != row]
                gone = [rid for rid in known.rows if rid not in rows]
        self.upsert(connection, location, changed)
        if gone:
            connection.cursor().executemany(
                self.sql("DELETE FROM records WHERE slot = ? AND id = ?"),
                [(location.slot, rid) for rid in gone],
            )
        return Snapshot(revision, rows)

    # -- the devices a hub serves (one table per database, whatever the slot) -----------------
    def device_rows(self, address: str, name: str | None = None) -> list[DeviceRow]:
        """Every paired device (by name), or the one called ``name``."""
        location = self.locate(address)
        query = "SELECT name, pairing, pipelines, paired_at, last_sync, revoked_at FROM hub_devices"
        with self.session(location) as connection, self.errors(location):
            if name is None:
                rows = self.execute(connection, query + " ORDER BY name").fetchall()
            else:
                rows = self.execute(connection, query + " WHERE name = ?", (name,)).fetchall()
        return [DeviceRow(r[0], r[1], tuple(json.loads(r[2])), int(r[3]),
                          None if r[4] is None else int(r[4]),
                          None if r[5] is None else int(r[5])) for r in rows]

    def device_row(self, address: str, name: str) -> DeviceRow | None:
        found = self.device_rows(address, name)
        return found[0] if found else None

    def put_device(self, address: str, device: DeviceRow) -> None:
        """Pair (or pair again: a new pairing id) one device."""
        location = self.locate(address)
        with self.session(location, create=True) as connection, self.errors(location):
            with self.writing(connection):
                self.execute(connection, "DELETE FROM hub_devices WHERE name = ?", (device.name,))
                self.execute(
                    connection,
                    "INSERT INTO hub_devices (name, pairing, pipelines, paired_at, last_sync, "
                    "revoked_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (device.name, device.pairing, dumps(list(device.pipelines)),
                     device.paired_at, device.last_sync, device.revoked_at),
                )

    def mark_device(self, address: str, name: str, column: str, when: int) -> bool:
        """Set ``last_sync`` or ``revoked_at`` of a device; False if there is no such device."""
        assert column in ("last_sync", "revoked_at")
        location = self.locate(address)
        with self.session(location) as connection, self.errors(location):
            with self.writing(connection):
                cursor = self.execute(
                    connection, f"UPDATE hub_devices SET {column} = ? WHERE name = ?",
                    (when, name),
                )
                return bool(cursor.rowcount)

    def revisions(self, address: str) -> dict[str, int]:
        """Each pipeline's revision (it grows with every save): what a hub polling folders
        compares to tell that a pipeline changed, in one query for the whole database."""
        location = self.locate(address)
        with self.session(location) as connection, self.errors(location):
            rows = self.execute(connection, "SELECT slot, revision FROM pipelines").fetchall()
        return {str(slot): int(revision) for slot, revision in rows}

    def upsert(self, connection: Any, location: Location, rows: Iterable[Row]) -> None:
        connection.cursor().executemany(
            self.sql(
                f"INSERT INTO records (slot, {RECORD_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (slot, id) DO UPDATE SET kind = excluded.kind, "
                "deleted = excluded.deleted, dot_counter = excluded.dot_counter, "
                "dot_replica = excluded.dot_replica, dot_at = excluded.dot_at, "
                "record_values = excluded.record_values, field_dots = excluded.field_dots"
            ),
            [(location.slot, *row) for row in rows],
        )
