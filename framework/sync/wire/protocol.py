"""The sync protocol's messages, version 1: a checked envelope around a compiled body.

The construct declarations below are the source of truth; ``docs/protocol.md`` follows them field
by field.  Reading a message checks the envelope on the raw bytes first — magic, version, length,
CRC32 and, once the two ends have authenticated, the HMAC tag — and only bytes that passed reach
the *compiled* body parser (construct's compiled parsers skip the checks a damaged message needs).

The envelope layout and the ERROR body never change between protocol versions, so two ends of
different versions can always tell each other why they cannot talk.
"""

from __future__ import annotations

import hmac
import io
import struct
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from hashlib import sha256
from typing import Any, ClassVar

import construct as cs
from construct import this

from salesmgr.errors import ProtocolError, VersionMismatch
from salesmgr.pieces import Window, crc32
from salesmgr.sync.wire.compiled import CompiledOnUse
from salesmgr.sync.wire.limits import (
    HEADER,
    MAX_BODY,
    MAX_MESSAGE,  # noqa: F401  (the cap, for whoever reads messages)
    TAG_SIZE,
)

MAGIC = b"SMSY"
VERSION = 1
NONCE_SIZE = 32
SEALED = 0x0001  # envelope flag: a TAG_SIZE-byte HMAC tag follows the body
# What construct's parsers raise on a malformed body.  Compiled parsers unpack with the struct
# module directly, so a body cut short raises struct.error, not a ConstructError.
MALFORMED = (
    cs.ConstructError, struct.error, UnicodeDecodeError, ValueError, IndexError, OverflowError
)

Envelope = cs.Struct(
    "magic" / cs.Const(MAGIC),
    "version" / cs.Int8ul,  # protocol version of the sender
    "type" / cs.Int8ul,  # message type, see MessageType
    "flags" / cs.Int16ul,  # bit 0: sealed (HMAC tag after the body); other bits 0
    "seq" / cs.Int32ul,  # per direction, from 0: a repeated number is a duplicate delivery
    "body_length" / cs.Int32ul,
    "body_crc32" / cs.Int32ul,
)
ENVELOPE_SIZE = Envelope.sizeof()  # HEADER (`limits`) packs the same bytes without construct

Text = cs.PascalString(cs.Int32ul, "utf8")
Uuid = cs.Bytes(16)

Knowledge = cs.Struct(
    "count" / cs.Int32ul,
    "entries" / cs.Array(this.count, cs.Struct("replica" / Uuid, "counter" / cs.Int64ul)),
)

HelloBody = cs.Struct(
    "nonce" / cs.Bytes(NONCE_SIZE),  # the desktop's challenge to the device
    "software" / Text,  # e.g. "salesmgr 0.1.0", for messages only
    cs.Terminated,
)
ChallengeBody = cs.Struct(
    "nonce" / cs.Bytes(NONCE_SIZE),  # the device's challenge to the desktop
    "proof" / cs.Bytes(TAG_SIZE),  # HMAC(secret, "salesmgr device proof" + both nonces)
    "software" / Text,
    cs.Terminated,
)
ProofBody = cs.Struct(
    "proof" / cs.Bytes(TAG_SIZE),  # HMAC(secret, "salesmgr desktop proof" + both nonces)
    cs.Terminated,
)
OpenBody = cs.Struct(
    "mode" / cs.Int8ul,  # 1 sync, 2 load
    "flags" / cs.Int8ul,  # bit 0: dry run (the device must not commit)
    "pipeline_id" / Uuid,
    "desktop_replica" / Uuid,
    "name" / Text,  # the pipeline header, so a blank device can become this pipeline
    "owner" / Text,
    "currency" / Text,
    "extra_count" / cs.Int32ul,
    "extra" / cs.Array(this.extra_count, cs.Struct("key" / Text, "value" / Text)),
    "knowledge" / Knowledge,  # the desktop's version vector
    cs.Terminated,
)
StateBody = cs.Struct(
    "flags" / cs.Int8ul,  # bit 0: blank device (no pipeline yet); bit 1: agreement present
    "pipeline_id" / Uuid,  # all zero when the device holds no pipeline
    "device_replica" / Uuid,
    "name" / Text,  # the device's pipeline name, for messages
    "live_records" / cs.Int32ul,
    "knowledge" / Knowledge,  # the device's version vector
    "agreement" / Knowledge,  # what the device last learned this desktop knows
    cs.Terminated,
)
PullBody = cs.Struct(
    "flags" / cs.Int8ul,  # bit 0: slow sync (full comparison)
    "since" / Knowledge,  # send every write not covered by this ({} = everything)
    cs.Terminated,
)
BatchBody = cs.Struct(
    "index" / cs.Int32ul,  # 0, 1, 2... within one delta
    "records" / cs.Int32ul,  # records in the payload
    "payload_length" / cs.Int32ul,
    "payload" / cs.Bytes(this.payload_length),  # a pipeline file holding just these records
    cs.Terminated,
)
DeltaEndBody = cs.Struct(
    "replica" / Uuid,  # the sender's replica id
    "batches" / cs.Int32ul,  # how many BATCH messages the delta had
    "records" / cs.Int32ul,  # how many records in all
    "knowledge" / Knowledge,  # the sender's version vector with these changes
    cs.Terminated,
)
FinishBody = cs.Struct(
    "flags" / cs.Int8ul,  # bit 0: dry run; nothing is sent back, nothing is committed
    cs.Terminated,
)
AckBody = cs.Struct(
    "flags" / cs.Int8ul,  # bit 0: committed (the device saved its file)
    "live_records" / cs.Int32ul,
    "knowledge" / Knowledge,  # the device's version vector now
    cs.Terminated,
)
ErrorBody = cs.Struct(  # frozen: the same in every protocol version
    "code" / cs.Int8ul,  # see ErrorCode
    "text" / Text,  # one line for the user
    cs.Terminated,
)


