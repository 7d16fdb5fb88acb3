"""The pipeline file format, version 1: a checked envelope around a columnar body.

The construct declarations below are the source of truth; ``docs/file-format.md`` follows them
field by field.  Reading checks the envelope (magic, version, length, CRC32) on the raw bytes
first; only bytes that passed reach the *compiled* body parser, whose speed comes from skipping the
checks a corrupt file would need.
"""

from __future__ import annotations

import struct
import zlib
from array import array
from collections.abc import Callable, Iterable
from itertools import accumulate
from typing import Any

import construct as cs
from construct import this

from salesmgr.errors import PipelineFileError
from salesmgr.hookspecs import hookimpl
from salesmgr.model import Dot, Pipeline, Record
from salesmgr.registry import Codec

MAGIC = b"SMGRPIPE"
MAJOR, MINOR = 1, 0
MAX_BODY = 1 << 32  # 4 GiB: far beyond any pipeline; a larger declared length is hostile
ABSENT = 0xFFFFFFFF  # column length meaning "this record has no value for this field"

Envelope = cs.Struct(
    "magic" / cs.Const(MAGIC),
    "major" / cs.Int8ul,
    "minor" / cs.Int8ul,
    "flags" / cs.Int16ul,  # reserved, 0
    "body_length" / cs.Int64ul,
    "body_crc32" / cs.Int32ul,
)
ENVELOPE_SIZE = Envelope.sizeof()

Text = cs.PascalString(cs.Int32ul, "utf8")
DOT = struct.Struct("<IQq")  # replica index, counter, wall clock in ms
OVERRIDE = struct.Struct("<IIQq")  # record index, then a DOT

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
    "entries" / cs.Bytes(12 * this.entry_count),  # (replica index u32, counter u64)
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
    "knowledge" / cs.Bytes(12 * this.knowledge_count),
    "peer_count" / cs.Int32ul,
    "peers" / cs.Array(this.peer_count, PeerKnowledge),
    "extra_count" / cs.Int32ul,
    "extra" / cs.Array(this.extra_count, cs.Struct("key" / Text, "value" / Text)),
    "section_count" / cs.Int32ul,
    "sections" / cs.Array(this.section_count, Section),
)
CompiledBody = Body.compile()

KNOWLEDGE = struct.Struct("<IQ")
U32 = "I" if array("I").itemsize == 4 else "L"
BIG_ENDIAN_HOST = struct.pack("=I", 1) != struct.pack("<I", 1)


def uuid_text(raw: bytes) -> str:
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def uuid_bytes(text: str) -> bytes:
    return bytes.fromhex(text.replace("-", ""))


class CorruptBody(Exception):
    """The body passed its CRC but breaks a rule of the format (a hostile or buggy writer)."""


