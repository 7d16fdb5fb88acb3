"""The pipeline record model: a pipeline file's header, its records and their versions.

Every write of a field is stamped with a *dot* — (counter, replica id) — minted by the replica that
made the write; a replica's *knowledge* is the highest counter it has seen from each replica.  A
record's fields share the dot of its creation until one is written again.  `docs/sync-model.md`
explains why this is enough to merge any two copies without trusting anyone's clock.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from salesmgr.errors import UnknownRecordError, ValidationError
from salesmgr.model.fields import RecordType
from salesmgr.model.record_table import LiveColumns, RecordSource, RecordTable

DELETED = "_deleted"  # pseudo-field whose dot says when a record was deleted or brought back
# Hidden field "~notes" remembers the text a free-text field was edited from, so two concurrent
# edits can be merged line by line against their common ancestor.
BASE_PREFIX = "~"
LOCALE_KEY = "locale"  # the header entry (`Pipeline.extra`) holding the pipeline's locale
# The wall clocks a dot may carry: what a calendar shows, 0001-01-01 to 9999-12-31 (UTC), in
# milliseconds since the Unix epoch.  The file format has room for any signed 64-bit number; a
# reader refuses a clock outside this range (docs/file-format.md), so every dot can be shown.
MIN_CLOCK_MS = -62_135_596_800_000
MAX_CLOCK_MS = 253_402_300_799_999


def user_values(values: Mapping[str, str]) -> dict[str, str]:
    """A record's values as the user sees them (hidden fields left out)."""
    return {k: v for k, v in values.items() if not k.startswith(BASE_PREFIX)}


class Dot(NamedTuple):
    """One write: the writer's counter and replica id, and its wall clock (ties only)."""

    counter: int
    replica: str
    at: int = 0  # milliseconds since the epoch on the writer's clock; never trusted for order

    def when(self) -> str:
        """The clock as ISO 8601 (UTC) (see `clock_text`)."""
        return clock_text(self.at)


DAY_MS = 86_400_000


def clock_texts(ats: Iterable[int]) -> list[str]:
    """`clock_text` of each clock, for a listing of many records: each day's date is worked
    out once, and the time of day by arithmetic (a datetime per clock was a tenth of
    ``salesmgr list --json``)."""
    days: dict[int, str] = {}
    times: dict[int, str] = {}
    found = []
    for at in ats:
        if not MIN_CLOCK_MS <= at <= MAX_CLOCK_MS:
            found.append(clock_text(at))
            continue
        day, ms = divmod(at, DAY_MS)
        date_text = days.get(day)
        if date_text is None:
            date_text = days[day] = clock_text(day * DAY_MS)[:11]  # YYYY-MM-DDT
        second = ms // 1000
        time_text = times.get(second)
        if time_text is None:
            minutes, s = divmod(second, 60)
            time_text = times[second] = f"{minutes // 60:02d}:{minutes % 60:02d}:{s:02d}+00:00"
        found.append(date_text + time_text)
    return found


def clock_text(at: int) -> str:
    """A wall clock (ms) as ISO 8601 (UTC); one out of `MIN_CLOCK_MS`..`MAX_CLOCK_MS`, which no
    file read can hold, is shown as its number rather than crashing a listing."""
    if not MIN_CLOCK_MS <= at <= MAX_CLOCK_MS:
        return f"{at} ms (out of the calendar)"
    return datetime.fromtimestamp(at / 1000, UTC).isoformat(timespec="seconds")


