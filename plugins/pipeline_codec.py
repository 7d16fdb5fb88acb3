"""The pipeline file format, version 1: a checked envelope around a columnar body.

The construct declarations below are the source of truth; ``docs/file-format.md`` follows them
field by field.  Reading checks the envelope (magic, version, length, CRC32) on the raw bytes
first; only bytes that passed reach the *compiled* body parser, whose speed comes from skipping the
checks a corrupt file would need.  A hostile writer can still produce a correct CRC, so every count
and length the body declares is then checked against the bytes actually present (`check_sizes`),
and every index and id against the rest, before anything is built from it.

Records are stored by type (one *section* per record type) and by field (one *column* per field
name), so a field or a record type this version has never heard of is carried as a column or a
section like any other, and written back unchanged: reading and saving never drops data.
Writing orders everything, so equal pipelines give equal bytes.
"""

from __future__ import annotations

import io
import struct
from array import array
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from io import BufferedIOBase
from itertools import filterfalse
from operator import attrgetter
from typing import IO, Any

import construct as cs
from construct import this

from salesmgr.errors import PipelineFileError, ValidationError
from salesmgr.gc_paused import cyclic_gc_paused
from salesmgr.model.pipeline import Pipeline, Record
from salesmgr.model.record_table import GONE, RecordTable
from salesmgr.pieces import ChecksumWriter, Window, crc32, crc32_of
from salesmgr.plugin.hookspecs import hookimpl
from salesmgr.plugin.interfaces import Codec
from salesmgr.plugins.section_table import (
    ABSENT,
    BIG_ENDIAN_HOST,
    CANONICAL_UUID,
    DELETED_FLAG,
    DOT,
    OVERRIDE,
    U32,
    CorruptSection,
    SectionTable,
    mentioned_replicas,
    splice_section,
    uuid_text,
    uuid_texts,
)

MAGIC = b"SMGRPIPE"
MAJOR, MINOR = 1, 0
MAX_BODY = 1 << 32  # 4 GiB: far beyond any pipeline; a larger declared length is hostile

Envelope = cs.Struct(
    "magic" / cs.Const(MAGIC),
    "major" / cs.Int8ul,  # a reader refuses a newer major version
    "minor" / cs.Int8ul,  # a reader accepts any minor version of its major
    "flags" / cs.Int16ul,  # reserved, 0
    "body_length" / cs.Int64ul,
    "crc32" / cs.Int32ul,  # zlib CRC-32 of the 20 bytes above followed by the body
)
ENVELOPE_SIZE = Envelope.sizeof()
CRC_COVERS = ENVELOPE_SIZE - 4  # the envelope bytes before the crc32 field

Text = cs.PascalString(cs.Int32ul, "utf8")
KNOWLEDGE = struct.Struct("<IQ")  # replica index, highest counter seen from it

Column = cs.Struct(
    "name" / Text,
    "lengths" / cs.Bytes(4 * this._.count),  # u32 per record, ABSENT for no value
    "data_length" / cs.Int64ul,
    "data" / cs.Bytes(this.data_length),  # the values' UTF-8, concatenated in record order
    "override_count" / cs.Int32ul,
    "overrides" / cs.Bytes(OVERRIDE.size * this.override_count),
)

Section = cs.Struct(
    "kind" / Text,
    "count" / cs.Int32ul,
    "ids" / cs.Bytes(16 * this.count),
    "flags" / cs.Bytes(this.count),  # bit 0: deleted (tombstone)
    "dots" / cs.Bytes(DOT.size * this.count),  # each record's creation dot
    "column_count" / cs.Int32ul,
    "columns" / cs.Array(this.column_count, Column),
)

PeerKnowledge = cs.Struct(
    "replica" / cs.Int32ul,
    "entry_count" / cs.Int32ul,
    "entries" / cs.Bytes(KNOWLEDGE.size * this.entry_count),
)