class PipelineCodecV1(Codec):
    format = "pipeline"
    version = (MAJOR, MINOR)
    help = "binary columnar pipeline file (CRC32-checked)"

    def __init__(self, parser: Any = CompiledBody) -> None:
        self.parser = parser

    def sniff(self, head: bytes) -> bool:
        return head[: len(MAGIC)] == MAGIC

    # -- reading ----------------------------------------------------------------------------
    def decode(self, data: bytes, source: str) -> Pipeline:
        body = self.open_envelope(data, source)
        try:
            parsed = self.parser.parse(body)
            return self.to_pipeline(parsed, len(body))
        except (cs.ConstructError, struct.error, UnicodeDecodeError, CorruptBody) as problem:
            raise PipelineFileError(source, f"corrupt pipeline file ({problem})") from None
        except (ValueError, IndexError, OverflowError, MemoryError) as problem:
            raise PipelineFileError(source, f"corrupt pipeline file ({problem!r})") from None

    @staticmethod
    def open_envelope(data: bytes, source: str) -> bytes:
        if len(data) < ENVELOPE_SIZE:
            if MAGIC.startswith(data[: len(MAGIC)]) and data:
                raise PipelineFileError(source, f"truncated ({len(data)} bytes)")
            raise PipelineFileError(source, "not a salesmgr pipeline file")
        try:
            env = Envelope.parse(data[:ENVELOPE_SIZE])
        except cs.ConstructError:
            raise PipelineFileError(source, "not a salesmgr pipeline file") from None
        if env.major > MAJOR:
            raise PipelineFileError(
                source,
                f"format version {env.major}.{env.minor} is newer than this salesmgr reads "
                f"({MAJOR}.x); upgrade salesmgr",
            )
        if env.major < 1:
            raise PipelineFileError(source, f"unknown format version {env.major}.{env.minor}")
        present = len(data) - ENVELOPE_SIZE
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
        body = data[ENVELOPE_SIZE:]
        if zlib.crc32(body) != env.body_crc32:
            raise PipelineFileError(source, "checksum mismatch: the file is damaged")
        return body

    def to_pipeline(self, parsed: Any, body_length: int) -> Pipeline:
        raw_replicas = parsed.replicas
        replicas = [uuid_text(raw_replicas[i : i + 16]) for i in range(0, len(raw_replicas), 16)]
        if len(replicas) != parsed.replica_count or len(parsed.pipeline_id) != 16:
            raise CorruptBody("short replica table")

        def replica(index: int) -> str:
            if index >= len(replicas):
                raise CorruptBody(f"replica index {index} out of range")
            return replicas[index]

        def knowledge_of(raw: bytes) -> dict[str, int]:
            if len(raw) % KNOWLEDGE.size:
                raise CorruptBody("short knowledge table")
            return {replica(i): c for i, c in KNOWLEDGE.iter_unpack(raw)}

        pipeline = Pipeline(
            pipeline_id=uuid_text(parsed.pipeline_id),
            name=parsed.name,
            owner=parsed.owner,
            currency=parsed.currency,
            replica_id=replica(parsed.replica),
            home=parsed.home,
            knowledge=knowledge_of(parsed.knowledge),
            peers={replica(p.replica): knowledge_of(p.entries) for p in parsed.peers},
            extra={e.key: e.value for e in parsed.extra},
        )
        dot_cache: dict[tuple[int, int, int], Dot] = {}

        def dot(index: int, counter: int, at: int) -> Dot:
            key = (index, counter, at)
            found = dot_cache.get(key)
            if found is None:
                found = dot_cache[key] = Dot(counter, replica(index), at)
            return found

        records = pipeline.records
        for section in parsed.sections:
            self.read_section(section, records, dot)
        return pipeline

    @staticmethod
    def read_section(
        section: Any, records: dict[str, Record], dot: Callable[[int, int, int], Dot]
    ) -> None:
        count, kind = section.count, section.kind
        ids_raw, flags, dots_raw = section.ids, section.flags, section.dots
        if len(ids_raw) != 16 * count or len(flags) != count or len(dots_raw) != DOT.size * count:
            raise CorruptBody(f"short record table in section {kind!r}")
        ids = [uuid_text(ids_raw[i : i + 16]) for i in range(0, 16 * count, 16)]
        base_dots = [dot(*d) for d in DOT.iter_unpack(dots_raw)]
        values: list[dict[str, str]] = [{} for _ in range(count)]
        field_dots: list[dict[str, Dot]] = [{} for _ in range(count)]
        for column in section.columns:
            name = column.name
            for index, text in column_values(column, count):
                values[index][name] = text
            if len(column.overrides) != OVERRIDE.size * column.override_count:
                raise CorruptBody(f"short override table in column {name!r}")
            for index, rep, counter, at in OVERRIDE.iter_unpack(column.overrides):
                if index >= count:
                    raise CorruptBody(f"record index {index} out of range")
                field_dots[index][name] = dot(rep, counter, at)
        for i, record_id in enumerate(ids):
            if record_id in records:
                raise CorruptBody(f"record {record_id} appears twice")
            records[record_id] = Record(
                kind, record_id, values[i], base_dots[i], field_dots[i], bool(flags[i] & 1)
            )

    # -- writing ----------------------------------------------------------------------------
    def encode(self, pipeline: Pipeline) -> bytes:
        index: dict[str, int] = {}
        for rid in self.replicas_of(pipeline):
            index.setdefault(rid, len(index))

        def knowledge_bytes(knowledge: dict[str, int]) -> bytes:
            return b"".join(KNOWLEDGE.pack(index[r], c) for r, c in sorted(knowledge.items()))

        by_kind: dict[str, list[Record]] = {}
        for record in pipeline.records.values():
            by_kind.setdefault(record.kind, []).append(record)
        sections = [
            self.section(kind, sorted(by_kind[kind], key=lambda r: r.id), index)
            for kind in sorted(by_kind)
        ]
        body = Body.build(
            {
                "pipeline_id": uuid_bytes(pipeline.pipeline_id),
                "replica": index[pipeline.replica_id],
                "name": pipeline.name,
                "owner": pipeline.owner,
                "currency": pipeline.currency,
                "home": pipeline.home,
                "replica_count": len(index),
                "replicas": b"".join(uuid_bytes(r) for r in index),
                "knowledge_count": len(pipeline.knowledge),
                "knowledge": knowledge_bytes(pipeline.knowledge),
                "peer_count": len(pipeline.peers),
                "peers": [
                    {
                        "replica": index[r],
                        "entry_count": len(k),
                        "entries": knowledge_bytes(k),
                    }
                    for r, k in sorted(pipeline.peers.items())
                ],
                "extra_count": len(pipeline.extra),
                "extra": [{"key": k, "value": v} for k, v in sorted(pipeline.extra.items())],
                "section_count": len(sections),
                "sections": sections,
            }
        )
        envelope = Envelope.build(
            {
                "major": MAJOR,
                "minor": MINOR,
                "flags": 0,
                "body_length": len(body),
                "body_crc32": zlib.crc32(body),
            }
        )
        return envelope + body

    @staticmethod
    def replicas_of(pipeline: Pipeline) -> list[str]:
        """Every replica id the file mentions, sorted, so equal pipelines encode equally."""
        seen = {pipeline.replica_id, *pipeline.knowledge, *pipeline.peers}
        for known in pipeline.peers.values():
            seen.update(known)
        for record in pipeline.records.values():
            seen.add(record.dot.replica)
            for d in record.field_dots.values():
                seen.add(d.replica)
        return sorted(seen)

    @staticmethod
    def section(kind: str, records: list[Record], index: dict[str, int]) -> dict[str, Any]:
        names: set[str] = set()
        for record in records:
            names.update(record.values)
            names.update(record.field_dots)
        columns = []
        for name in sorted(names):
            lengths = array(U32)
            chunks: list[bytes] = []
            overrides: list[bytes] = []
            for i, record in enumerate(records):
                text = record.values.get(name)
                if text is None:
                    lengths.append(ABSENT)
                else:
                    raw = text.encode("utf-8")
                    lengths.append(len(raw))
                    chunks.append(raw)
                d = record.field_dots.get(name)
                if d is not None:
                    overrides.append(OVERRIDE.pack(i, index[d.replica], d.counter, d.at))
            data = b"".join(chunks)
            columns.append(
                {
                    "name": name,
                    "lengths": little_endian(lengths),
                    "data_length": len(data),
                    "data": data,
                    "override_count": len(overrides),
                    "overrides": b"".join(overrides),
                }
            )
        return {
            "kind": kind,
            "count": len(records),
            "ids": b"".join(uuid_bytes(r.id) for r in records),
            "flags": bytes(1 if r.deleted else 0 for r in records),
            "dots": b"".join(
                DOT.pack(index[r.dot.replica], r.dot.counter, r.dot.at) for r in records
            ),
            "column_count": len(columns),
            "columns": columns,
        }