class Record:
    """One opportunity, activity or plugin-defined record, with the version of each field.

    A record read from a file may leave its values in the file's bytes (``source``, ``index``)
    until ``values`` is first read: a merge or a sync of 100,000 records decodes only the
    records it looks at, and a save copies the bytes of those nobody opened."""

    __slots__ = ("kind", "id", "_values", "dot", "field_dots", "deleted", "source", "index")

    def __init__(
        self,
        kind: str,
        id: str,
        values: dict[str, str] | None,
        dot: Dot,
        field_dots: dict[str, Dot] | None = None,
        deleted: bool = False,
        source: RecordSource | None = None,
        index: int = -1,
    ) -> None:
        self.kind = kind
        self.id = id
        self._values = values
        self.dot = dot
        self.field_dots: dict[str, Dot] = {} if field_dots is None else field_dots
        self.deleted = deleted
        self.source = source  # where the values are while ``_values`` is None
        self.index = index

    @property
    def values(self) -> dict[str, str]:
        values = self._values
        if values is None:
            if self.source is None:
                raise ValueError(f"record {self.id} has neither values nor a source")
            values = self._values = self.source.values_of(self.index)
        return values

    @values.setter
    def values(self, values: dict[str, str]) -> None:
        self._values = values

    @property
    def opened(self) -> bool:
        """Whether ``values`` was read (and so may have been changed in place)."""
        return self._values is not None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Record):
            return NotImplemented
        return (
            self.kind == other.kind
            and self.id == other.id
            and self.dot == other.dot
            and self.deleted == other.deleted
            and self.field_dots == other.field_dots
            and self.values == other.values
        )

    __hash__ = None  # type: ignore[assignment]  # mutable: compared by content, never hashed

    def __repr__(self) -> str:
        return (
            f"Record(kind={self.kind!r}, id={self.id!r}, values={self.values!r}, "
            f"dot={self.dot!r}, field_dots={self.field_dots!r}, deleted={self.deleted!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Copies and pickles carry the values themselves, not the file they may still be in.
        return (Record, (self.kind, self.id, self.values, self.dot, self.field_dots, self.deleted))

    def unseen_by(self, since: Mapping[str, int]) -> bool:
        """Whether the record holds a write a replica with knowledge ``since`` lacks."""
        seen = since.get
        if seen(self.dot.replica, 0) < self.dot.counter:
            return True
        return any(seen(d.replica, 0) < d.counter for d in self.field_dots.values())

    def dot_of(self, name: str) -> Dot:
        return self.field_dots.get(name, self.dot)

    def dots(self) -> Iterator[Dot]:
        yield self.dot
        yield from self.field_dots.values()

    @property
    def last_change(self) -> Dot:
        """The most recent write by wall clock (for display and record-level policies only)."""
        return max(self.dots(), key=lambda d: (d.at, d.counter, d.replica))

    def get(self, name: str, default: str = "") -> str:
        return self.values.get(name, default)

    def copy(self) -> Record:
        return Record(
            self.kind, self.id, dict(self.values), self.dot, dict(self.field_dots), self.deleted
        )

    def same_content(self, other: Record) -> bool:
        """Equal user data (ignores versions)."""
        return (
            self.kind == other.kind
            and self.deleted == other.deleted
            and user_values(self.values) == user_values(other.values)
        )


class Sources:
    """Where new ids and wall-clock times come from; tests swap in deterministic ones."""

    def new_id(self) -> str:
        return str(uuid.uuid4())

    def now_ms(self) -> int:
        return int(time.time() * 1000)


sources = Sources()


def now_ms() -> int:
    return sources.now_ms()


def new_id() -> str:
    return sources.new_id()


def use_sources(new: Sources) -> Sources:
    """Replace the id and clock sources; returns the previous ones."""
    global sources
    previous, sources = sources, new
    return previous


@dataclass
class Pipeline:
    """A pipeline file's content: header, knowledge and records (live and deleted)."""

    pipeline_id: str
    name: str = ""
    owner: str = ""
    currency: str = "USD"
    replica_id: str = field(default_factory=lambda: new_id())
    home: str = ""  # "host:/real/path" where this replica's file lives; a copy elsewhere forks
    knowledge: dict[str, int] = field(default_factory=dict)
    # What this replica last learned each other replica knows (to purge tombstones safely).
    peers: dict[str, dict[str, int]] = field(default_factory=dict)
    # A dict, or a RecordTable when read from a file (records made as they are used).
    records: MutableMapping[str, Record] = field(default_factory=dict)
    # Header entries written by a newer version or a plugin: kept and written back unchanged.
    extra: dict[str, str] = field(default_factory=dict)
    # Not stored: the replica id this copy had in its file when it forked since it was read, so
    # that the new identity is saved at the next commit even if nothing else changed.
    forked_from: str = field(default="", compare=False, repr=False)

    @classmethod
    def create(cls, name: str = "", owner: str = "", currency: str = "USD") -> Pipeline:
        return cls(pipeline_id=new_id(), name=name, owner=owner, currency=currency)

    # -- versions -------------------------------------------------------------------------
    @property
    def counter(self) -> int:
        return self.knowledge.get(self.replica_id, 0)

    def tick(self) -> Dot:
        """Mint the dot of a new write by this replica."""
        counter = self.counter + 1
        self.knowledge[self.replica_id] = counter
        return Dot(counter, self.replica_id, now_ms())

    def knows(self, dot: Dot) -> bool:
        return self.knowledge.get(dot.replica, 0) >= dot.counter

    def fork(self, home: str) -> str:
        """Become a new replica (this file is a copy living somewhere else); returns the old id.

        The new replica inherits the old one's knowledge, so it knows every write made before
        the copy, and mints its own dots from then on, which no other copy can mint."""
        old = self.replica_id
        self.peers[old] = dict(self.knowledge)
        self.replica_id = new_id()
        self.home = home
        self.forked_from = self.forked_from or old
        return old

    # -- reading ----------------------------------------------------------------------------
    def live(self, kind: str | None = None) -> Iterator[Record]:
        records = self.records
        if kind is not None and isinstance(records, RecordTable):
            # Only the sections of that type are made (activities, not 100,000 opportunities).
            found: Iterable[Record] = records.of_kind(kind)
        else:
            found = records.values()
        for record in found:
            if not record.deleted and (kind is None or record.kind == kind):
                yield record

    def live_columns(self, kind: str) -> LiveColumns:
        """The live records of one type as columns (`LiveColumns`): what a listing of every
        record reads, without making a `Record` of each one read from a file."""
        if isinstance(self.records, RecordTable):
            return self.records.live_columns(kind)
        return LiveColumns.of_records(list(self.live(kind)))

    def live_count(self) -> int:
        """How many records are not deleted (read from the file's flags where it can)."""
        if isinstance(self.records, RecordTable):
            return self.records.live_count()
        return sum(not record.deleted for record in self.records.values())

    def changed_since(self, since: Mapping[str, int]) -> list[Record]:
        """The records holding a write that a replica with knowledge ``since`` lacks, in the
        records' order (from the file's bytes where it can, making only those records)."""
        if isinstance(self.records, RecordTable):
            return self.records.changed_since(since)
        return [record for record in self.records.values() if record.unseen_by(since)]

    def find(self, record_id: str, kind: str | None = None) -> Record:
        """The live record with this id (a unique prefix of at least 4 characters also works)."""
        record = self.records.get(record_id)
        if record is None and len(record_id) >= 4:
            matches = [self.records[i] for i in self.records if i.startswith(record_id)]
            live = [r for r in matches if not r.deleted]
            if len(live) == 1:
                record = live[0]
            elif len(live) > 1:
                raise UnknownRecordError(f"id prefix {record_id!r} matches {len(live)} records")
        if record is None or record.deleted or (kind is not None and record.kind != kind):
            what = kind or "record"
            raise UnknownRecordError(f"no {what} with id {record_id!r} in pipeline {self.name!r}")
        return record

    def activities_of(self, opportunity_id: str) -> list[Record]:
        found = [
            r for r in self.live("activity") if r.values.get("opportunity_id") == opportunity_id
        ]
        return sorted(found, key=lambda r: (r.get("date"), r.id))

    # -- the locale numbers and dates are typed in (a header entry older versions keep) ------
    @property
    def locale(self) -> str | None:
        """How amounts, dates and percentages typed into this pipeline are written (``de_DE``),
        None when only forms that cannot be misread are accepted."""
        return self.extra.get(LOCALE_KEY) or None

    @locale.setter
    def locale(self, name: str | None) -> None:
        if name:
            self.extra[LOCALE_KEY] = name
        else:
            self.extra.pop(LOCALE_KEY, None)

    def header_defaults(self) -> Mapping[str, str]:
        return {"currency": self.currency, "owner": self.owner}

    # -- writing ----------------------------------------------------------------------------
    def add(
        self,
        rtype: RecordType,
        values: Mapping[str, str | None],
        *,
        record_id: str | None = None,
        strict_names: bool = True,
        locale: str | None = None,
    ) -> tuple[Record, list[str]]:
        """Add a record; ``values`` are read in ``locale``, else the pipeline's."""
        clean, warnings = rtype.normalize(
            values, strict_names=strict_names, locale=locale or self.locale
        )
        kept = {k: v for k, v in clean.items() if v is not None}
        defaults = self.header_defaults()
        for spec in rtype.fields:
            if spec.name not in kept and spec.default is not None:
                default = spec.default(defaults)
                if default:
                    kept[spec.name] = default
        rtype.check_required(kept)
        record_id = record_id or new_id()
        if record_id in self.records:
            raise ValidationError(f"a record with id {record_id} already exists")
        record = Record(rtype.name, record_id, kept, self.tick())
        self.records[record_id] = record
        return record, warnings

    def update(
        self,
        rtype: RecordType,
        record_id: str,
        changes: Mapping[str, str | None],
        *,
        locale: str | None = None,
    ) -> tuple[Record, list[str]]:
        """Apply changes (read in ``locale``, else the pipeline's); only fields whose value
        really changes get a new version."""
        record = self.find(record_id, rtype.name)
        clean, warnings = rtype.normalize(changes, locale=locale or self.locale)
        changed = {k: v for k, v in clean.items() if record.values.get(k) != v}
        if changed:
            values = dict(record.values)
            for name, value in changed.items():
                if value is None:
                    values.pop(name, None)
                else:
                    values[name] = value
            rtype.check_required(values)
            for name in changed.keys() & rtype.text_merge_fields:
                if not self.editing_own_text(record, name):
                    # The text as it stands is shared (it came from elsewhere, or a peer has
                    # seen it): it is the ancestor a later line merge compares both sides with.
                    base, dot = BASE_PREFIX + name, record.dot_of(name)
                    values[base] = record.values.get(name, "")
                    if dot == record.dot:
                        record.field_dots.pop(base, None)
                    else:
                        record.field_dots[base] = dot
            dot = self.tick()
            record.values = values
            for name in changed:
                record.field_dots[name] = dot
        return record, warnings

    def editing_own_text(self, record: Record, name: str) -> bool:
        """True while free-text field ``name`` holds this replica's own edit that no peer is
        known to have seen: the text remembered before that edit is still the last one shared."""
        if BASE_PREFIX + name not in record.values:
            return False
        dot = record.dot_of(name)
        if dot.replica != self.replica_id:
            return False
        return not any(known.get(dot.replica, 0) >= dot.counter for known in self.peers.values())

    def undelete(self, record_id: str) -> Record:
        """Bring a deleted record back (resolving a delete/edit conflict the other way)."""
        record = self.records.get(record_id)
        if record is None:
            raise UnknownRecordError(f"no record with id {record_id!r} in pipeline {self.name!r}")
        if record.deleted:
            record.deleted = False
            record.field_dots[DELETED] = self.tick()
        return record

    def delete(self, record_id: str, kind: str | None = None) -> Record:
        record = self.find(record_id, kind)
        record.deleted = True
        record.field_dots[DELETED] = self.tick()
        return record
