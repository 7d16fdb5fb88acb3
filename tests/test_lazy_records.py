"""Records read from a file are made when used, and a save copies the bytes of the rest.

The contract: whatever is done to a pipeline read from a file, saving it gives exactly the bytes
that encoding every record anew gives (the format has one canonical encoding); the pipeline
behaves as if every record had been read; and a merge or a sync decodes only what it touches.
"""

from __future__ import annotations

import copy
import hashlib
import io
import random
import shutil
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from helpers import desktop_file, salesmgr
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from strategies import dots, field_names, pipelines, records, sealed, texts, uuids

from salesmgr import storage
from salesmgr.errors import PipelineFileError, ValidationError
from salesmgr.merge.engine import merge_files
from salesmgr.model.pipeline import MAX_CLOCK_MS, MIN_CLOCK_MS, Dot, Pipeline, Record
from salesmgr.model.record_table import RecordTable, open_values
from salesmgr.plugin.interfaces import Codec
from salesmgr.plugin.manager import get_registry
from salesmgr.plugins.pipeline_codec import Body, PipelineCodecV1
from salesmgr.plugins.section_table import (
    DOT,
    OVERRIDE,
    OVERRIDE_WORDS,
    CorruptSection,
    absent_count,
    absent_marks,
    check_clocks,
    renumbered,
    replica_counts,
    sizes_of,
    spliced_overrides,
)

codec = PipelineCodecV1()
SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def encodable(pipeline: Pipeline) -> bytes:
    try:
        return codec.encode(pipeline)
    except ValidationError:  # lone surrogates and the like: not what this file is about
        assume(False)
        raise


def whole(pipeline: Pipeline) -> bytes:
    """The bytes of encoding every record anew (a deep copy holds plain records)."""
    again = copy.deepcopy(pipeline)
    assert not isinstance(again.records, RecordTable)
    return codec.encode(again)


def saved_as_whole(pipeline: Pipeline) -> bytes:
    """Saving ``pipeline`` gives the bytes of encoding every record anew; those bytes."""
    try:
        expected = whole(pipeline)
    except ValidationError:
        assume(False)
        raise
    assert codec.encode(pipeline) == expected
    return expected


@st.composite
def changes(draw: st.DrawFn, pipeline: Pipeline) -> list[tuple[Any, ...]]:
    """A list of things done to a pipeline's records: read, edited in place or replaced, versions
    rewritten (some by a replica the file never mentioned), deleted, added, removed."""
    ids = sorted(pipeline.records)
    replicas = sorted({pipeline.replica_id, *pipeline.knowledge}) + [draw(uuids)]
    some_id = st.sampled_from(ids) if ids else st.nothing()
    step = st.one_of(
        st.tuples(st.just("read"), some_id),
        st.tuples(st.just("set"), some_id, field_names, texts),
        st.tuples(st.just("clear"), some_id, field_names),
        st.tuples(st.just("version"), some_id, field_names, dots(replicas)),
        st.tuples(st.just("unversion"), some_id),
        st.tuples(st.just("redot"), some_id, dots(replicas)),
        st.tuples(st.just("flip"), some_id),
        st.tuples(st.just("replace"), some_id, texts),
        st.tuples(st.just("remove"), some_id),
        st.tuples(st.just("add"), records(replicas)),
        st.tuples(st.just("fork"), uuids),
    )
    return draw(st.lists(step, max_size=8))


def apply(pipeline: Pipeline, steps: list[tuple[Any, ...]]) -> None:
    records = pipeline.records
    for what, *args in steps:
        if what == "add":
            records[args[0].id] = args[0]
            continue
        if what == "fork":
            pipeline.fork(args[0])
            continue
        record = records.get(args[0])
        if record is None:  # removed by an earlier step
            continue
        if what == "read":
            assert isinstance(record.values, dict)
        elif what == "set":
            record.values[args[1]] = args[2]
        elif what == "clear":
            record.values.pop(args[1], None)
        elif what == "version":
            record.field_dots[args[1]] = args[2]
        elif what == "unversion":
            record.field_dots = {}
        elif what == "redot":
            record.dot = args[1]
        elif what == "flip":
            record.deleted = not record.deleted
        elif what == "replace":
            fresh = record.copy()
            fresh.values["notes"] = args[1]
            records[record.id] = fresh
        elif what == "remove":
            del records[record.id]


@SETTINGS
@given(pipelines(), st.data())
def test_a_save_after_any_change_is_the_bytes_of_encoding_every_record(
    original: Pipeline, data: st.DataObject
) -> None:
    read = codec.decode(encodable(original), "file")
    assert isinstance(read.records, RecordTable)
    apply(read, data.draw(changes(read)))
    assert codec.decode(saved_as_whole(read), "again") == read


