"""Drops: the messages of a store-and-forward sync (``folder://``), each a whole sealed file.

When the desktop and the device are never connected at the same time, each leaves a *drop* for
the other in a shared mailbox: the device an OFFER (its changes), the desktop an ANSWER (what
the device lacks) or a LOAD (the whole pipeline), the device a REFUSAL when it cannot take one.
`salesmgr.sync.mailbox` runs the two halves of such a sync; this module only says what a drop is.

A drop is an envelope, a body and a tag.  The tag is HMAC-SHA256 over envelope and body under a
key derived from the pairing secret and the drop's own random nonce, so the secret never lies in
the mailbox and a drop from someone without it is refused before anything is applied.  Reading
checks, on the raw bytes and in this order: the length, the magic, the flags, the declared body
length against the bytes present (fewer: *incomplete* — it may still be arriving), the CRC
(*damaged*), the tag (*foreign*: another secret, or altered), then the format version; only then
does the **compiled** body parser see the bytes.  Records travel as a pipeline file (the
registered codec, with its own CRC) holding just those records, like a BATCH of the live
protocol.  The construct declarations below are the source of truth for ``docs/protocol.md``.
"""

from __future__ import annotations

import hmac
import io
import os
import re
import secrets
import struct
import uuid
from dataclasses import dataclass, field
from enum import IntEnum
from hashlib import sha256
from io import BufferedIOBase
from typing import Any, ClassVar

import construct as cs
from construct import this

from salesmgr import storage
from salesmgr.errors import DamagedDrop, DropError, ForeignDrop, IncompleteDrop, PipelineFileError
from salesmgr.model.pipeline import Pipeline, Record
from salesmgr.pieces import Window, crc32, crc32_of
from salesmgr.plugin.manager import Registry
from salesmgr.sync.wire.compiled import CompiledOnUse
from salesmgr.sync.wire.protocol import (
    MALFORMED,
    Knowledge,
    Text,
    Uuid,
    knowledge_from_body,
    knowledge_to_body,
    uuid_from_bytes,
    uuid_to_bytes,
)

MAGIC = b"SMGRDROP"
VERSION = 1
NONCE_SIZE = 16
TAG_SIZE = 32  # HMAC-SHA256
MAX_BODY = 1 << 30  # far above any pipeline we build; a larger declared length is hostile
KEY_LABEL = b"salesmgr drop key\x00"
SUFFIX = ".smdrop"
ZERO_ID = "00000000-0000-0000-0000-000000000000"

Envelope = cs.Struct(
    "magic" / cs.Const(MAGIC),
    "version" / cs.Int8ul,  # drop format version of the writer
    "kind" / cs.Int8ul,  # see DropKind
    "flags" / cs.Int16ul,  # reserved, 0
    "nonce" / cs.Bytes(NONCE_SIZE),  # fresh per drop: the sealing key is derived from it
    "body_length" / cs.Int32ul,
    "body_crc32" / cs.Int32ul,  # zlib CRC-32 of the body
)
ENVELOPE_SIZE = Envelope.sizeof()
HEADER = struct.Struct("<8sBBH16sII")  # the same bytes, for building without construct
MAX_DROP = ENVELOPE_SIZE + MAX_BODY + TAG_SIZE

# The records a drop carries, last in every body that has any.
RECORDS = (
    "records" / cs.Int32ul,  # how many records the payload holds
    "payload_length" / cs.Int32ul,  # 0 when there are no records
    "payload" / cs.Bytes(this.payload_length),  # a pipeline file holding just these records
)
# The desktop's pipeline header, so a blank device can become this pipeline.
PIPELINE_HEADER = (
    "pipeline_id" / Uuid,
    "desktop_replica" / Uuid,
    "name" / Text,
    "owner" / Text,
    "currency" / Text,
    "extra_count" / cs.Int32ul,
    "extra" / cs.Array(this.extra_count, cs.Struct("key" / Text, "value" / Text)),
)