Body = cs.Struct(
    "pipeline_id" / cs.Bytes(16),
    "replica" / cs.Int32ul,  # index of this copy's replica id in the replica table
    "name" / Text,
    "owner" / Text,
    "currency" / Text,
    "home" / Text,
    "replica_count" / cs.Int32ul,
    "replicas" / cs.Bytes(16 * this.replica_count),
    "knowledge_count" / cs.Int32ul,
    "knowledge" / cs.Bytes(KNOWLEDGE.size * this.knowledge_count),
    "peer_count" / cs.Int32ul,
    "peers" / cs.Array(this.peer_count, PeerKnowledge),
    "extra_count" / cs.Int32ul,
    "extra" / cs.Array(this.extra_count, cs.Struct("key" / Text, "value" / Text)),
    "section_count" / cs.Int32ul,
    "sections" / cs.Array(this.section_count, Section),
)
CompiledBody = Body.compile()

Plan = tuple[SectionTable, dict[int, Record]]  # a section read, and its changed records


def uuid_bytes(texts: list[str], what: str) -> bytes:
    """The 16-byte forms of canonical UUID texts, refusing any other spelling (which would not
    read back equal)."""
    bad = next(filterfalse(CANONICAL_UUID.fullmatch, texts), None)
    if bad is not None:
        raise ValidationError(f"cannot save: {what} {bad!r} is not a lowercase UUID")
    return bytes.fromhex("".join(texts).replace("-", ""))


RUNS_PAST = "a declared count or length runs past the end of the body"


class CorruptBody(Exception):
    """The body passed its CRC but breaks a rule of the format (a hostile or buggy writer)."""


@contextmanager
def what_version_1_cannot_hold() -> Iterator[None]:
    """Text with lone surrogates, a counter beyond 64 bits: a ValidationError that says so."""
    try:
        yield
    except UnicodeEncodeError as problem:
        raise ValidationError(
            f"cannot save: text {problem.object[:40]!r} is not valid Unicode"
        ) from None
    except struct.error as problem:
        raise ValidationError(
            f"cannot save: a version number is out of range ({problem})"
        ) from None


def extra_fields(extra: dict[str, str]) -> dict[str, Any]:
    """The header entries' fields of the ``Body`` declaration."""
    return {
        "extra_count": len(extra),
        "extra": [{"key": k, "value": v} for k, v in sorted(extra.items())],
    }


class Discard:
    """A stream that keeps nothing (what a CRC is computed over and thrown away)."""

    def write(self, data: bytes) -> int:
        return len(data)


DISCARD: Any = Discard()