@SETTINGS
@given(pipelines(), st.data())
def test_records_read_from_a_file_behave_as_a_dict_of_them(
    original: Pipeline, data: st.DataObject
) -> None:
    read = codec.decode(encodable(original), "file")
    model = {rid: r.copy() for rid, r in original.records.items()}
    assert dict(read.records.items()) == model
    steps = data.draw(changes(read))
    apply(read, steps)
    mirror = Pipeline(
        read.pipeline_id, read.name, read.owner, read.currency, read.replica_id, read.home,
        dict(read.knowledge), copy.deepcopy(read.peers), model, dict(read.extra),
    )
    apply(mirror, [s for s in steps if s[0] != "fork"])
    assert list(read.records) == [r.id for r in read.records.values()]
    assert len(read.records) == len(model) and set(read.records) == set(model)
    for rid, record in model.items():
        assert rid in read.records and read.records[rid] == record
    for other in ("not-an-id", *(rid.upper() for rid in model if rid.upper() != rid)):
        assert other not in read.records and read.records.get(other) is None
    assert read.live_count() == sum(not r.deleted for r in model.values())
    since = data.draw(st.dictionaries(st.sampled_from(sorted(read.knowledge) or ["x"]),
                                      st.integers(0, 2**64 - 1)))
    assert [r.id for r in read.changed_since(since)] == [
        r.id for r in read.records.values() if r.unseen_by(since)
    ]
    kind = data.draw(st.sampled_from(sorted({r.kind for r in model.values()}) or ["opportunity"]))
    assert [r.id for r in read.live(kind)] == [
        r.id for r in read.records.values() if r.kind == kind and not r.deleted
    ]


@SETTINGS
@given(pipelines(), st.data())
def test_records_opened_together_hold_what_each_holds_opened_alone(
    original: Pipeline, data: st.DataObject
) -> None:
    """A merge opens the records it found changed together, one walk of each column: each
    gets the values it gets opened alone, its own dict, and a save after changing some of
    them is still the bytes of encoding every record."""
    raw = encodable(original)
    together, alone = codec.decode(raw, "file"), codec.decode(raw, "file")
    ids = sorted(together.records)
    picked = data.draw(st.lists(st.sampled_from(ids), unique=True) if ids else st.just([]))
    records = [together.records[rid] for rid in picked]
    # A second Record of the same index, as two copies of one pipeline each make.
    twins = [r.source.record(r.index) for r in records[:2] if r.source is not None]
    open_values(records + twins)
    assert all(r.opened for r in records)
    for record in records + twins:
        assert record.values == alone.records[record.id].values
    assert len({id(r.values) for r in records + twins}) == len(records) + len(twins)
    apply(together, data.draw(changes(together)))
    saved_as_whole(together)


@settings(max_examples=20, deadline=None)
@given(st.integers(129, 900), st.integers(0, 2**32), st.booleans(), st.floats(0.25, 1))
def test_values_in_every_block_of_a_large_section_are_found_where_they_are(
    count: int, seed: int, mixed: bool, share: float
) -> None:
    """A reader finds a value from a table of every 128th start (made while the file is read,
    for a full ASCII column): in a section of several blocks, each record's values, opened
    alone or together with others, are what decoding the whole section gives; the columns
    are full or have values missing, ASCII or not."""
    rng = random.Random(seed)
    alphabet = "abcXYZ 0123" + ("éß€😀" if mixed else "")
    replica = str(uuid.UUID(int=1))
    pipeline = Pipeline(pipeline_id=str(uuid.UUID(int=2)), replica_id=replica)
    for n in range(count):
        values = {"full": "".join(rng.choices(alphabet, k=rng.randrange(0, 12)))}
        if rng.random() < 0.7:  # a column with values missing
            values["sparse"] = "".join(rng.choices(alphabet, k=rng.randrange(0, 40)))
        record_id = str(uuid.UUID(int=n + 10))
        dot = Dot(n + 1, replica, 0)
        pipeline.records[record_id] = Record("opportunity", record_id, values, dot)
    raw = codec.encode(pipeline)
    expected = {rid: r.values for rid, r in pipeline.records.items()}
    alone, together = codec.decode(raw, "file"), codec.decode(raw, "file")
    ids = sorted(expected)
    for record_id in rng.sample(ids, 40):
        assert alone.records[record_id].values == expected[record_id]
    picked = rng.sample(ids, int(count * share))
    records = [together.records[rid] for rid in picked]
    open_values(records)
    assert {r.id: r.values for r in records} == {rid: expected[rid] for rid in picked}


