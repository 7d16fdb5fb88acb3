"""One section of a pipeline file as read: its records stay in the file's bytes until used.

Making a Python object of every record and a string of every field was most of the time of
reading a 100,000-record file, while a merge or a sync looks at the few records that changed.
A `SectionTable` is the `RecordSource` of one section: it checks the section whole when the
file is read (every rule `docs/file-format.md` gives a reader), then makes a record when one is
looked up, decodes its values when they are first read, and answers "how many live", "which
changed since" from the bytes.  A save copies the bytes of every record nobody changed
(`splice_section`) instead of encoding them again; the result is byte for byte what encoding
every record gives (the format has one canonical encoding, and a test holds the two to it).
"""

from __future__ import annotations

import re
import struct
import sys
from array import array
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Mapping
from functools import lru_cache, partial
from itertools import accumulate, compress, islice, repeat
from operator import gt, itemgetter, lt, not_
from typing import Any

from salesmgr.model.pipeline import MAX_CLOCK_MS, MIN_CLOCK_MS, Dot, Record
from salesmgr.model.record_table import LiveColumns

ABSENT = 0xFFFFFFFF  # column length meaning "this record has no value for this field"
DELETED_FLAG = 0x01  # the only record flag of version 1; the other bits must be 0
DOT = struct.Struct("<IQq")  # replica index, counter, wall clock in ms
DOT_CLOCK = struct.Struct("<12xq")  # a dot's wall clock alone
ID = struct.Struct("16s")  # a record id, as bytes
OVERRIDE = struct.Struct("<IIQq")  # record index, then a DOT
U32 = "I" if array("I").itemsize == 4 else "L"
I32 = "i" if array("i").itemsize == 4 else "l"
BIG_ENDIAN_HOST = sys.byteorder == "big"
DOT_WORDS = DOT.size // 4  # a dot is 5 u32 words; its replica index is the first
OVERRIDE_WORDS = OVERRIDE.size // 4  # an override is 6 u32 words; its replica index the second
BLOCK = 128  # records per entry of a column's table of value starts
FULL_STARTS_AFTER = 4096  # values read from a column before every start is worked out
BATCH_SHARE = 256  # records opened together walk each column when 1 in this many or more
UNMENTIONED = 0xFFFFFFFF  # the new index of a replica no record mentions any more
CONTINUATION = bytes(range(0x80, 0xC0))  # UTF-8 bytes that cannot start a character
# An absent mark (0xFF) to a byte that keeps nothing, any other to one that keeps all 8 bits.
ABSENT_TO_ZERO = bytes([0xFF] * 255 + [0])
# The bytes a clock's high word may have as its second byte (little-endian), its upper two 0,
# for the clock to be certainly in the calendar: (0xE5FF << 32) + 0xFFFFFFFF < MAX_CLOCK_MS.
LOW_HIGH_CLOCK_BYTES = bytes(range((MAX_CLOCK_MS >> 32) >> 8))
CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class CorruptSection(Exception):
    """The section breaks a rule of the format (the codec names the file)."""


def uuid_text(raw: bytes) -> str:
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def uuid_texts(raw: bytes) -> list[str]:
    return [uuid_text(raw[i : i + 16]) for i in range(0, len(raw), 16)]


# Remembered for the last few thousand ids: a record table asks each of its sections for an
# id, and a merge looks the same record up several times (a tenth of a 1,000,000-record merge's
# id lookups went to matching and converting the same text again).
@lru_cache(maxsize=4096)
def id_bytes(record_id: str) -> bytes:
    """The 16 bytes of a canonical id, or b"" (which no section holds) for any other text."""
    if not CANONICAL_UUID.fullmatch(record_id):
        return b""
    return bytes.fromhex(record_id.replace("-", ""))