OfferBody = cs.Struct(
    "drop_id" / Uuid,
    "created_ms" / cs.Int64ul,  # the device's clock; orders offers, decides nothing else
    "flags" / cs.Int8ul,  # bit 0: blank device (no pipeline or no records); bit 1: agreement
    "pipeline_id" / Uuid,  # all zero when the device holds no pipeline
    "device_replica" / Uuid,
    "desktop_replica" / Uuid,  # the desktop the agreement is with; zero when none
    "reply_to" / Uuid,  # the ANSWER (resend) this offer replies to; zero when none
    "name" / Text,  # the device's pipeline name, for messages
    "live_records" / cs.Int32ul,  # for the mass-change guard
    "knowledge" / Knowledge,  # the device's version vector
    "agreement" / Knowledge,  # what the device last learned that desktop knows
    "since" / Knowledge,  # the records are every write this vector does not cover
    *RECORDS,
    cs.Terminated,
)
AnswerBody = cs.Struct(
    "drop_id" / Uuid,
    "created_ms" / cs.Int64ul,
    "offer_id" / Uuid,  # the offer this answers
    "flags" / cs.Int8ul,  # bit 0: resend — the offer was not enough, offer again since `since`
    "device_replica" / Uuid,  # the replica the offer came from
    *PIPELINE_HEADER,
    "knowledge" / Knowledge,  # the desktop's version vector, with the merge
    "since" / Knowledge,  # resend only: what the next offer must cover ({} = everything)
    *RECORDS,
    cs.Terminated,
)
LoadBody = cs.Struct(
    "drop_id" / Uuid,
    "created_ms" / cs.Int64ul,
    *PIPELINE_HEADER,
    "knowledge" / Knowledge,  # the desktop's version vector
    *RECORDS,  # the whole pipeline
    cs.Terminated,
)
RefusalBody = cs.Struct(
    "drop_id" / Uuid,
    "created_ms" / cs.Int64ul,
    "refused" / Uuid,  # the drop that was not taken
    "code" / cs.Int8ul,  # an ErrorCode of the live protocol
    "text" / Text,  # one line for the user
    cs.Terminated,
)


class DropKind(IntEnum):
    OFFER = 1  # device -> desktop
    ANSWER = 2  # desktop -> device
    LOAD = 3  # desktop -> device
    REFUSAL = 4  # device -> desktop


# --- drops as dataclasses (converted at the edge) ----------------------------------------------


def new_drop_id() -> str:
    return str(uuid.uuid4())


def id_or_none(raw: bytes) -> str | None:
    return uuid_from_bytes(raw) if any(raw) else None


def raw_id(value: str | None) -> bytes:
    return uuid_to_bytes(value) if value else bytes(16)