class Unseekable:
    """A stream that keeps what is written and cannot seek back (as a MAC fed a file)."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> int:
        self.data += data
        return len(data)

    def seekable(self) -> bool:
        return False


@SETTINGS
@given(pipelines(), st.data())
def test_a_signed_file_is_signed_over_the_file_without_its_entry(
    original: Pipeline, data: st.DataObject
) -> None:
    """`Codec.write_signed` (a paired device's seal): the signature is made of exactly the
    bytes of the file without the entry, handed over in order to a stream that cannot seek,
    and the file written is the file with the entry: one encoding of the records for both."""
    read = codec.decode(encodable(original), "file")
    apply(read, data.draw(changes(read)))
    if data.draw(st.booleans()):
        read.extra["seal"] = "an older seal"  # replaced, never signed over
    unsigned = copy.deepcopy(read)
    unsigned.extra.pop("seal", None)
    try:
        expected = whole(unsigned)
    except ValidationError:
        assume(False)
    signed: list[bytes] = []

    def sign(write_unsigned: Any) -> str:
        sink = Unseekable()
        write_unsigned(sink)
        signed.append(bytes(sink.data))
        return hashlib.sha256(sink.data).hexdigest()

    out = io.BytesIO()
    codec.write_signed(read, out, "seal", sign)
    assert signed == [expected]
    unsigned.extra["seal"] = hashlib.sha256(expected).hexdigest()
    assert out.getvalue() == whole(unsigned)
    assert read.extra["seal"] == unsigned.extra["seal"]


def test_a_codec_without_its_own_signed_write_signs_the_same_bytes(tmp_path: Path) -> None:
    """The default `Codec.write_signed` (encode without the entry, sign, write) is what the
    built-in codec's one-encoding write must equal."""
    pipeline = storage.load(desktop_file(tmp_path, count=40))
    pipeline.extra["seal"] = "an older seal"

    def sign(write_unsigned: Any) -> str:
        sink = Unseekable()
        write_unsigned(sink)
        return hashlib.sha256(sink.data).hexdigest()

    by_default, built_in = io.BytesIO(), io.BytesIO()
    Codec.write_signed(codec, copy.deepcopy(pipeline), by_default, "seal", sign)
    codec.write_signed(pipeline, built_in, "seal", sign)
    assert by_default.getvalue() == built_in.getvalue()
    assert codec.decode(built_in.getvalue(), "signed").extra["seal"] == pipeline.extra["seal"]


def opened(pipeline: Pipeline) -> int:
    """How many records of a pipeline read from a file have had their values decoded."""
    records = pipeline.records
    assert isinstance(records, RecordTable)
    return sum(r.opened for n in range(len(records.sources)) for _, r in records.made(n))


def made(pipeline: Pipeline) -> int:
    records = pipeline.records
    assert isinstance(records, RecordTable)
    return sum(1 for n in range(len(records.sources)) for _ in records.made(n))


def test_a_merge_decodes_only_the_records_that_changed(tmp_path: Path) -> None:
    desk_path = desktop_file(tmp_path, count=600)
    dev_path = tmp_path / "device.pipe"
    shutil.copy(desk_path, dev_path)
    rtype = get_registry().record_type("opportunity")
    ids = sorted(storage.load(desk_path).records)
    sides = ((desk_path, "office", ids[10::120]), (dev_path, "road", ids[::100]))
    for path, stamp, picked in sides:
        fresh = storage.load(path)
        for record_id in picked:
            fresh.update(rtype, record_id, {"next_action": f"{stamp} call"})
        storage.save(fresh, path)
        assert made(fresh) == len(picked) and opened(fresh) == len(picked)
    desk, dev = storage.load(desk_path), storage.load(dev_path)
    result = merge_files(desk, dev)
    assert result.report.to_desktop.changed == 6 and result.report.to_device.changed == 5
    assert made(desk) <= 11 and made(dev) <= 11 and opened(desk) <= 11 and opened(dev) <= 11
    assert codec.encode(desk) == whole(desk) and codec.encode(dev) == whole(dev)


def test_a_merge_with_nothing_to_do_rewrites_neither_file(tmp_path: Path) -> None:
    desk = desktop_file(tmp_path, count=50)
    dev = tmp_path / "device.pipe"
    shutil.copy(desk, dev)
    pipeline = storage.load(dev)
    pipeline.update(get_registry().record_type("opportunity"), next(iter(pipeline.records)),
                    {"stage": "won"})
    storage.save(pipeline, dev)
    assert salesmgr("merge", desk, dev).exit_code == 0
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes())
              for p in tmp_path.iterdir()}
    result = salesmgr("merge", desk, dev)
    assert result.exit_code == 0 and "0 added, 0 changed, 0 deleted" in result.stdout
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes())
            for p in tmp_path.iterdir()} == before


