"""Hypothesis strategies for pipelines and records, shared by the test modules.

    from strategies import pipelines, records, opportunity_inputs

`pipelines()` draws what a file can hold, not only what the built-in record types accept: any
Unicode text (hypothesis never draws lone surrogates, which UTF-8 cannot hold), empty strings,
64-bit counters and clocks at their limits, many replicas, per-field versions, tombstones, field
names and record types no plugin here declares, and header ``extra`` entries.  The one counter
kept off the limit is the file's own replica's: that replica writes next, and a test that edits
a drawn pipeline must not run out of versions (`EDIT_ROOM`).
`opportunity_inputs()` draws raw user input that the built-in ``opportunity`` type accepts.
`sample_pipeline()` is a small realistic pipeline; `sealed()` wraps a hand-made body in a valid
envelope, for tests that forge files.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

from hypothesis import strategies as st

from salesmgr.model.pipeline import DELETED, MAX_CLOCK_MS, MIN_CLOCK_MS, Dot, Pipeline, Record
from salesmgr.plugin.manager import get_registry
from salesmgr.plugins.records import STAGES, activity_type, opportunity_type

texts = st.text()
short_texts = st.text(max_size=12)
uuids = st.uuids().map(str)
counters = st.integers(0, 2**64 - 1)
EDIT_ROOM = 2**20  # versions left to the file's own replica: the edits one test can make
own_counters = st.integers(0, 2**64 - 1 - EDIT_ROOM)
clocks = st.integers(MIN_CLOCK_MS, MAX_CLOCK_MS)  # a calendar's; others are refused when read

KNOWN_KINDS = ("opportunity", "activity")
KNOWN_FIELDS = tuple(
    sorted({f.name for t in (opportunity_type(), activity_type()) for f in t.fields})
)
# Mostly the built-in names, sometimes a plugin's or a newer version's.
record_kinds = st.one_of(st.sampled_from(KNOWN_KINDS), short_texts)
field_names = st.one_of(st.sampled_from(KNOWN_FIELDS), short_texts)


def dots(replicas: Sequence[str]) -> st.SearchStrategy[Dot]:
    return st.builds(Dot, counters, st.sampled_from(list(replicas)), clocks)


@st.composite
def records(
    draw: st.DrawFn,
    replicas: Sequence[str],
    record_id: str | None = None,
    kinds: st.SearchStrategy[str] = record_kinds,
) -> Record:
    values = draw(st.dictionaries(field_names, texts, max_size=6))
    # Versions of fields written after creation, some of them since cleared (no value).
    edited = draw(st.lists(st.one_of(st.sampled_from(sorted(values) or [""]), field_names),
                           max_size=3, unique=True))
    field_dots = {name: draw(dots(replicas)) for name in edited}
    deleted = draw(st.booleans())
    if deleted:
        field_dots[DELETED] = draw(dots(replicas))
    return Record(
        kind=draw(kinds),
        id=record_id or draw(uuids),
        values=values,
        dot=draw(dots(replicas)),
        field_dots=field_dots,
        deleted=deleted,
    )


def knowledge(replicas: Sequence[str]) -> st.SearchStrategy[dict[str, int]]:
    return st.dictionaries(st.sampled_from(list(replicas)), counters, max_size=len(replicas))


@st.composite
def pipelines(
    draw: st.DrawFn,
    max_records: int = 12,
    max_replicas: int = 6,
    kinds: st.SearchStrategy[str] = record_kinds,
) -> Pipeline:
    replicas = draw(st.lists(uuids, min_size=1, max_size=max_replicas, unique=True))
    ids = draw(st.lists(uuids, max_size=max_records, unique=True))
    replica_id = draw(st.sampled_from(replicas))
    known = draw(knowledge(replicas))
    if replica_id in known:
        # The next write is this replica's: a counter at 2**64-1 could not be written again.
        known[replica_id] = draw(own_counters)
    return Pipeline(
        pipeline_id=draw(uuids),
        name=draw(texts),
        owner=draw(texts),
        currency=draw(st.sampled_from(["USD", "EUR", ""]) | short_texts),
        replica_id=replica_id,
        home=draw(texts),
        knowledge=known,
        peers=draw(st.dictionaries(st.sampled_from(replicas), knowledge(replicas), max_size=3)),
        records={i: draw(records(replicas, i, kinds)) for i in ids},
        extra=draw(st.dictionaries(short_texts, texts, max_size=3)),
    )


@st.composite
def opportunity_inputs(draw: st.DrawFn) -> dict[str, str]:
    """Raw input the built-in opportunity type accepts (for `Pipeline.add`)."""
    line = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40)
    values = {"company": draw(line), "title": draw(line)}
    optional = {
        "contact": line,
        "stage": st.sampled_from(STAGES),
        "value": st.decimals(0, 10**9, places=2).map(str),
        "probability": st.integers(0, 100).map(str),
        "close_date": st.dates().map(lambda d: d.isoformat()),
        "notes": st.lists(line, max_size=4).map("\n".join),
    }
    for name in draw(st.lists(st.sampled_from(sorted(optional)), unique=True)):
        values[name] = draw(optional[name])
    return values


def sample_pipeline() -> Pipeline:
    """A small pipeline made through the real API, the same on every run: two opportunities (one
    deleted, one edited after creation, with non-ASCII text) and an activity."""
    registry = get_registry()
    opportunity = registry.record_type("opportunity")
    pipeline = Pipeline(
        "1f6b3a52-8c1e-4c3a-9e57-2d9c1b0a7e11", "EMEA", "Ana Nguyen", "EUR",
        replica_id="7d0c2b9e-5a41-4f6e-8b3d-c2a1e0f9d8c7",
    )
    created = "2026-01-05T09:30:00+01:00"
    deal, _ = pipeline.add(
        opportunity,
        {"company": "Müller & Söhne", "title": "Flotte 🚚", "created": created},
        record_id="3c9e1f2a-4b5d-4e6f-8a7b-9c0d1e2f3a4b",
    )
    pipeline.add(
        registry.record_type("activity"),
        {"opportunity_id": deal.id, "kind": "call", "date": "2026-01-06"},
        record_id="a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d",
    )
    pipeline.update(opportunity, deal.id, {"stage": "Won", "notes": "first line\nsecond line"})
    gone, _ = pipeline.add(
        opportunity,
        {"company": "Initech", "title": "TPS reports", "created": created},
        record_id="e0d1c2b3-a4f5-4e6d-8c7b-6a5f4e3d2c1b",
    )
    pipeline.delete(gone.id)
    # The wall clock is only for display: pin it so the bytes are the same on every run.
    for record in pipeline.records.values():
        record.dot = record.dot._replace(at=1_767_600_000_000 + record.dot.counter)
        record.field_dots = {
            name: d._replace(at=1_767_600_000_000 + d.counter)
            for name, d in record.field_dots.items()
        }
    return pipeline


def sealed(body: bytes, major: int = 1, minor: int = 0, flags: int = 0) -> bytes:
    """A file around ``body`` with a correct envelope: right length, right CRC."""
    head = b"SMGRPIPE" + struct.pack("<BBHQ", major, minor, flags, len(body))
    return head + struct.pack("<I", zlib.crc32(head + body)) + body
