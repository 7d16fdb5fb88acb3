"""The records of a pipeline read from a file, made into `Record` objects only when used.

A merge or a sync of a 100,000-record pipeline looks at the few records that changed, yet making
a Python object of every record (and a string of every field) was most of the time of reading
the file.  A `RecordTable` is the id -> `Record` mapping a `Pipeline` holds, like the dict it
stands for, over the sections a codec read (each a `RecordSource`): a record is made when it is
looked up, a whole section when it is walked, and "how many live" or "which changed since" are
answered from the bytes.  Records set, replaced or deleted are kept apart from the sources, so a
save can tell what changed and copy the bytes of the rest (see the pipeline codec).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from itertools import compress, repeat
from operator import attrgetter, methodcaller
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from salesmgr.model.pipeline import Record


@dataclass
class LiveColumns:
    """Live records of one type as columns, for what reads every record (a listing, an export):
    row ``i`` of each list is one record, and no `Record` nor dict of values is made for it.

    ``texts`` holds one list per field some row has (None where a row has no value);
    ``created_at`` and ``changed_at`` are the wall clocks (ms) of each record's creation and of
    its newest write."""

    ids: list[str] = field(default_factory=list)
    texts: dict[str, list[str | None]] = field(default_factory=dict)
    created_at: list[int] = field(default_factory=list)
    changed_at: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def column(self, name: str) -> list[str | None]:
        found = self.texts.get(name)
        return found if found is not None else [None] * len(self.ids)

    def take(self, rows: Sequence[int]) -> LiveColumns:
        """The rows at ``rows``, in that order."""
        return LiveColumns(
            list(map(self.ids.__getitem__, rows)),
            {name: list(map(texts.__getitem__, rows)) for name, texts in self.texts.items()},
            list(map(self.created_at.__getitem__, rows)),
            list(map(self.changed_at.__getitem__, rows)),
        )

    @classmethod
    def of_records(cls, records: Sequence[Record]) -> LiveColumns:
        values = [record.values for record in records]
        names: set[str] = set().union(*values)
        return cls(
            [record.id for record in records],
            {name: list(map(methodcaller("get", name), values)) for name in sorted(names)},
            [record.dot.at for record in records],
            [max(d.at for d in record.dots()) for record in records],
        )

    @classmethod
    def joined(cls, parts: Sequence[LiveColumns]) -> LiveColumns:
        if len(parts) == 1:
            return parts[0]
        whole = cls()
        names = sorted(set().union(*(part.texts for part in parts)))
        whole.texts = {name: [] for name in names}
        for part in parts:
            whole.ids += part.ids
            whole.created_at += part.created_at
            whole.changed_at += part.changed_at
            for name in names:
                found = part.texts.get(name)
                whole.texts[name] += found if found is not None else repeat(None, len(part))
        return whole


class RecordSource(Protocol):
    """The records of one type as a codec read them (a section of a file)."""

    kind: str
    count: int

    def id_list(self) -> list[str]:
        """Every record's id, in the source's order."""
        ...

    def index_of(self, record_id: str) -> int:
        """The index of the record with this id, or -1."""
        ...

    def record(self, index: int) -> Record:
        """A new Record for ``index``; its values are decoded when first read."""
        ...

    def all_records(self) -> list[Record]:
        """A new Record for every index, in order (faster than one at a time)."""
        ...

    def values_of(self, index: int) -> dict[str, str]:
        """A new dict of record ``index``'s values as read."""
        ...

    def values_of_many(self, indexes: list[int]) -> list[dict[str, str]]:
        """`values_of` of each of ``indexes`` (ascending), decoded together."""
        ...

    def live_count(self) -> int:
        """How many of the records, as read, are not deleted."""
        ...

    def deleted_as_read(self, index: int) -> bool:
        ...

    def live_columns(self, skip: set[int]) -> LiveColumns:
        """The records not deleted as read, as columns, leaving out the indexes in ``skip``."""
        ...

    def newer_than(self, since: Mapping[str, int]) -> list[int]:
        """The indexes of the records that, as read, hold a write ``since`` does not cover."""
        ...

    def unchanged(self, index: int, record: Record) -> bool:
        """Whether ``record`` is exactly record ``index`` as read."""
        ...


def open_values(records: Iterable[Record]) -> None:
    """Decode the values of ``records`` not yet opened, together, source by source: for what
    reads every record it holds (a delta's copies, a merge's pairs), where opening them one at
    a time would look each value up on its own."""
    waiting: dict[int, tuple[RecordSource, list[Record]]] = {}
    for record in records:
        if not record.opened and record.source is not None:
            waiting.setdefault(id(record.source), (record.source, []))[1].append(record)
    for source, closed in waiting.values():
        closed.sort(key=attrgetter("index"))
        # Two records of one index (copies of one pipeline's record) each get their own dict.
        for record, values in zip(
            closed, source.values_of_many([r.index for r in closed]), strict=True
        ):
            record.values = values


GONE: Any = object()  # the slot of a record deleted from the mapping