def absent_marks(raw: bytes) -> bytes | None:
    """A byte per little-endian u32 in ``raw``: 0xFF where it is ABSENT (all four bytes 0xFF),
    another value where it is not; None when none is.  The AND of the four byte planes, as big
    integers, in C.  (``array.count`` compares every number as a Python object, which was a
    tenth of reading a 100,000-record file.)"""
    if b"\xff\xff\xff\xff" not in raw:  # a full column, the usual case: one search in C
        return None
    planes = [int.from_bytes(raw[i::4], "little") for i in range(4)]
    every = planes[0] & planes[1] & planes[2] & planes[3]
    return every.to_bytes(len(raw) // 4, "little")


def absent_count(raw: bytes) -> int:
    """How many of the little-endian u32 in ``raw`` are ABSENT (`absent_marks`)."""
    marks = absent_marks(raw)
    return 0 if marks is None else marks.count(0xFF)


def sizes_of(raw: bytes, marks: bytes) -> array[int]:
    """The little-endian u32 lengths ``raw`` with each ABSENT (``marks``, `absent_marks`) as 0:
    a value's size in the column's data.  Done on the four byte planes, in C: summing a block
    of lengths with ABSENT in it made Python add numbers past 32 bits, one by one."""
    keep = int.from_bytes(marks.translate(ABSENT_TO_ZERO), "little")
    zeroed = bytearray(len(raw))
    for plane in range(4):
        kept = int.from_bytes(raw[plane::4], "little") & keep
        zeroed[plane::4] = kept.to_bytes(len(marks), "little")
    return u32_array(zeroed)


def u32_array(raw: bytes | bytearray) -> array[int]:
    numbers = array(U32)
    numbers.frombytes(raw)
    if BIG_ENDIAN_HOST:
        numbers.byteswap()
    return numbers


def check_clock(at: int, where: str) -> None:
    """A dot's clock must be a date a calendar can show (`MIN_CLOCK_MS`..`MAX_CLOCK_MS`)."""
    if not MIN_CLOCK_MS <= at <= MAX_CLOCK_MS:
        raise CorruptSection(
            f"a write in {where} is stamped {at} ms, outside the years 1 to 9999 a clock may say"
        )


def check_clocks(raw: bytes, where: str, entry: struct.Struct = DOT) -> None:
    """`check_clock` for every entry in ``raw`` (dots, or overrides: ``entry``, which ends
    with the clock), on the high words first: a clock whose high 32 bits lie strictly between
    those of the two limits is in range, so a whole section costs one pass in C, and only one
    with a clock near a limit is checked entry by entry."""
    if not raw:
        return
    # The usual clocks (1970 to about 9000): the high word is under 0xE600, i.e. its upper two
    # bytes are 0 and the one below them under 0xE6 — three scans of a byte per entry, in C.
    size = entry.size
    upper = raw[size - 2 :: size] + raw[size - 1 :: size]
    if upper.count(0) == len(upper) and not raw[size - 3 :: size].translate(
        None, LOW_HIGH_CLOCK_BYTES
    ):
        return
    words = array(I32)
    words.frombytes(raw)
    if BIG_ENDIAN_HOST:
        words.byteswap()
    high = words[size // 4 - 1 :: size // 4]  # a clock's words are the entry's last two
    if MIN_CLOCK_MS >> 32 < min(high) and max(high) < MAX_CLOCK_MS >> 32:
        return
    for *_, at in entry.iter_unpack(raw):
        check_clock(at, where)


def u32_bytes(numbers: array[int]) -> bytes:
    if BIG_ENDIAN_HOST:
        numbers = array(U32, numbers)
        numbers.byteswap()
    return numbers.tobytes()


class ColumnTable:
    """One column of a section: a length per record and the values' UTF-8, concatenated."""

    __slots__ = (
        "name", "lengths", "sizes", "data", "overrides", "absent", "ascii", "present", "_starts",
        "_blocks", "_looked",
    )

    def __init__(self, column: Any, count: int, where: str) -> None:
        self.name: str = column.name
        self.lengths = u32_array(column.lengths)
        self.data: bytes = column.data
        self.overrides: bytes = column.overrides
        # Which records have no value: a merge finding a start counts them from these bytes.
        self.absent = absent_marks(column.lengths)
        absent = 0 if self.absent is None else self.absent.count(0xFF)
        self.present = count - absent
        # Each value's size in ``data`` (an absent value's is 0): what starts are summed from.
        self.sizes = self.lengths if self.absent is None else sizes_of(column.lengths, self.absent)
        self.ascii = self.data.isascii()
        self._starts: list[int] | None = None
        self._blocks: list[int] | None = None
        self._looked = 0  # starts found from the block table so far
        # The lengths must add up to the data: checked in C, without walking the records.  An
        # ASCII column sums them a block at a time, which costs little more than summing them
        # whole and is the table a record's value is then found from (`start`): a merge
        # opening a few thousand records needs it for every column.  (The UTF-8 check of a
        # column that is not ASCII works out every start: their last, then.)
        if self.ascii or not count:
            self._blocks = self.block_starts()
            total = self._blocks[-1]
        else:
            last = self.lengths[-1]
            total = self.starts()[-1] + (0 if last == ABSENT else last)
        if total != len(self.data):
            raise CorruptSection(f"the lengths in column {self.name!r} of {where} do not add up")
        if not self.ascii:
            self.check_utf8(where)

    def check_utf8(self, where: str) -> None:
        """Valid UTF-8 as a whole, and no value starting inside a character: then every value
        is valid UTF-8 on its own, without decoding each one."""
        bad = f"column {self.name!r} of {where} holds text that is not valid UTF-8"
        try:
            self.data.decode("utf-8")
        except UnicodeDecodeError:
            raise CorruptSection(bad) from None
        padded = self.data + b"\0"
        starts = self.starts()
        # itemgetter of many indexes picks them all in one C call (a tuple; an int for one).
        picked = itemgetter(*starts)(padded) if len(starts) > 1 else [padded[0]] * len(starts)
        first_bytes = bytes(picked)
        if len(first_bytes.translate(None, CONTINUATION)) != len(first_bytes):
            raise CorruptSection(bad)

    def starts(self) -> list[int]:
        """Where each record's value starts in ``data``."""
        if self._starts is None:
            self._starts = list(accumulate(self.sizes, initial=0))[:-1]
        return self._starts

    def start(self, index: int) -> int:
        """Where record ``index``'s value starts: from a table of every BLOCK-th start while few
        records are read (a start for every record would cost more than they do), then from a
        table of every start."""
        if self._starts is not None:
            return self._starts[index]
        self._looked += 1
        if self._looked > FULL_STARTS_AFTER:
            return self.starts()[index]
        return self.start_in_block(index)

    def start_in_block(self, index: int) -> int:
        """Record ``index``'s start from the block table: its block's start plus the lengths
        before it in the block (`start_after`)."""
        if self._blocks is None:
            self._blocks = self.block_starts()
        block = index // BLOCK
        return self.start_after(block * BLOCK, self._blocks[block], index)

    def start_after(self, known: int, known_start: int, index: int) -> int:
        """Record ``index``'s start from that of record ``known`` (at or before it): plus the
        sizes between them, summed in C."""
        return known_start + sum(self.sizes[known:index])

    def block_starts(self) -> list[int]:
        """The start of every BLOCK-th record's value (and the data's end, last)."""
        count = len(self.sizes)
        bounds = map(slice, range(0, count, BLOCK), range(BLOCK, count + BLOCK, BLOCK))
        return list(accumulate(map(sum, map(self.sizes.__getitem__, bounds)), initial=0))

    def text(self, index: int) -> str | None:
        size = self.lengths[index]
        if size == ABSENT:
            return None
        start = self.start(index)
        return self.data[start : start + size].decode("ascii" if self.ascii else "utf-8")

    def texts_at(self, indexes: Iterable[int]) -> list[str | None]:
        """The values of records ``indexes`` (ascending), one column at a time: a merge or a
        sync opening the records it found changed pays one call per column, not one per value,
        and each start is found from the one before it when they share a block (a shorter
        sum than from the block's start)."""
        lengths, data = self.lengths, self.data
        encoding = "ascii" if self.ascii else "utf-8"
        found: list[str | None] = []
        append = found.append
        if self._starts is not None:
            starts = self._starts
            for index in indexes:
                size = lengths[index]
                if size == ABSENT:
                    append(None)
                else:
                    at = starts[index]
                    append(data[at : at + size].decode(encoding))
            return found
        if self._blocks is None:
            self._blocks = self.block_starts()
        blocks, start_after = self._blocks, self.start_after
        known, at = -1, 0  # the last start found: record ``known``'s, ``at``
        for index in indexes:
            size = lengths[index]
            if size == ABSENT:
                append(None)
                continue
            first = index - index % BLOCK
            if known < first:  # none found yet in this block
                known, at = first, blocks[index // BLOCK]
            at = start_after(known, at, index)
            known = index
            append(data[at : at + size].decode(encoding))
        return found

    def texts(self) -> tuple[list[int] | None, list[str]]:
        """(indexes of the records that have a value, or None when all have one; their texts),
        decoding the whole column at once."""
        lengths: Any = self.lengths
        present: list[int] | None = None
        if self.present != len(lengths):
            has_value = list(map(ABSENT.__ne__, lengths))
            present = list(compress(range(len(lengths)), has_value))
            lengths = list(compress(lengths, has_value))
        ends = list(accumulate(lengths))
        slices = map(slice, [0, *ends[:-1]], ends)
        data = self.data
        if self.ascii:
            # One decode for the whole column; byte offsets are then character offsets.
            return present, list(map(data.decode("ascii").__getitem__, slices))
        return present, list(map(bytes.decode, map(data.__getitem__, slices)))


class SectionTable:
    """The records of one type as read from a file (a `RecordSource`)."""

    def __init__(self, section: Any, replicas: list[str], where: str) -> None:
        self.kind: str = section.kind
        self.count: int = section.count
        self.ids: bytes = section.ids
        self.flags: bytes = section.flags
        self.dots: bytes = section.dots
        self.replicas = replicas
        if self.flags.translate(None, bytes([0, DELETED_FLAG])):
            raise CorruptSection(f"record flags this version does not have in {where}")
        if self.count and max(u32_array(self.dots)[0::DOT_WORDS]) >= len(replicas):
            raise CorruptSection(f"a replica index in {where} is out of range")
        check_clocks(self.dots, where)
        self.columns = [ColumnTable(c, self.count, where) for c in section.columns]
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise CorruptSection(f"a column appears twice in {where}")
        self.check_overrides(where)
        self._edits: dict[int, dict[str, Dot]] | None = None  # made when every one is asked for
        self.shared: dict[bytes, Dot] = {}  # one Dot per write (its bytes), as in memory
        # Each id's 16 bytes.  A writer sorts a section's records by id (equal pipelines give
        # equal bytes): then no id appears twice and an id is found by bisection, with no table
        # of 100,000 ids to build; ids out of order (another writer) get a dict.
        self.id_keys: list[bytes] = list(map(itemgetter(0), ID.iter_unpack(self.ids)))
        self.positions: dict[bytes, int] | None = None
        if not all(map(lt, self.id_keys, islice(self.id_keys, 1, None))):
            self.positions = dict(zip(self.id_keys, range(self.count), strict=True))
            if len(self.positions) != self.count:
                raise CorruptSection(f"a record id appears twice (in {where})")
        self._id_list: list[str] | None = None
        self.opened = 0  # values decoded one record at a time so far
        self.bulk: list[dict[str, str] | None] | None = None  # every record's, once decoded
        self.bulk_after = 1024 + self.count // 32
        self.walked = False  # every record was made: a listing or an export, which reads all
        self.read_cache: dict[int, dict[str, str]] = {}

    def check_overrides(self, where: str) -> None:
        """Every rule for the overrides, on their bytes, a column at a time in C: record and
        replica indexes in range, one version per field of a record, clocks in the calendar.
        Their Dots are made when a record is (`edits_at`)."""
        # Each column with overrides, and its record index -> override number.
        self.edited: list[tuple[ColumnTable, dict[int, int]]] = []
        for column in self.columns:
            raw = column.overrides
            if not raw:
                continue
            words = u32_array(raw)
            indexes = words[0::OVERRIDE_WORDS]
            if max(indexes) >= self.count:
                raise CorruptSection(f"record index {max(indexes)} out of range in {where}")
            if max(words[1::OVERRIDE_WORDS]) >= len(self.replicas):
                raise CorruptSection(f"a replica index in {where} is out of range")
            rows = dict(zip(indexes, range(len(indexes)), strict=True))
            if len(rows) != len(indexes):
                raise CorruptSection(
                    f"field {column.name!r} of one record has two versions in {where}"
                )
            check_clocks(raw, where, OVERRIDE)
            self.edited.append((column, rows))

    def override_dot(self, column: ColumnTable, row: int) -> Dot:
        """The Dot of ``column``'s override number ``row`` (one Dot per write)."""
        at = OVERRIDE.size * row + 4  # past the record index
        key = column.overrides[at : at + DOT.size]
        found = self.shared.get(key)
        if found is None:
            r, counter, clock = DOT.unpack(key)
            found = self.shared[key] = Dot(counter, self.replicas[r], clock)
        return found

    def edits_at(self, index: int) -> dict[str, Dot]:
        """Record ``index``'s field versions as read (the table's: not to be changed)."""
        if self._edits is not None:
            return self._edits.get(index, {})
        found = {}
        for column, rows in self.edited:
            row = rows.get(index)
            if row is not None:
                found[column.name] = self.override_dot(column, row)
        return found

    @property
    def edits(self) -> dict[int, dict[str, Dot]]:
        """Every record's field versions as read, by record index (made on first use: a
        listing or an export reads them all, a merge or a sync asks `edits_at` for a few)."""
        if self._edits is None:
            edits: dict[int, dict[str, Dot]] = {}
            for column, rows in self.edited:
                name = column.name
                for index, row in rows.items():
                    edits.setdefault(index, {})[name] = self.override_dot(column, row)
            self._edits = edits
        return self._edits

    # -- the records ---------------------------------------------------------------------------
    def id_list(self) -> list[str]:
        if self._id_list is None:
            self._id_list = uuid_texts(self.ids)
        return self._id_list

    def id_at(self, index: int) -> str:
        if self._id_list is not None:
            return self._id_list[index]
        return uuid_text(self.ids[16 * index : 16 * index + 16])

    def index_of(self, record_id: str) -> int:
        return self.index_of_key(id_bytes(record_id))

    def index_of_key(self, key: bytes) -> int:
        """The index of the record whose id is ``key`` (its 16 bytes), or -1."""
        if self.positions is not None:
            return self.positions.get(key, -1)
        index = bisect_left(self.id_keys, key)
        return index if index < self.count and self.id_keys[index] == key else -1

    def holds_any(self, keys: set[bytes]) -> bool:
        """Whether a record here has one of the ids ``keys``: each looked up when they are few,
        else every id here against them (in C)."""
        if self.positions is None and len(keys) * 32 < self.count:
            return any(self.index_of_key(key) >= 0 for key in keys)
        return not keys.isdisjoint(self.id_keys)

    def dot_at(self, index: int) -> Dot:
        r, counter, at = DOT.unpack_from(self.dots, DOT.size * index)
        return Dot(counter, self.replicas[r], at)

    def record(self, index: int) -> Record:
        edits = self.edits_at(index)
        return Record(
            self.kind, self.id_at(index), None, self.dot_at(index),
            dict(edits) if edits else None, bool(self.flags[index]), self, index,
        )

    def all_records(self) -> list[Record]:
        self.walked = True
        replicas = self.replicas
        dots = [Dot(c, replicas[r], at) for r, c, at in DOT.iter_unpack(self.dots)]
        field_dots: list[dict[str, Dot] | None] = [None] * self.count
        for index, edited in self.edits.items():
            field_dots[index] = dict(edited)  # the record's own; the table keeps what was read
        return list(
            map(partial(Record, self.kind), self.id_list(), repeat(None), dots, field_dots,
                map(bool, self.flags), repeat(self), range(self.count))
        )

    def live_count(self) -> int:
        return self.flags.count(0)

    def live_columns(self, skip: set[int]) -> LiveColumns:
        keep: list[bool] = list(map(not_, self.flags))
        for index in skip:
            keep[index] = False
        created = list(map(itemgetter(0), DOT_CLOCK.iter_unpack(self.dots)))
        changed = list(created)
        for index, edited in self.edits.items():
            changed[index] = max(changed[index], *(d.at for d in edited.values()))
        texts: dict[str, list[str | None]] = {}
        for column in self.columns:
            present, found = column.texts()
            if present is None:
                texts[column.name] = list(compress(found, keep))
                continue
            full: list[str | None] = [None] * self.count
            for index, text in zip(present, found, strict=True):
                full[index] = text
            live = list(compress(full, keep))
            if live.count(None) != len(live):  # not a column of versions alone (``_deleted``)
                texts[column.name] = live
        return LiveColumns(
            list(compress(self.id_list(), keep)), texts, list(compress(created, keep)),
            list(compress(changed, keep)),
        )

    def deleted_as_read(self, index: int) -> bool:
        return bool(self.flags[index])

    def newer_than(self, since: Mapping[str, int]) -> list[int]:
        seen = [since.get(replica, 0) for replica in self.replicas]
        found = set(self.created_after(seen))
        for column in self.columns:
            found.update(i for i, r, c, _ in OVERRIDE.iter_unpack(column.overrides) if c > seen[r])
        return sorted(found)

    def created_after(self, seen: list[int]) -> Iterable[int]:
        """The indexes of the records whose creation dot's counter is above ``seen`` (by
        replica index).  Compared in C while every counter fits 32 bits (one u32 word each),
        which is what a merge or a sync meets: it never walks 100,000 dots in Python."""
        words = u32_array(self.dots)  # a dot's words: replica, counter (low, high), clock (2)
        replicas = words[0::DOT_WORDS]
        if not self.count or max(words[2::DOT_WORDS]) or max(seen) >= 1 << 32:
            return (i for i, (r, c, _) in enumerate(DOT.iter_unpack(self.dots)) if c > seen[r])
        newer = map(gt, words[1::DOT_WORDS], map(seen.__getitem__, replicas))
        return compress(range(self.count), newer)

    def unchanged(self, index: int, record: Record) -> bool:
        return (
            record.source is self
            and record.index == index
            and record.deleted == bool(self.flags[index])
            and record.dot == self.dot_at(index)
            and record.field_dots == self.edits_at(index)
            and record.id == self.id_at(index)
            and record.kind == self.kind
            and (not record.opened or record.values == self.as_read(index))
        )

    # -- values ----------------------------------------------------------------------------------
    def values_of(self, index: int) -> dict[str, str]:
        if self.bulk is None:
            self.opened += 1
            if self.opened <= self.bulk_after and not self.walked:
                values = self.read_values(index)
                self.read_cache[index] = dict(values)  # as read: a save compares with it
                return values
            self.bulk = list(self.decode_all())
        found = self.bulk[index]
        if found is None:  # handed out already (to a record of a copy of the pipeline)
            return self.read_values(index)
        self.bulk[index] = None
        return found

    def values_of_many(self, indexes: list[int]) -> list[dict[str, str]]:
        """`values_of` each of ``indexes`` (ascending).  Past a few hundred records of a large
        section, one walk of each column (`ColumnTable.texts_at`) costs less than a lookup per
        record: what a merge or a sync meets when it opens every record it found changed."""
        if self.bulk is not None or self.walked or len(indexes) * BATCH_SHARE < self.count:
            return [self.values_of(index) for index in indexes]
        self.opened += len(indexes)
        found: list[dict[str, str]] = [{} for _ in indexes]
        for column in self.columns:
            name = column.name
            for values, text in zip(found, column.texts_at(indexes), strict=True):
                if text is not None:
                    values[name] = text
        cache = self.read_cache
        for index, values in zip(indexes, found, strict=True):
            cache[index] = dict(values)  # as read: a save compares with it
        return found

    def read_values(self, index: int) -> dict[str, str]:
        """Record ``index``'s values decoded from the bytes (a new dict every time)."""
        values = {}
        for column in self.columns:
            text = column.text(index)
            if text is not None:
                values[column.name] = text
        return values

    def as_read(self, index: int) -> dict[str, str]:
        """Record ``index``'s values as in the file (kept: a save compares and splices them)."""
        values = self.read_cache.get(index)
        if values is None:
            values = self.read_cache[index] = self.read_values(index)
        return values

    def decode_all(self) -> list[dict[str, str]]:
        full: list[tuple[str, list[str]]] = []
        sparse: list[tuple[str, list[int], list[str]]] = []
        for column in self.columns:
            present, texts = column.texts()
            if present is None:
                full.append((column.name, texts))
            else:
                sparse.append((column.name, present, texts))
        if full:
            full_names = tuple(name for name, _ in full)
            rows = zip(*(texts for _, texts in full), strict=True)
            values: list[dict[str, str]] = list(map(dict, map(zip, repeat(full_names), rows)))
        else:
            values = [{} for _ in range(self.count)]
        for name, present, texts in sparse:
            for index, text in zip(present, texts, strict=True):
                values[index][name] = text
        return values


# -- writing: splice the bytes of unchanged records ------------------------------------------------


def replica_counts(raw: bytes, words: int, at: int, replicas: int) -> Counter[int]:
    """How many entries of ``raw`` (``words`` u32 words each) name each replica index in word
    ``at``.  With at most 256 replicas (every index was checked against the table when the
    file was read) an index is its low byte: one ``bytes.count`` in C per replica, instead of
    a Python number per entry."""
    if replicas > 256:
        return Counter(u32_array(raw)[at::words])
    low = raw[4 * at :: 4 * words]
    return Counter({i: n for i in range(replicas) if (n := low.count(i))})


def mentioned_replicas(table: SectionTable, changed: Iterable[int]) -> set[str]:
    """The replica ids that the dots of ``table``'s records other than ``changed`` mention."""
    count = len(table.replicas)
    counts = replica_counts(table.dots, DOT_WORDS, 0, count)
    for column in table.columns:
        if column.overrides:
            counts.update(replica_counts(column.overrides, OVERRIDE_WORDS, 1, count))
    by_id = Counter({table.replicas[i]: n for i, n in counts.items()})
    for index in changed:
        by_id[table.dot_at(index).replica] -= 1
        for dot in table.edits_at(index).values():
            by_id[dot.replica] -= 1
    return {replica for replica, n in by_id.items() if n > 0}


def splice_section(
    table: SectionTable, changed: dict[int, Record], index: dict[str, int]
) -> dict[str, Any]:
    """The fields of the codec's ``Section`` declaration: the bytes of ``table`` with the
    ``changed`` records written in, and replica indexes renumbered to ``index``."""
    # A replica the file no longer mentions appears only in bytes the changes replace.
    renumber = [index.get(r, UNMENTIONED) for r in table.replicas]
    remap = None if renumber == list(range(len(renumber))) else renumber
    positions = sorted(changed)
    dots: bytes | bytearray = table.dots
    if remap is not None:
        dots = renumbered(dots, DOT_WORDS, 0, remap)
    flags: bytes | bytearray = table.flags
    if positions:
        dots, flags = bytearray(dots), bytearray(flags)
        for i in positions:
            r = changed[i]
            dots[DOT.size * i : DOT.size * (i + 1)] = DOT.pack(
                index[r.dot.replica], r.dot.counter, r.dot.at
            )
            flags[i] = DELETED_FLAG if r.deleted else 0
    texts, versions = field_changes(table, changed, positions)
    by_name = {column.name: column for column in table.columns}
    columns = []
    for name in sorted(by_name.keys() | texts.keys() | versions.keys()):
        column = spliced_column(
            by_name.get(name), name, table.count, texts.get(name, {}), versions.get(name, {}),
            index, remap,
        )
        if column is not None:
            columns.append(column)
    return {
        "kind": table.kind,
        "count": table.count,
        "ids": table.ids,
        "flags": bytes(flags),
        "dots": bytes(dots),
        "column_count": len(columns),
        "columns": columns,
    }


def field_changes(
    table: SectionTable, changed: dict[int, Record], positions: list[int]
) -> tuple[dict[str, dict[int, str | None]], dict[str, dict[int, Dot | None]]]:
    """By field name, the changed records (by index, in record order) whose value of it is not
    the one read, with their value now (None: none); and likewise for its version.  A record
    is compared once, not once per column: a column no record changed is copied whole."""
    texts: dict[str, dict[int, str | None]] = {}
    versions: dict[str, dict[int, Dot | None]] = {}
    for i in positions:
        record = changed[i]
        # A record whose values were never opened still has the values read.
        if record.opened or record.source is not table or record.index != i:
            differences(texts, i, table.as_read(i), record.values)
        differences(versions, i, table.edits_at(i), record.field_dots)
    return texts, versions


def differences(
    found: dict[str, dict[int, Any]], index: int, old: Mapping[str, Any], new: Mapping[str, Any]
) -> None:
    """Add to ``found[name][index]`` the entries of ``new`` that differ from ``old``."""
    if old == new:
        return
    was = old.get
    for name, now in new.items():
        if now != was(name):
            found.setdefault(name, {})[index] = now
    for name in old.keys() - new.keys():
        found.setdefault(name, {})[index] = None


def renumbered(raw: bytes | bytearray, words: int, at: int, remap: list[int]) -> bytes:
    """``raw``, entries of ``words`` u32 words each, with the replica index in word ``at`` of
    every entry replaced through ``remap``.  While old and new indexes are all below 256 the
    low bytes alone change: one ``bytes.translate`` in C."""
    if len(remap) <= 256 and max(remap, default=0) < 256:
        out = bytearray(raw)
        plane = slice(4 * at, None, 4 * words)
        out[plane] = raw[plane].translate(bytes(remap) + bytes(256 - len(remap)))
        return bytes(out)
    numbers = u32_array(raw)
    numbers[at::words] = array(U32, map(remap.__getitem__, numbers[at::words]))
    return u32_bytes(numbers)


def spliced_column(
    old: ColumnTable | None,
    name: str,
    count: int,
    texts: dict[int, str | None],
    versions: dict[int, Dot | None],
    index: dict[str, int],
    remap: list[int] | None,
) -> dict[str, Any] | None:
    """One column's fields with the values ``texts`` and the versions ``versions`` (by record
    index; None for none) written in, or None when no record has a value or a version for it."""
    if old is None:
        lengths = array(U32, [ABSENT]) * count
        data = "".join(t for t in texts.values() if t is not None).encode("utf-8")
        present = 0
        overrides = b""
    else:
        lengths, data, present = old.lengths, old.data, old.present
        overrides = old.overrides
        if remap is not None and overrides:
            overrides = renumbered(overrides, OVERRIDE_WORDS, 1, remap)
        if texts:
            lengths = array(U32, lengths)
            present -= sum(lengths[i] != ABSENT for i in texts)
            data = splice_data(old, texts)
    for i, text in texts.items():
        lengths[i] = ABSENT if text is None else len(text.encode("utf-8"))
        present += text is not None
    if versions:
        overrides = spliced_overrides(overrides, versions, index)
    if not present and not overrides:
        return None
    return column_fields(name, lengths, data, overrides)


def splice_data(old: ColumnTable, texts: dict[int, str | None]) -> bytes:
    """The column's data with the values of the records ``texts`` names (in record order)
    replaced by its texts."""
    data = old.data
    pieces = []
    start = 0
    for i, text in texts.items():
        at = old.start(i)
        pieces.append(data[start:at])
        if text is not None:
            pieces.append(text.encode("utf-8"))
        size = old.lengths[i]
        start = at if size == ABSENT else at + size
    pieces.append(data[start:])
    return b"".join(pieces)


def spliced_overrides(
    kept: bytes, versions: dict[int, Dot | None], index: dict[str, int]
) -> bytes:
    """A column's overrides ``kept`` (replica indexes already renumbered) with the versions of
    the records ``versions`` names (in record order) replaced.  Overrides are in record order
    (a writer's rule): each change is found by bisection and the bytes between are copied."""
    entries = u32_array(kept)[0::OVERRIDE_WORDS]  # each override's record index
    if entries != array(U32, sorted(entries)):  # not in record order: sort them all
        at = versions.keys()
        unpacked = [e for e in OVERRIDE.iter_unpack(kept) if e[0] not in at]
        unpacked += [
            (i, index[d.replica], d.counter, d.at) for i, d in versions.items() if d is not None
        ]
        return b"".join(OVERRIDE.pack(*e) for e in sorted(unpacked))
    pieces = []
    start = 0  # the first override not copied yet
    for i, dot in versions.items():
        found = bisect_left(entries, i, start)
        pieces.append(kept[OVERRIDE.size * start : OVERRIDE.size * found])
        if dot is not None:
            pieces.append(OVERRIDE.pack(i, index[dot.replica], dot.counter, dot.at))
        start = found + 1 if found < len(entries) and entries[found] == i else found
    pieces.append(kept[OVERRIDE.size * start :])
    return b"".join(pieces)


def column_fields(
    name: str, lengths: array[int], data: bytes, overrides: bytes
) -> dict[str, Any]:
    return {
        "name": name,
        "lengths": u32_bytes(lengths),
        "data_length": len(data),
        "data": data,
        "override_count": len(overrides) // OVERRIDE.size,
        "overrides": overrides,
    }