class PipelineCodecV1(Codec):
    format = "pipeline"
    version = (MAJOR, MINOR)
    help = "binary columnar pipeline file (CRC32-checked)"

    def __init__(self, parser: Any = CompiledBody) -> None:
        self.parser = parser

    def sniff(self, head: bytes) -> bool:
        # A file cut inside the magic is still ours, so it is reported as truncated.
        return bool(head) and head[: len(MAGIC)] == MAGIC[: len(head)]

    # -- reading ----------------------------------------------------------------------------
    def decode(self, data: bytes, source: str) -> Pipeline:
        # A BytesIO shares the bytes it is given: reading from it copies only what is parsed.
        return self.read(io.BytesIO(data), len(data), source)

    @cyclic_gc_paused()  # the parse and the tables make thousands of objects, in no cycle
    def read(self, stream: BufferedIOBase, size: int, source: str) -> Pipeline:
        """The pipeline in the ``size`` bytes of ``stream``, read in bounded pieces: the
        envelope is checked against ``size`` before another byte is read, the CRC is computed
        piece by piece, then the body is parsed one declared field at a time, so reading costs
        the parsed fields (about the body's size) and the records, never the file twice."""
        head = stream.read(ENVELOPE_SIZE)
        env = self.open_envelope(head, size, source)
        length = int(env.body_length)
        covered = crc32(head[:CRC_COVERS])
        if crc32_of(stream, length, covered) != env.crc32:
            raise PipelineFileError(source, "checksum mismatch: the file is damaged")
        if env.flags:
            raise PipelineFileError(
                source, f"uses envelope flags {env.flags:#06x} that format {MAJOR}.x does not have"
            )
        stream.seek(ENVELOPE_SIZE)
        window = Window(stream, length, covered)
        try:
            parsed = self.parser.parse_stream(window)
        except (cs.ConstructError, struct.error, OverflowError, UnicodeDecodeError) as problem:
            bad_text = isinstance(problem, UnicodeDecodeError | cs.StringError)
            if bad_text and window.left:
                reason = "text that is not valid UTF-8"
            else:
                # A verified body runs short only where a declared count or length exceeds
                # what follows (the compiled parser then decodes whatever is left as text).
                reason = RUNS_PAST
            raise PipelineFileError(source, f"corrupt pipeline file: {reason}") from None
        try:
            check_sizes(parsed)
            if window.left:
                raise CorruptBody(f"{window.left} unexplained bytes after the body")
            if window.finish() != env.crc32:  # written over in place since the CRC was checked
                raise PipelineFileError(source, "changed while it was being read; try again")
            return self.to_pipeline(parsed)
        except CorruptBody as corrupt:
            raise PipelineFileError(source, f"corrupt pipeline file: {corrupt}") from None

    def expected_size(self, head: bytes) -> int | None:
        if len(head) < ENVELOPE_SIZE or head[: len(MAGIC)] != MAGIC:
            return None
        return ENVELOPE_SIZE + int(Envelope.parse(head[:ENVELOPE_SIZE]).body_length)

    @staticmethod
    def open_envelope(head: bytes, size: int, source: str) -> Any:
        """The envelope (its first `ENVELOPE_SIZE` bytes, ``head``) of a file of ``size``
        bytes, once magic, version and length are right; else PipelineFileError.  Nothing past
        the envelope has been read: a file whose size is a lie costs no memory."""
        if not size:
            raise PipelineFileError(source, "is empty, not a pipeline file")
        if head[: len(MAGIC)] != MAGIC[: len(head)] or not head:
            raise PipelineFileError(source, "not a salesmgr pipeline file")
        if size < ENVELOPE_SIZE or len(head) < ENVELOPE_SIZE:
            raise PipelineFileError(source, f"truncated ({min(size, len(head))} bytes)")
        env = Envelope.parse(head)
        if env.major > MAJOR:
            raise PipelineFileError(
                source,
                f"format version {env.major}.{env.minor} is newer than this salesmgr reads "
                f"({MAJOR}.x); upgrade salesmgr",
            )
        if env.major < MAJOR:
            raise PipelineFileError(source, f"unknown format version {env.major}.{env.minor}")
        present = size - ENVELOPE_SIZE
        if env.body_length > MAX_BODY:
            raise PipelineFileError(source, f"declared length {env.body_length} is impossible")
        if env.body_length > present:
            raise PipelineFileError(
                source, f"truncated: {present} of {env.body_length} body bytes present"
            )
        if env.body_length < present:
            raise PipelineFileError(
                source, f"{present - env.body_length} unexpected bytes after the end"
            )
        return env

    def to_pipeline(self, parsed: Any) -> Pipeline:
        replicas = uuid_texts(parsed.replicas)
        if len(set(replicas)) != len(replicas):
            raise CorruptBody("a replica id appears twice in the replica table")

        def replica(index: int) -> str:
            if index >= len(replicas):
                raise CorruptBody(f"replica index {index} out of range ({len(replicas)} replicas)")
            return replicas[index]

        def knowledge_of(raw: bytes, count: int, what: str) -> dict[str, int]:
            known = {replica(i): c for i, c in KNOWLEDGE.iter_unpack(raw)}
            if len(known) != count:
                raise CorruptBody(f"a replica appears twice in the {what}")
            return known

        peers = {
            replica(p.replica): knowledge_of(p.entries, p.entry_count, "peer knowledge")
            for p in parsed.peers
        }
        if len(peers) != len(parsed.peers):
            raise CorruptBody("a replica appears twice in the peer table")
        extra = {e.key: e.value for e in parsed.extra}
        if len(extra) != len(parsed.extra):
            raise CorruptBody("a header extra key appears twice")
        pipeline = Pipeline(
            pipeline_id=uuid_text(parsed.pipeline_id),
            name=parsed.name,
            owner=parsed.owner,
            currency=parsed.currency,
            replica_id=replica(parsed.replica),
            home=parsed.home,
            knowledge=knowledge_of(parsed.knowledge, parsed.knowledge_count, "knowledge"),
            peers=peers,
            extra=extra,
        )
        kinds = [s.kind for s in parsed.sections]
        if len(set(kinds)) != len(kinds):
            raise CorruptBody("a record type has two sections")
        try:
            tables = [
                SectionTable(section, replicas, f"section {section.kind!r}")
                for section in parsed.sections
            ]
        except CorruptSection as problem:
            raise CorruptBody(str(problem)) from None
        if len(tables) > 1:
            # Each smaller section's ids against the rest: never a set of every id of the file.
            biggest, *others = sorted(tables, key=attrgetter("count"), reverse=True)
            seen: set[bytes] = set()
            for table in others:
                if not seen.isdisjoint(table.id_keys):
                    raise CorruptBody("a record id appears twice (in two sections)")
                seen.update(table.id_keys)
            if biggest.holds_any(seen):
                raise CorruptBody("a record id appears twice (in two sections)")
        # Records are made as they are used: a merge or a sync reads few of 100,000.
        pipeline.records = RecordTable(list(tables))
        return pipeline

    # -- writing ----------------------------------------------------------------------------
    def encode(self, pipeline: Pipeline) -> bytes:
        """The file's bytes; equal pipelines give equal bytes, whatever their dicts' order.

        Raises ValidationError for what version 1 cannot hold (an id that is not a lowercase
        UUID, text with lone surrogates, a counter beyond 64 bits)."""
        out = io.BytesIO()
        self.write(pipeline, out)
        return out.getvalue()

    def write(self, pipeline: Pipeline, stream: IO[bytes]) -> None:
        """Write the file (`encode`'s bytes) to ``stream`` as it is built, never whole in
        memory (see `write_fields`).

        Raises ValidationError, before a byte is written, for what version 1 cannot hold (see
        `encode`); OSError as ``stream`` raises it."""
        self.write_fields(self.body_fields(pipeline), stream)

    def write_signed(
        self,
        pipeline: Pipeline,
        stream: IO[bytes],
        entry: str,
        sign: Callable[[Callable[[IO[bytes]], None]], str],
    ) -> None:
        """`Codec.write_signed`: the records are spliced once, for both the file that is
        signed and the file that is written (a paired device's save encoded them twice)."""
        fields = self.body_fields(pipeline)
        extra = {k: v for k, v in pipeline.extra.items() if k != entry}
        value = sign(partial(self.write_fields, {**fields, **extra_fields(extra)}))
        pipeline.extra[entry] = extra[entry] = value
        self.write_fields({**fields, **extra_fields(extra)}, stream)

    @staticmethod
    def write_fields(fields: dict[str, Any], stream: IO[bytes]) -> None:
        """Write the file of ``fields`` (the ``Body`` declaration's) to ``stream`` as it is
        built: a first pass over the declaration counts the body without keeping a byte, then
        the envelope goes out, then the body, its CRC computed as it goes and written into the
        envelope last.  A stream that cannot seek back (a MAC fed the file) is given the CRC
        in order instead, from one more counting pass."""
        counted = ChecksumWriter()
        with what_version_1_cannot_hold():
            Body.build_stream(fields, counted)
        length = counted.length
        if length > MAX_BODY:
            raise ValidationError(f"cannot save: {length} bytes is too large for one file")
        head = Envelope.build(
            {"major": MAJOR, "minor": MINOR, "flags": 0, "body_length": length, "crc32": 0}
        )[:CRC_COVERS]
        in_order = not stream.seekable()
        if in_order:
            checked = ChecksumWriter(DISCARD, crc32(head))
            Body.build_stream(fields, checked)
            stream.write(head + struct.pack("<I", checked.crc))
        else:
            start = stream.tell()
            stream.write(head + bytes(ENVELOPE_SIZE - CRC_COVERS))
        body = ChecksumWriter(stream, crc32(head))
        try:
            Body.build_stream(fields, body)
        except cs.StreamError:
            if body.failure is None:
                raise
        if body.failure is not None:
            raise body.failure
        if not in_order:
            stream.seek(start + CRC_COVERS)
            stream.write(struct.pack("<I", body.crc))
            stream.seek(start + ENVELOPE_SIZE + length)

    def body_fields(self, pipeline: Pipeline) -> dict[str, Any]:
        """The fields of the ``Body`` declaration for ``pipeline``: the sections read from a
        file spliced, the others encoded.  Raises ValidationError (see `encode`)."""
        with what_version_1_cannot_hold():
            return self.unchecked_body_fields(pipeline)

    def unchecked_body_fields(self, pipeline: Pipeline) -> dict[str, Any]:
        sections, plans = self.plan(pipeline)
        replicas = self.replicas_of(pipeline, sections, plans)
        index = {rid: i for i, rid in enumerate(replicas)}

        def knowledge_bytes(knowledge: dict[str, int]) -> bytes:
            return b"".join(KNOWLEDGE.pack(index[r], c) for r, c in sorted(knowledge.items()))

        built = [
            splice_section(*plans[kind], index)
            if kind in plans
            else self.section(kind, sorted(sections[kind], key=attrgetter("id")), index)
            for kind in sorted(sections)
        ]
        return {
            "pipeline_id": uuid_bytes([pipeline.pipeline_id], "pipeline id"),
            "replica": index[pipeline.replica_id],
            "name": pipeline.name,
            "owner": pipeline.owner,
            "currency": pipeline.currency,
            "home": pipeline.home,
            "replica_count": len(replicas),
            "replicas": uuid_bytes(replicas, "replica id"),
            "knowledge_count": len(pipeline.knowledge),
            "knowledge": knowledge_bytes(pipeline.knowledge),
            "peer_count": len(pipeline.peers),
            "peers": [
                {"replica": index[r], "entry_count": len(k), "entries": knowledge_bytes(k)}
                for r, k in sorted(pipeline.peers.items())
            ],
            **extra_fields(pipeline.extra),
            "section_count": len(built),
            "sections": built,
        }

    @staticmethod
    def plan(pipeline: Pipeline) -> tuple[dict[str, list[Record]], dict[str, Plan]]:
        """The records of each type to encode, and for the types read from a file whose records
        are still the same set, the section read and its changed records: those sections are
        spliced (the bytes of the records nobody changed are copied, not encoded again)."""
        records = pipeline.records
        sections: dict[str, list[Record]] = {}
        plans: dict[str, Plan] = {}
        if not isinstance(records, RecordTable):
            for record in records.values():
                sections.setdefault(record.kind, []).append(record)
            return sections, plans
        added: dict[str, list[Record]] = {}
        for record in records.added.values():
            added.setdefault(record.kind, []).append(record)
        for number, table in enumerate(records.sources):
            if not isinstance(table, SectionTable):
                raise TypeError(f"cannot splice a section read by {type(table).__name__}")
            slots = records.slots[number]
            strays = [r for _, r in records.made(number) if r.kind != table.kind]
            if table.kind in added or strays or GONE in slots or table.bulk is not None:
                for record in records.section(number):
                    sections.setdefault(record.kind, []).append(record)
                continue
            sections.setdefault(table.kind, [])  # a placeholder: its records are the table's
            plans[table.kind] = (
                table,
                {i: r for i, r in records.made(number) if not table.unchanged(i, r)},
            )
        for kind, more in added.items():
            sections.setdefault(kind, []).extend(more)
        return {kind: found for kind, found in sections.items() if found or kind in plans}, plans

    @staticmethod
    def replicas_of(
        pipeline: Pipeline, sections: dict[str, list[Record]], plans: dict[str, Plan]
    ) -> list[str]:
        """Every replica id the file mentions, sorted, so equal pipelines encode equally."""
        seen = {pipeline.replica_id, *pipeline.knowledge, *pipeline.peers}
        for known in pipeline.peers.values():
            seen.update(known)
        records: list[Record] = []
        for kind, found in sections.items():
            if kind in plans:
                table, changed = plans[kind]
                seen.update(mentioned_replicas(table, changed))
                records.extend(changed.values())
            else:
                records.extend(found)
        for record in records:
            seen.add(record.dot.replica)
            for d in record.field_dots.values():
                seen.add(d.replica)
        return sorted(seen)

    @staticmethod
    def section(kind: str, records: list[Record], index: dict[str, int]) -> dict[str, Any]:
        edited = [(i, r.field_dots) for i, r in enumerate(records) if r.field_dots]
        names: set[str] = set().union(*(r.values for r in records))
        for _, field_dots in edited:
            names.update(field_dots)
        # One pass over the records (each dict visited once) fills every column.
        texts: dict[str, list[str | None]] = {name: [None] * len(records) for name in names}
        for i, record in enumerate(records):
            for name, text in record.values.items():
                texts[name][i] = text
        columns = []
        for name in sorted(names):
            lengths, data = column_bytes(texts.pop(name))
            overrides = [
                OVERRIDE.pack(i, index[d.replica], d.counter, d.at)
                for i, field_dots in edited
                if (d := field_dots.get(name)) is not None
            ]
            columns.append(
                {
                    "name": name,
                    "lengths": lengths,
                    "data_length": len(data),
                    "data": data,
                    "override_count": len(overrides),
                    "overrides": b"".join(overrides),
                }
            )
        return {
            "kind": kind,
            "count": len(records),
            "ids": uuid_bytes([r.id for r in records], "record id"),
            "flags": bytes(DELETED_FLAG if r.deleted else 0 for r in records),
            "dots": b"".join(
                DOT.pack(index[r.dot.replica], r.dot.counter, r.dot.at) for r in records
            ),
            "column_count": len(columns),
            "columns": columns,
        }