class RecordTable(MutableMapping[str, "Record"]):
    """id -> Record over the sources a codec read, plus the records added since."""

    def __init__(self, sources: list[RecordSource]) -> None:
        self.sources = sources
        # Per source, per index: None (not made yet), the Record handed out, or GONE.
        self.slots: list[list[Any]] = [[None] * source.count for source in sources]
        # Per source, the indexes whose slot is not None (all of them once a section is walked).
        self.touched: list[set[int]] = [set() for _ in sources]
        self.added: dict[str, Record] = {}  # records under ids no source holds

    def locate(self, record_id: str) -> tuple[int, int]:
        """(source number, index) of an id a source holds, else (-1, -1)."""
        for number, source in enumerate(self.sources):
            index = source.index_of(record_id)
            if index >= 0:
                return number, index
        return -1, -1

    # -- the mapping ----------------------------------------------------------------------------
    def __getitem__(self, record_id: str) -> Record:
        found = self.added.get(record_id)
        if found is not None:
            return found
        number, index = self.locate(record_id)
        if number < 0:
            raise KeyError(record_id)
        slots = self.slots[number]
        record = slots[index]
        if record is GONE:
            raise KeyError(record_id)
        if record is None:
            record = slots[index] = self.sources[number].record(index)
            self.touched[number].add(index)
        return record

    def __contains__(self, record_id: object) -> bool:
        if not isinstance(record_id, str):
            return False
        if record_id in self.added:
            return True
        number, index = self.locate(record_id)
        return number >= 0 and self.slots[number][index] is not GONE

    def __setitem__(self, record_id: str, record: Record) -> None:
        number, index = self.locate(record_id)
        if number < 0:
            self.added[record_id] = record
        else:
            self.slots[number][index] = record
            self.touched[number].add(index)

    def __delitem__(self, record_id: str) -> None:
        if record_id in self.added:
            del self.added[record_id]
            return
        number, index = self.locate(record_id)
        if number < 0 or self.slots[number][index] is GONE:
            raise KeyError(record_id)
        self.slots[number][index] = GONE
        self.touched[number].add(index)

    def __len__(self) -> int:
        gone = sum(slots.count(GONE) for slots in self.slots)
        return sum(source.count for source in self.sources) - gone + len(self.added)

    def __iter__(self) -> Iterator[str]:
        for source, slots in zip(self.sources, self.slots, strict=True):
            if GONE in slots:
                yield from compress(source.id_list(), [slot is not GONE for slot in slots])
            else:
                yield from source.id_list()
        yield from list(self.added)

    def values(self) -> Any:  # a list, where a dict gives a view: callers here only walk it
        found: list[Record] = []
        for number in range(len(self.sources)):
            found.extend(self.section(number))
        found.extend(self.added.values())
        return found

    def items(self) -> Any:
        return [(record.id, record) for record in self.values()]

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Record]:
        return {record.id: record.copy() for record in self.values()}

    def __repr__(self) -> str:
        return f"<RecordTable of {len(self)} records>"

    # -- walking part of it ----------------------------------------------------------------------
    def section(self, number: int) -> list[Record]:
        """The records of source ``number`` (deleted ones left out), every one made."""
        slots = self.slots[number]
        if None in slots:
            fresh = self.sources[number].all_records()
            slots[:] = [fresh[i] if slot is None else slot for i, slot in enumerate(slots)]
            self.touched[number] = set(range(len(slots)))
        if GONE in slots:
            return [slot for slot in slots if slot is not GONE]
        return list(slots)

    def made(self, number: int) -> Iterator[tuple[int, Record]]:
        """(index, record) of the records of source ``number`` made or set so far, in order."""
        slots = self.slots[number]
        for index in sorted(self.touched[number]):
            slot = slots[index]
            if slot is not GONE:
                yield index, slot

    def of_kind(self, kind: str) -> list[Record]:
        """The records of one type; only the sections that hold that type are made."""
        found: list[Record] = []
        for number, source in enumerate(self.sources):
            if source.kind == kind:
                found.extend(r for r in self.section(number) if r.kind == kind)
            else:
                found.extend(r for _, r in self.made(number) if r.kind == kind)
        found.extend(r for r in self.added.values() if r.kind == kind)
        return found

    def live_columns(self, kind: str) -> LiveColumns:
        """The live records of one type as columns (see `LiveColumns`): the sections of that
        type are read column by column, and only the records made or added so far are asked
        for their values."""
        parts: list[LiveColumns] = []
        records: list[Record] = []
        for number, source in enumerate(self.sources):
            if source.kind == kind:
                parts.append(source.live_columns(self.touched[number]))
            records.extend(r for _, r in self.made(number) if r.kind == kind and not r.deleted)
        records.extend(r for r in self.added.values() if r.kind == kind and not r.deleted)
        if records or not parts:
            parts.append(LiveColumns.of_records(records))
        return LiveColumns.joined(parts)

    # -- answered from the bytes -------------------------------------------------------------
    def live_count(self) -> int:
        count = sum(not r.deleted for r in self.added.values())
        for number, source in enumerate(self.sources):
            count += source.live_count()
            slots = self.slots[number]
            for index in self.touched[number]:
                slot = slots[index]
                now = slot is not GONE and not slot.deleted
                count += now - (not source.deleted_as_read(index))
        return count

    def changed_since(self, since: Mapping[str, int]) -> list[Record]:
        """The records holding a write ``since`` does not cover, in the mapping's order."""
        found: list[Record] = []
        for number, source in enumerate(self.sources):
            slots = self.slots[number]
            newer = set(source.newer_than(since))
            for index, slot in self.made(number):
                if slot.unseen_by(since):
                    newer.add(index)
                else:
                    newer.discard(index)
            for index in sorted(newer):
                if slots[index] is GONE:
                    continue
                if slots[index] is None:
                    slots[index] = source.record(index)
                    self.touched[number].add(index)
                found.append(slots[index])
        found.extend(r for r in self.added.values() if r.unseen_by(since))
        return found