def test_a_record_without_values_or_source_says_so() -> None:
    record = Record("opportunity", "x", None, Dot(1, "r", 0))
    try:
        record.values  # noqa: B018
    except ValueError as problem:
        assert "neither values nor a source" in str(problem)
    else:
        raise AssertionError("a record with nothing to read gave values")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.just(0xFFFFFFFF), st.integers(0, 0xFFFFFFFF),
                          st.integers(0xFFFFFF00, 0xFFFFFFFE)), max_size=64))
def test_absent_values_are_counted_from_the_length_table_bytes(lengths: list[int]) -> None:
    """A column's "no value" lengths (0xFFFFFFFF) are counted on the bytes, four at a time,
    never across two lengths (0xFFFFFF00 then 0xFFFFFFFF hold four 0xFF bytes astride); and
    each value's size in the data is its length, 0 where there is none."""
    raw = b"".join(n.to_bytes(4, "little") for n in lengths)
    assert absent_count(raw) == lengths.count(0xFFFFFFFF)
    marks = absent_marks(raw)
    if marks is None:
        assert 0xFFFFFFFF not in lengths
    else:
        assert list(sizes_of(raw, marks)) == [0 if n == 0xFFFFFFFF else n for n in lengths]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 299), max_size=20), st.data())
def test_replica_indexes_are_renumbered_and_counted_on_the_bytes(
    indexes: list[int], data: st.DataObject
) -> None:
    """A save renumbers the replica index of every override (or dot) and counts who is still
    mentioned on the low bytes while at most 256 replicas are involved, number by number when
    more are: the same numbers either way."""
    replicas = data.draw(st.integers(max(indexes, default=0) + 1, 300))
    remap = data.draw(st.lists(st.integers(0, 400), min_size=replicas, max_size=replicas,
                               unique=True))
    raw = b"".join(OVERRIDE.pack(n, i, 7, 8) for n, i in enumerate(indexes))
    assert renumbered(raw, OVERRIDE_WORDS, 1, remap) == b"".join(
        OVERRIDE.pack(n, remap[i], 7, 8) for n, i in enumerate(indexes)
    )
    assert replica_counts(raw, OVERRIDE_WORDS, 1, replicas) == Counter(indexes)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.integers(0, 40), st.tuples(st.integers(0, 3), st.integers(0, 9))),
       st.booleans(), st.dictionaries(st.integers(0, 40), st.none() | st.integers(0, 9)))
def test_a_columns_versions_are_spliced_as_if_sorted_anew(
    kept: dict[int, tuple[int, int]], reverse: bool, written: dict[int, int | None]
) -> None:
    """A save writes the changed versions of a column into the overrides read (in record
    order, or not, from a writer that did not sort them): the overrides come out as a writer
    that sorted every one anew would write them."""
    entries = sorted(kept.items(), reverse=reverse)
    raw = b"".join(OVERRIDE.pack(i, r, c, 5) for i, (r, c) in entries)
    versions = {i: None if c is None else Dot(c, "b", 6) for i, c in sorted(written.items())}
    expected = {i: (r, c, 5) for i, (r, c) in kept.items()}
    for i, dot in versions.items():
        expected.pop(i, None)
        if dot is not None:
            expected[i] = (1, dot.counter, 6)
    assert spliced_overrides(raw, versions, {"a": 0, "b": 1}) == b"".join(
        OVERRIDE.pack(i, *expected[i]) for i in sorted(expected)
    )


calendar_edges = st.sampled_from([MIN_CLOCK_MS, MAX_CLOCK_MS, 0xE600 << 32, 0x1_0000 << 32])
clocks_any = (st.integers(-(2**63), 2**63 - 1) | st.integers(-(2**45), 2**46)
              | calendar_edges.flatmap(lambda edge: st.integers(edge - 2**33, edge + 2**33)))