def little_endian(values: array) -> bytes:
    if BIG_ENDIAN_HOST:
        values = array(values.typecode, values)
        values.byteswap()
    return values.tobytes()


def column_values(column: Any, count: int) -> Iterable[tuple[int, str]]:
    """(record index, text) for every record that has a value in this column."""
    raw = column.lengths
    if len(raw) != 4 * count:
        raise CorruptBody(f"short length table in column {column.name!r}")
    lengths = array(U32)
    lengths.frombytes(raw)
    if BIG_ENDIAN_HOST:
        lengths.byteswap()
    data = column.data
    present = [(i, n) for i, n in enumerate(lengths) if n != ABSENT]
    ends = list(accumulate(n for _, n in present))
    if (ends[-1] if ends else 0) != len(data) or len(data) != column.data_length:
        raise CorruptBody(f"lengths in column {column.name!r} do not add up")
    if data.isascii():
        # One decode for the whole column; byte offsets are then character offsets.
        text = data.decode("ascii")
        return [(i, text[end - n : end]) for (i, n), end in zip(present, ends, strict=True)]
    view = memoryview(data)
    return [
        (i, str(view[end - n : end], "utf-8")) for (i, n), end in zip(present, ends, strict=True)
    ]


@hookimpl
def salesmgr_register_codecs(register: Callable[[Codec], None]) -> None:
    register(PipelineCodecV1())