def check_sizes(parsed: Any) -> None:
    """Every byte string is as long as declared, or RUNS_PAST.

    The compiled parser reads what is there, not what was declared, so a declared size larger
    than the rest of the body leaves the last field short instead of failing where the
    interpreted parser stops (with RUNS_PAST).  Checking this before anything else gives both the
    same answer, and lets the rest trust every count."""
    fields = [
        (parsed.pipeline_id, 16),
        (parsed.replicas, 16 * parsed.replica_count),
        (parsed.knowledge, KNOWLEDGE.size * parsed.knowledge_count),
    ]
    fields += [(p.entries, KNOWLEDGE.size * p.entry_count) for p in parsed.peers]
    for s in parsed.sections:
        fields += [(s.ids, 16 * s.count), (s.flags, s.count), (s.dots, DOT.size * s.count)]
        for c in s.columns:
            fields += [
                (c.lengths, 4 * s.count),
                (c.data, c.data_length),
                (c.overrides, OVERRIDE.size * c.override_count),
            ]
    if any(len(raw) != size for raw, size in fields):
        raise CorruptBody(RUNS_PAST)


def column_bytes(texts: list[str | None]) -> tuple[bytes, bytes]:
    """A column's length table and data for one value (or None) per record."""
    present = texts if None not in texts else [t for t in texts if t is not None]
    joined = "".join(present)  # type: ignore[arg-type]
    if joined.isascii():
        data = joined.encode("ascii")
        sizes = list(map(len, present))  # type: ignore[arg-type]
    else:
        raws = [t.encode("utf-8") for t in present]  # type: ignore[union-attr]
        data = b"".join(raws)
        sizes = list(map(len, raws))
    if present is texts:
        lengths = array(U32, sizes)
    else:
        next_size = iter(sizes).__next__
        lengths = array(U32, [ABSENT if t is None else next_size() for t in texts])
    if BIG_ENDIAN_HOST:
        lengths.byteswap()
    return lengths.tobytes(), data


@hookimpl
def salesmgr_register_codecs(register: Callable[[Codec], None]) -> None:
    register(PipelineCodecV1())