@dataclass
class Drop:
    KIND: ClassVar[DropKind]
    BODY: ClassVar[cs.Construct]
    HAS_RECORDS: ClassVar[bool] = True  # the body ends with RECORDS
    drop_id: str
    created_ms: int

    @property
    def entry(self) -> str:
        """The drop's entry name in a mailbox: ``offer-<32 hex digits>.smdrop``."""
        return drop_name(self.KIND, self.drop_id)

    @property
    def kind_name(self) -> str:
        return self.KIND.name.lower()

    @property
    def pipeline(self) -> str | None:
        """The pipeline its records belong to (None: a blank device's offer)."""
        return None

    @property
    def sender(self) -> str:
        return ZERO_ID

    @property
    def carried(self) -> list[Record]:
        return []

    def to_body(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_body(cls, parsed: Any, records: list[Record]) -> Drop:
        raise NotImplementedError


def header_to_body(pipeline_id: str, desktop_replica: str, name: str, owner: str,
                   currency: str, extra: dict[str, str]) -> dict[str, Any]:
    return {
        "pipeline_id": uuid_to_bytes(pipeline_id),
        "desktop_replica": uuid_to_bytes(desktop_replica),
        "name": name,
        "owner": owner,
        "currency": currency,
        "extra_count": len(extra),
        "extra": [{"key": k, "value": v} for k, v in sorted(extra.items())],
    }


def extra_from_body(parsed: Any) -> dict[str, str]:
    extra = {e.key: e.value for e in parsed.extra}
    if len(extra) != len(parsed.extra):
        raise ValueError("an extra header key appears twice")
    return extra


@dataclass
class Offer(Drop):
    """The device's changes since what it last learned the desktop knows (or everything)."""

    KIND = DropKind.OFFER
    BODY = OfferBody
    pipeline_id: str | None  # None: the device holds no pipeline
    device_replica: str
    desktop_replica: str | None  # the desktop the agreement is with
    name: str  # the device's pipeline name
    live_records: int
    knowledge: dict[str, int]
    agreement: dict[str, int] | None
    since: dict[str, int]
    records: list[Record] = field(default_factory=list, repr=False)
    blank: bool = False
    reply_to: str | None = None

    @property
    def pipeline(self) -> str | None:
        return self.pipeline_id

    @property
    def sender(self) -> str:
        return self.device_replica

    @property
    def carried(self) -> list[Record]:
        return self.records

    def to_body(self) -> dict[str, Any]:
        flags = (1 if self.blank else 0) | (2 if self.agreement is not None else 0)
        return {
            "drop_id": uuid_to_bytes(self.drop_id),
            "created_ms": self.created_ms,
            "flags": flags,
            "pipeline_id": raw_id(self.pipeline_id),
            "device_replica": uuid_to_bytes(self.device_replica),
            "desktop_replica": raw_id(self.desktop_replica),
            "reply_to": raw_id(self.reply_to),
            "name": self.name,
            "live_records": self.live_records,
            "knowledge": knowledge_to_body(self.knowledge),
            "agreement": knowledge_to_body(self.agreement or {}),
            "since": knowledge_to_body(self.since),
        }

    @classmethod
    def from_body(cls, parsed: Any, records: list[Record]) -> Offer:
        if parsed.flags & ~3:
            raise ValueError("unknown offer flags")
        return cls(
            uuid_from_bytes(parsed.drop_id),
            parsed.created_ms,
            id_or_none(parsed.pipeline_id),
            uuid_from_bytes(parsed.device_replica),
            id_or_none(parsed.desktop_replica),
            parsed.name,
            parsed.live_records,
            knowledge_from_body(parsed.knowledge),
            knowledge_from_body(parsed.agreement) if parsed.flags & 2 else None,
            knowledge_from_body(parsed.since),
            records,
            blank=bool(parsed.flags & 1),
            reply_to=id_or_none(parsed.reply_to),
        )


class FromDesktop:
    """What every drop the desktop leaves says about itself (an answer, a load)."""

    pipeline_id: str
    desktop_replica: str
    records: list[Record]

    @property
    def pipeline(self) -> str | None:
        return self.pipeline_id

    @property
    def sender(self) -> str:
        return self.desktop_replica

    @property
    def carried(self) -> list[Record]:
        return self.records


@dataclass
class Answer(FromDesktop, Drop):
    """The desktop's reply to an offer: what the device lacks, or a request to offer again."""

    KIND = DropKind.ANSWER
    BODY = AnswerBody
    offer_id: str
    device_replica: str
    pipeline_id: str
    desktop_replica: str
    name: str
    owner: str
    currency: str
    extra: dict[str, str]
    knowledge: dict[str, int]
    records: list[Record] = field(default_factory=list, repr=False)
    resend: bool = False
    since: dict[str, int] = field(default_factory=dict)

    def to_body(self) -> dict[str, Any]:
        return {
            "drop_id": uuid_to_bytes(self.drop_id),
            "created_ms": self.created_ms,
            "offer_id": uuid_to_bytes(self.offer_id),
            "flags": 1 if self.resend else 0,
            "device_replica": uuid_to_bytes(self.device_replica),
            **header_to_body(self.pipeline_id, self.desktop_replica, self.name, self.owner,
                             self.currency, self.extra),
            "knowledge": knowledge_to_body(self.knowledge),
            "since": knowledge_to_body(self.since),
        }

    @classmethod
    def from_body(cls, parsed: Any, records: list[Record]) -> Answer:
        if parsed.flags & ~1:
            raise ValueError("unknown answer flags")
        return cls(
            uuid_from_bytes(parsed.drop_id),
            parsed.created_ms,
            uuid_from_bytes(parsed.offer_id),
            uuid_from_bytes(parsed.device_replica),
            uuid_from_bytes(parsed.pipeline_id),
            uuid_from_bytes(parsed.desktop_replica),
            parsed.name,
            parsed.owner,
            parsed.currency,
            extra_from_body(parsed),
            knowledge_from_body(parsed.knowledge),
            records,
            resend=bool(parsed.flags & 1),
            since=knowledge_from_body(parsed.since),
        )


@dataclass
class Load(FromDesktop, Drop):
    """The desktop's whole pipeline, for a device that holds nothing the desktop lacks."""

    KIND = DropKind.LOAD
    BODY = LoadBody
    pipeline_id: str
    desktop_replica: str
    name: str
    owner: str
    currency: str
    extra: dict[str, str]
    knowledge: dict[str, int]
    records: list[Record] = field(default_factory=list, repr=False)

    def to_body(self) -> dict[str, Any]:
        return {
            "drop_id": uuid_to_bytes(self.drop_id),
            "created_ms": self.created_ms,
            **header_to_body(self.pipeline_id, self.desktop_replica, self.name, self.owner,
                             self.currency, self.extra),
            "knowledge": knowledge_to_body(self.knowledge),
        }

    @classmethod
    def from_body(cls, parsed: Any, records: list[Record]) -> Load:
        return cls(
            uuid_from_bytes(parsed.drop_id),
            parsed.created_ms,
            uuid_from_bytes(parsed.pipeline_id),
            uuid_from_bytes(parsed.desktop_replica),
            parsed.name,
            parsed.owner,
            parsed.currency,
            extra_from_body(parsed),
            knowledge_from_body(parsed.knowledge),
            records,
        )


@dataclass
class Refusal(Drop):
    """The device did not take a drop (a load onto unsynced changes, another pipeline)."""

    KIND = DropKind.REFUSAL
    BODY = RefusalBody
    HAS_RECORDS = False
    refused: str
    code: int
    text: str

    def to_body(self) -> dict[str, Any]:
        return {
            "drop_id": uuid_to_bytes(self.drop_id),
            "created_ms": self.created_ms,
            "refused": uuid_to_bytes(self.refused),
            "code": int(self.code),
            "text": self.text,
        }

    @classmethod
    def from_body(cls, parsed: Any, records: list[Record]) -> Refusal:
        return cls(
            uuid_from_bytes(parsed.drop_id),
            parsed.created_ms,
            uuid_from_bytes(parsed.refused),
            parsed.code,
            parsed.text,
        )


DROPS: dict[DropKind, type[Drop]] = {d.KIND: d for d in (Offer, Answer, Load, Refusal)}
COMPILED: dict[DropKind, Any] = CompiledOnUse({k: d.BODY for k, d in DROPS.items()},
                                              lambda body: body.compile())
NAME = re.compile(r"(offer|answer|load|refusal)-([0-9a-f]{32})" + re.escape(SUFFIX))


def drop_name(kind: DropKind, drop_id: str) -> str:
    return f"{kind.name.lower()}-{uuid.UUID(drop_id).hex}{SUFFIX}"


def parse_name(name: str) -> tuple[DropKind, str] | None:
    """The kind and id a drop's entry name claims, or None for any other name."""
    found = NAME.fullmatch(name)
    if found is None:
        return None
    return DropKind[found.group(1).upper()], str(uuid.UUID(hex=found.group(2)))


# --- sealing and reading -------------------------------------------------------------------------


def drop_key(secret: bytes, nonce: bytes) -> bytes:
    return hmac.new(secret, KEY_LABEL + nonce, sha256).digest()


def seal(drop: Drop, secret: bytes, registry: Registry | None = None) -> bytes:
    """The bytes of ``drop``, its records encoded with the registered codec, sealed."""
    records = drop.carried
    payload = b""
    if records:
        if drop.pipeline is None:
            raise DropError("a drop for no pipeline cannot carry records")
        mini = Pipeline(
            pipeline_id=drop.pipeline,
            replica_id=drop.sender,
            records={r.id: r for r in records},
        )
        payload = storage.encode(mini, registry)
    values = drop.to_body()
    if drop.HAS_RECORDS:
        values.update(records=len(records), payload_length=len(payload), payload=payload)
    body = drop.BODY.build(values)
    if len(body) > MAX_BODY:
        raise DropError(f"a {drop.kind_name} of {len(body)} bytes is too large to leave")
    nonce = secrets.token_bytes(NONCE_SIZE)
    header = HEADER.pack(MAGIC, VERSION, int(drop.KIND), 0, nonce, len(body), crc32(body))
    return header + body + hmac.new(drop_key(secret, nonce), header + body, sha256).digest()


def check_envelope(head: bytes, size: int, source: str) -> None:
    """Check a drop's envelope (its first `ENVELOPE_SIZE` bytes) against the drop's whole
    ``size``, so that a file that cannot be a drop is refused before the rest of it is read."""
    if len(head) < ENVELOPE_SIZE:
        if MAGIC.startswith(head[: len(MAGIC)]):
            raise IncompleteDrop(f"{source}: truncated ({size} bytes, not even an envelope)")
        raise DamagedDrop(f"{source}: not a salesmgr drop")
    magic, _, _, flags, _, length, _ = HEADER.unpack_from(head)
    if magic != MAGIC:
        raise DamagedDrop(f"{source}: not a salesmgr drop")
    if flags:
        raise DamagedDrop(f"{source}: unknown envelope flags {flags:#06x}")
    if length > MAX_BODY:
        raise DamagedDrop(f"{source}: declared body length {length} is impossible")
    expected = ENVELOPE_SIZE + length + TAG_SIZE
    if size < expected:
        raise IncompleteDrop(f"{source}: truncated ({size} of {expected} bytes)")
    if size > expected:
        raise DamagedDrop(f"{source}: {size - expected} bytes after the end of the drop")


def unseal(
    data: bytes, secret: bytes, source: str, registry: Registry | None = None
) -> Drop:
    """The drop in ``data`` (see `read_drop`)."""
    return read_drop(io.BytesIO(data), len(data), secret, source, registry)


def unseal_file(
    path: str | os.PathLike[str], secret: bytes, source: str, registry: Registry | None = None
) -> Drop:
    """The drop in the file at ``path`` (see `read_drop`); OSError if it cannot be opened."""
    with open(path, "rb") as handle:
        return read_drop(handle, os.fstat(handle.fileno()).st_size, secret, source, registry)


def read_drop(
    stream: BufferedIOBase, size: int, secret: bytes, source: str, registry: Registry | None = None
) -> Drop:
    """The drop in the ``size`` bytes of ``stream`` (at its start), checked envelope first (see
    the module docstring for the order), and read in bounded pieces: the envelope is checked
    against ``size`` and `MAX_BODY` before another byte is read, the CRC and the tag are computed
    piece by piece, then the body is parsed field by field.

    Raises IncompleteDrop, DamagedDrop or ForeignDrop naming ``source`` and the problem."""
    head = stream.read(ENVELOPE_SIZE)
    check_envelope(head, size, source)
    magic, version, kind_code, flags, nonce, length, crc = HEADER.unpack_from(head)
    tag_of = hmac.new(drop_key(secret, nonce), head, sha256)
    if crc32_of(stream, length, also=tag_of.update) != crc:
        raise DamagedDrop(f"{source}: damaged (checksum mismatch)")
    if not hmac.compare_digest(stream.read(TAG_SIZE), tag_of.digest()):
        raise ForeignDrop(
            f"{source}: failed its authentication check: sealed with another pairing secret, "
            "or altered"
        )
    if version != VERSION:
        raise DamagedDrop(
            f"{source}: a drop of format version {version}; this salesmgr reads {VERSION}"
        )
    try:
        kind = DropKind(kind_code)
    except ValueError:
        raise DamagedDrop(f"{source}: unknown drop kind {kind_code}") from None
    stream.seek(ENVELOPE_SIZE)
    body = Window(stream, length)
    try:
        parsed = COMPILED[kind].parse_stream(body)
    except MALFORMED:
        raise DamagedDrop(f"{source}: malformed {kind.name.lower()}") from None
    if body.finish() != crc:  # written over in place since its tag was checked
        raise DamagedDrop(f"{source}: changed while it was being read")
    records = payload_records(parsed, kind, source, registry)
    try:
        return DROPS[kind].from_body(parsed, records)
    except ValueError as problem:
        raise DamagedDrop(f"{source}: malformed {kind.name.lower()} ({problem})") from None


def payload_records(
    parsed: Any, kind: DropKind, source: str, registry: Registry | None
) -> list[Record]:
    count = getattr(parsed, "records", 0)
    payload = getattr(parsed, "payload", b"")
    if not payload:
        if count:
            raise DamagedDrop(f"{source}: announces {count} records but carries none")
        return []
    try:
        mini = storage.decode(payload, f"{source} (its records)", registry)
    except PipelineFileError as problem:
        raise DamagedDrop(str(problem)) from None
    pipeline_id = id_or_none(bytes(parsed.pipeline_id))
    if mini.pipeline_id != pipeline_id:
        raise DamagedDrop(f"{source}: carries records of another pipeline")
    if len(mini.records) != count:
        raise DamagedDrop(f"{source}: holds {len(mini.records)} records, not {count}")
    return list(mini.records.values())