class MessageType(IntEnum):
    HELLO = 1
    CHALLENGE = 2
    PROOF = 3
    OPEN = 4
    STATE = 5
    PULL = 6
    BATCH = 7
    DELTA_END = 8
    FINISH = 9
    ACK = 10
    ERROR = 255  # frozen across versions


class Mode(IntEnum):
    SYNC = 1
    LOAD = 2


# --- messages as dataclasses (converted at the edge, never through Adapters) -----------------


def uuid_to_bytes(text: str) -> bytes:
    return uuid.UUID(text).bytes


def uuid_from_bytes(raw: bytes) -> str:
    return str(uuid.UUID(bytes=bytes(raw)))


def knowledge_to_body(knowledge: Mapping[str, int]) -> dict[str, Any]:
    entries = [
        {"replica": uuid_to_bytes(r), "counter": c} for r, c in sorted(knowledge.items())
    ]
    return {"count": len(entries), "entries": entries}


def knowledge_from_body(parsed: Any) -> dict[str, int]:
    return {uuid_from_bytes(e.replica): e.counter for e in parsed.entries}


class Message:
    TYPE: ClassVar[MessageType]
    BODY: ClassVar[cs.Construct]

    def to_body(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_body(cls, parsed: Any) -> Message:
        raise NotImplementedError

    @property
    def type_name(self) -> str:
        return self.TYPE.name


@dataclass(frozen=True)
class Hello(Message):
    TYPE = MessageType.HELLO
    BODY = HelloBody
    nonce: bytes
    software: str

    def to_body(self) -> dict[str, Any]:
        return {"nonce": self.nonce, "software": self.software}

    @classmethod
    def from_body(cls, parsed: Any) -> Hello:
        return cls(bytes(parsed.nonce), parsed.software)


@dataclass(frozen=True)
class Challenge(Message):
    TYPE = MessageType.CHALLENGE
    BODY = ChallengeBody
    nonce: bytes
    proof: bytes
    software: str

    def to_body(self) -> dict[str, Any]:
        return {"nonce": self.nonce, "proof": self.proof, "software": self.software}

    @classmethod
    def from_body(cls, parsed: Any) -> Challenge:
        return cls(bytes(parsed.nonce), bytes(parsed.proof), parsed.software)


@dataclass(frozen=True)
class Proof(Message):
    TYPE = MessageType.PROOF
    BODY = ProofBody
    proof: bytes

    def to_body(self) -> dict[str, Any]:
        return {"proof": self.proof}

    @classmethod
    def from_body(cls, parsed: Any) -> Proof:
        return cls(bytes(parsed.proof))


@dataclass(frozen=True)
class Open(Message):
    TYPE = MessageType.OPEN
    BODY = OpenBody
    mode: Mode
    dry_run: bool
    pipeline_id: str
    desktop_replica: str
    name: str
    owner: str
    currency: str
    extra: dict[str, str]
    knowledge: dict[str, int]

    def to_body(self) -> dict[str, Any]:
        return {
            "mode": int(self.mode),
            "flags": 1 if self.dry_run else 0,
            "pipeline_id": uuid_to_bytes(self.pipeline_id),
            "desktop_replica": uuid_to_bytes(self.desktop_replica),
            "name": self.name,
            "owner": self.owner,
            "currency": self.currency,
            "extra_count": len(self.extra),
            "extra": [{"key": k, "value": v} for k, v in sorted(self.extra.items())],
            "knowledge": knowledge_to_body(self.knowledge),
        }

    @classmethod
    def from_body(cls, parsed: Any) -> Open:
        try:
            mode = Mode(parsed.mode)
        except ValueError:
            raise ProtocolError(f"unknown session mode {parsed.mode}") from None
        return cls(
            mode,
            bool(parsed.flags & 1),
            uuid_from_bytes(parsed.pipeline_id),
            uuid_from_bytes(parsed.desktop_replica),
            parsed.name,
            parsed.owner,
            parsed.currency,
            {e.key: e.value for e in parsed.extra},
            knowledge_from_body(parsed.knowledge),
        )


@dataclass(frozen=True)
class State(Message):
    TYPE = MessageType.STATE
    BODY = StateBody
    pipeline_id: str | None  # None: the device holds no pipeline (blank)
    device_replica: str
    name: str
    live_records: int
    knowledge: dict[str, int]
    agreement: dict[str, int] | None  # None: the device has never met this desktop
    blank: bool = False

    def to_body(self) -> dict[str, Any]:
        flags = (1 if self.blank else 0) | (2 if self.agreement is not None else 0)
        return {
            "flags": flags,
            "pipeline_id": uuid_to_bytes(self.pipeline_id) if self.pipeline_id else bytes(16),
            "device_replica": uuid_to_bytes(self.device_replica),
            "name": self.name,
            "live_records": self.live_records,
            "knowledge": knowledge_to_body(self.knowledge),
            "agreement": knowledge_to_body(self.agreement or {}),
        }

    @classmethod
    def from_body(cls, parsed: Any) -> State:
        raw_id = bytes(parsed.pipeline_id)
        return cls(
            uuid_from_bytes(raw_id) if any(raw_id) else None,
            uuid_from_bytes(parsed.device_replica),
            parsed.name,
            parsed.live_records,
            knowledge_from_body(parsed.knowledge),
            knowledge_from_body(parsed.agreement) if parsed.flags & 2 else None,
            blank=bool(parsed.flags & 1),
        )


@dataclass(frozen=True)
class Pull(Message):
    TYPE = MessageType.PULL
    BODY = PullBody
    slow: bool
    since: dict[str, int]

    def to_body(self) -> dict[str, Any]:
        return {"flags": 1 if self.slow else 0, "since": knowledge_to_body(self.since)}

    @classmethod
    def from_body(cls, parsed: Any) -> Pull:
        return cls(bool(parsed.flags & 1), knowledge_from_body(parsed.since))


@dataclass(frozen=True)
class Batch(Message):
    TYPE = MessageType.BATCH
    BODY = BatchBody
    index: int
    records: int
    payload: bytes = field(repr=False)

    def to_body(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "records": self.records,
            "payload_length": len(self.payload),
            "payload": self.payload,
        }

    @classmethod
    def from_body(cls, parsed: Any) -> Batch:
        return cls(parsed.index, parsed.records, bytes(parsed.payload))


@dataclass(frozen=True)
class DeltaEnd(Message):
    TYPE = MessageType.DELTA_END
    BODY = DeltaEndBody
    replica: str
    batches: int
    records: int
    knowledge: dict[str, int]

    def to_body(self) -> dict[str, Any]:
        return {
            "replica": uuid_to_bytes(self.replica),
            "batches": self.batches,
            "records": self.records,
            "knowledge": knowledge_to_body(self.knowledge),
        }

    @classmethod
    def from_body(cls, parsed: Any) -> DeltaEnd:
        return cls(
            uuid_from_bytes(parsed.replica),
            parsed.batches,
            parsed.records,
            knowledge_from_body(parsed.knowledge),
        )


@dataclass(frozen=True)
class Finish(Message):
    TYPE = MessageType.FINISH
    BODY = FinishBody
    dry_run: bool

    def to_body(self) -> dict[str, Any]:
        return {"flags": 1 if self.dry_run else 0}

    @classmethod
    def from_body(cls, parsed: Any) -> Finish:
        return cls(bool(parsed.flags & 1))


@dataclass(frozen=True)
class Ack(Message):
    TYPE = MessageType.ACK
    BODY = AckBody
    committed: bool
    live_records: int
    knowledge: dict[str, int]

    def to_body(self) -> dict[str, Any]:
        return {
            "flags": 1 if self.committed else 0,
            "live_records": self.live_records,
            "knowledge": knowledge_to_body(self.knowledge),
        }

    @classmethod
    def from_body(cls, parsed: Any) -> Ack:
        return cls(
            bool(parsed.flags & 1), parsed.live_records, knowledge_from_body(parsed.knowledge)
        )


@dataclass(frozen=True)
class Error(Message):
    TYPE = MessageType.ERROR
    BODY = ErrorBody
    code: int
    text: str

    def to_body(self) -> dict[str, Any]:
        return {"code": int(self.code), "text": self.text}

    @classmethod
    def from_body(cls, parsed: Any) -> Error:
        return cls(parsed.code, parsed.text)


MESSAGES: dict[MessageType, type[Message]] = {
    m.TYPE: m
    for m in (Hello, Challenge, Proof, Open, State, Pull, Batch, DeltaEnd, Finish, Ack, Error)
}
# Compiled body parsers by protocol version, then by message type (each compiled when first used).
COMPILED: dict[int, dict[MessageType, Any]] = {
    VERSION: CompiledOnUse({t: m.BODY for t, m in MESSAGES.items()}, lambda body: body.compile())
}


# --- building and reading --------------------------------------------------------------------


def tag_of(key: bytes, header: bytes, body: bytes | memoryview) -> bytes:
    """HMAC-SHA256 of header and body, without joining them (a copy of the body)."""
    mac = hmac.new(key, header, sha256)
    mac.update(body)
    return mac.digest()


def build(message: Message, seq: int, key: bytes | None = None, version: int = VERSION) -> bytes:
    """The bytes of ``message``; sealed with an HMAC tag when a session ``key`` is given."""
    body = message.BODY.build(message.to_body())
    if len(body) > MAX_BODY:
        raise ProtocolError(
            f"{message.type_name} message of {len(body)} bytes is too large to send"
        )
    flags = SEALED if key is not None else 0
    header = HEADER.pack(
        MAGIC, version, int(message.TYPE), flags, seq, len(body), crc32(body)
    )
    if key is None:
        return header + body
    return header + body + tag_of(key, header, body)


@dataclass(frozen=True)
class Received:
    seq: int
    message: Message
    sealed: bool


def parse(data: bytes, key: bytes | None = None, parser: Any = None) -> Received:
    """Check the envelope of ``data`` (and its tag, if sealed, with ``key``), then parse its body.

    Whether an unsealed message is acceptable is the session's call (`Received.sealed`): a
    duplicate of a message from before authentication is unsealed and harmless.  Raises
    ProtocolError (VersionMismatch for another protocol version) saying what is wrong.
    """
    if len(data) < ENVELOPE_SIZE:
        raise ProtocolError(f"truncated message ({len(data)} bytes)")
    magic, version, type_code, flags, seq, length, crc = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ProtocolError("not a salesmgr sync message (is the other end a salesmgr peer?)")
    sealed = bool(flags & SEALED)
    if flags & ~SEALED:
        raise ProtocolError(f"unknown envelope flags {flags:#06x}")
    expected = ENVELOPE_SIZE + length + (TAG_SIZE if sealed else 0)
    if length > MAX_BODY:
        raise ProtocolError(f"declared body length {length} is impossible")
    if len(data) != expected:
        raise ProtocolError(f"message of {len(data)} bytes, its envelope says {expected}")
    # A view, not a copy: checking and parsing a message costs its parsed fields, not the
    # message again (a copy of the body, then of header and body to check the tag).
    body = memoryview(data)[ENVELOPE_SIZE : ENVELOPE_SIZE + length]
    if crc32(body) != crc:
        raise ProtocolError("damaged message (checksum mismatch)")
    if sealed:
        if key is None:
            raise ProtocolError("a sealed message arrived before authentication")
        tag = data[ENVELOPE_SIZE + length :]
        if not hmac.compare_digest(tag, tag_of(key, data[:ENVELOPE_SIZE], body)):
            raise ProtocolError("message failed its authentication check (tampered with?)")
    if version != VERSION:
        if type_code == MessageType.ERROR:
            return Received(seq, parse_body(MessageType.ERROR, data, length,
                                               COMPILED[VERSION][MessageType.ERROR]),
                            sealed)
        raise VersionMismatch(
            f"the peer speaks sync protocol {version}, this salesmgr speaks {VERSION}", version
        )
    try:
        message_type = MessageType(type_code)
    except ValueError:
        raise ProtocolError(f"unknown message type {type_code}") from None
    table = parser or COMPILED[VERSION]
    return Received(seq, parse_body(message_type, data, length, table[message_type]), sealed)


def parse_body(message_type: MessageType, data: bytes, length: int, parser: Any) -> Message:
    """The message whose ``length``-byte body follows the envelope in ``data``, parsed in
    place: a BytesIO shares ``data``, and the window keeps the parser inside the body."""
    stream = io.BytesIO(data)
    stream.seek(ENVELOPE_SIZE)
    try:
        parsed = parser.parse_stream(Window(stream, length))
        return MESSAGES[message_type].from_body(parsed)
    except MALFORMED:
        raise ProtocolError(f"malformed {message_type.name} message") from None