@settings(max_examples=300, deadline=None)
@given(st.lists(clocks_any, max_size=6), st.booleans())
def test_clocks_are_checked_on_the_bytes_as_one_by_one(ats: list[int], overrides: bool) -> None:
    """A section's clocks (of its dots or its overrides) are checked on their high bytes, then
    their high words, then one by one: a file is refused exactly when a clock lies outside the
    calendar, naming the first such clock."""
    entry = OVERRIDE if overrides else DOT
    raw = b"".join(entry.pack(*([0] * (len(entry.format) - 2)), at) for at in ats)
    outside = [at for at in ats if not MIN_CLOCK_MS <= at <= MAX_CLOCK_MS]
    try:
        check_clocks(raw, "section 'opportunity'", entry)
    except CorruptSection as refused:
        assert outside and f"stamped {outside[0]} ms" in str(refused)
    else:
        assert not outside


small_counters = st.integers(0, 6) | st.just(2**32 - 1) | st.just(2**32)


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 2), small_counters), max_size=12),
       st.dictionaries(st.integers(0, 3), small_counters), st.booleans())
def test_records_created_after_what_a_peer_knows_are_found_from_the_bytes(
    creations: list[tuple[int, int]], known: dict[int, int], edited: bool
) -> None:
    """Which records a peer lacks is read from the creation dots' bytes, compared in C while
    every counter fits 32 bits, and one by one when one does not: the same records either way
    (replicas the peer never heard of, counters at the 32-bit edge)."""
    replicas = [f"00000000-0000-0000-0000-00000000000{n}" for n in range(4)]
    pipeline = Pipeline.create()
    for n, (replica, counter) in enumerate(creations):
        record = Record("opportunity", f"00000000-0000-0000-0001-{n:012d}", {"company": "A"},
                        Dot(counter, replicas[replica], 0))
        if edited and n % 2:
            record.field_dots["stage"] = Dot(counter + 1, replicas[replica + 1], 0)
        pipeline.records[record.id] = record
    since = {replicas[r]: counter for r, counter in known.items()}
    read = codec.decode(codec.encode(pipeline), "file")
    assert [r.id for r in read.changed_since(since)] == [
        r.id for r in pipeline.records.values() if r.unseen_by(since)
    ]


def section_of(kind: str, ids: list[str]) -> dict[str, Any]:
    """A section of records with no values, in the order given, record n created by write n+1."""
    return {
        "kind": kind, "count": len(ids), "ids": bytes.fromhex("".join(ids).replace("-", "")),
        "flags": bytes(len(ids)), "dots": b"".join(DOT.pack(0, n + 1, 0) for n in range(len(ids))),
        "column_count": 0, "columns": [],
    }


CLASHES = ("none", "in a section", "in two sections")


@settings(max_examples=100, deadline=None)
@given(st.lists(uuids, min_size=1, max_size=100, unique=True), st.integers(1, 100),
       st.booleans(), st.sampled_from(CLASHES))
@example(ids=[str(uuid.UUID(int=n + 1)) for n in range(80)], split=79, in_order=True,
         clash="in two sections")  # few ids elsewhere: each looked up in the big section
def test_records_are_found_by_id_in_id_order_or_not_and_an_id_twice_is_refused(
    ids: list[str], split: int, in_order: bool, clash: str
) -> None:
    """A writer sorts a section's records by id, and a reader finds an id there by bisection; a
    file from a writer that did not sort them is read all the same, every record found by its
    id.  Either way an id written twice in a section, or in two sections, is refused."""
    deals, calls = sorted(ids[:split], reverse=not in_order), ids[split:][:3]
    if clash == "in a section":
        deals = [*deals, deals[0]]
    elif clash == "in two sections":
        calls = [*calls, deals[-1]]
    body = Body.build({
        "pipeline_id": bytes(16), "replica": 0, "name": "", "owner": "", "currency": "",
        "home": "", "replica_count": 1, "replicas": bytes(16), "knowledge_count": 0,
        "knowledge": b"", "peer_count": 0, "peers": [], "extra_count": 0, "extra": [],
        "section_count": 2,
        "sections": [section_of("activity", calls), section_of("opportunity", deals)],
    })
    if clash != "none":
        try:
            codec.decode(sealed(body), "forged.smgr")
        except PipelineFileError as refused:
            assert "appears twice" in str(refused)
            return
        raise AssertionError("an id written twice was read")
    read = codec.decode(sealed(body), "file")
    for kind, written in (("opportunity", deals), ("activity", calls)):
        for n, record_id in enumerate(written):
            record = read.records[record_id]
            assert (record.kind, record.dot.counter) == (kind, n + 1)
    assert len(read.records) == len(deals) + len(calls)
    unknown = next(i for n in range(200) if (i := str(uuid.UUID(int=n))) not in ids)
    assert unknown not in read.records
