"""The sync protocol's messages: what is built is what is read, and any damage is caught before
the compiled body parser sees a byte."""

from __future__ import annotations

import re
import uuid
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from salesmgr.errors import ErrorCode, PeerError, ProtocolError, SyncError, VersionMismatch
from salesmgr.sync.channel import Channel
from salesmgr.sync.wire import auth, limits
from salesmgr.sync.wire.protocol import (
    COMPILED,
    ENVELOPE_SIZE,
    MAGIC,
    MESSAGES,
    VERSION,
    Ack,
    Batch,
    Challenge,
    DeltaEnd,
    Envelope,
    Error,
    Finish,
    Hello,
    Message,
    MessageType,
    Mode,
    Open,
    Proof,
    Pull,
    State,
    build,
    parse,
)
from salesmgr.testing.links import memory_link_pair

DOCS = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"
KEY = bytes(range(32))


def rid(n: int) -> str:
    return str(uuid.UUID(int=n + 1))


KNOWLEDGE = {rid(1): 7, rid(2): 2**40}
EXAMPLES: list[Message] = [
    Hello(b"n" * 32, "salesmgr 0.1.0"),
    Challenge(b"d" * 32, b"p" * 32, "salesmgr 0.1.0"),
    Proof(b"q" * 32),
    Open(Mode.SYNC, True, rid(9), rid(1), "Spring", "ana", "EUR", {"x-theme": "dark"}, KNOWLEDGE),
    State(rid(9), rid(2), "Spring", 12, KNOWLEDGE, {rid(1): 5}),
    State(None, rid(3), "", 0, {}, None, blank=True),
    Pull(False, KNOWLEDGE),
    Batch(3, 2, b"SMGRPIPE..."),
    DeltaEnd(rid(2), 4, 1000, KNOWLEDGE),
    Finish(True),
    Ack(True, 12, KNOWLEDGE),
    Error(ErrorCode.AUTH, "authentication failed"),
]
UNCOMPILED = {t: m.BODY for t, m in MESSAGES.items()}


def test_every_message_type_has_an_example() -> None:
    assert {type(m) for m in EXAMPLES} == set(MESSAGES.values())


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
@pytest.mark.parametrize("key", [None, KEY], ids=["plain", "sealed"])
def test_what_is_built_is_read_back(message: Message, key: bytes | None) -> None:
    received = parse(build(message, 41, key), key)
    assert received.message == message
    assert received.seq == 41
    assert received.sealed is (key is not None)


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_compiled_and_uncompiled_parsers_agree(message: Message) -> None:
    data = build(message, 0)
    assert parse(data, parser=UNCOMPILED) == parse(data) == parse(data, parser=COMPILED[VERSION])


replicas = st.uuids().map(str)
texts = st.text(max_size=40)
knowledge = st.dictionaries(replicas, st.integers(0, 2**64 - 1), max_size=5)


@settings(max_examples=60, deadline=None)
@given(
    mode=st.sampled_from(Mode),
    dry_run=st.booleans(),
    ids=st.tuples(replicas, replicas),
    header=st.tuples(texts, texts, texts),
    extra=st.dictionaries(texts, texts, max_size=3),
    vector=knowledge,
)
def test_any_open_message_round_trips(
    mode: Mode, dry_run: bool, ids: tuple[str, str], header: tuple[str, str, str],
    extra: dict[str, str], vector: dict[str, int],
) -> None:
    message = Open(mode, dry_run, *ids, *header, extra, vector)
    assert parse(build(message, 0, KEY), KEY).message == message


@settings(max_examples=60, deadline=None)
@given(
    pipeline=st.none() | replicas,
    name=texts,
    live=st.integers(0, 2**32 - 1),
    vector=knowledge,
    agreement=st.none() | knowledge,
    blank=st.booleans(),
)
def test_any_state_message_round_trips(
    pipeline: str | None, name: str, live: int, vector: dict[str, int],
    agreement: dict[str, int] | None, blank: bool,
) -> None:
    if pipeline == str(uuid.UUID(int=0)):
        pipeline = None  # the all-zero id means "no pipeline"
    message = State(pipeline, rid(1), name, live, vector, agreement, blank=blank)
    assert parse(build(message, 0)).message == message


# --- the envelope catches damage --------------------------------------------------------------


SEALED_OPEN = build(EXAMPLES[3], 5, KEY)


@settings(max_examples=200, deadline=None)
@given(position=st.integers(0, len(SEALED_OPEN) - 1), flip=st.integers(1, 255))
def test_any_damaged_byte_of_a_sealed_message_is_caught(position: int, flip: int) -> None:
    damaged = bytearray(SEALED_OPEN)
    damaged[position] ^= flip
    with pytest.raises(ProtocolError):
        parse(bytes(damaged), KEY)


@settings(max_examples=200, deadline=None)
@given(noise=st.binary(max_size=300))
def test_garbage_is_refused_with_a_protocol_error_and_nothing_else(noise: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse(noise, KEY)
    with pytest.raises(ProtocolError):
        parse(MAGIC + noise)


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_every_truncation_is_caught(message: Message) -> None:
    data = build(message, 0, KEY)
    for cut in range(len(data)):
        with pytest.raises(ProtocolError):
            parse(data[:cut], KEY)


def test_a_body_that_passes_its_checksum_but_breaks_the_format_is_refused() -> None:
    body = b"\x01\x02"  # a FINISH body with a byte too many
    header = Envelope.build(
        {"version": VERSION, "type": 9, "flags": 0, "seq": 0, "body_length": len(body),
         "body_crc32": zlib.crc32(body)}
    )
    with pytest.raises(ProtocolError, match="malformed FINISH message"):
        parse(header + body)


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"type": 77}, "unknown message type 77"),
        ({"flags": 0x8000}, "unknown envelope flags"),
        ({"body_length": 1 << 30}, "impossible"),
        ({"body_crc32": 1}, "checksum mismatch"),
    ],
)
def test_envelope_problems_are_named(fields: dict[str, int], problem: str) -> None:
    body = b"\x00"
    values = {"version": VERSION, "type": 9, "flags": 0, "seq": 0, "body_length": 1,
              "body_crc32": zlib.crc32(body)}
    with pytest.raises(ProtocolError, match=problem):
        parse(Envelope.build({**values, **fields}) + body)


def test_not_a_salesmgr_message() -> None:
    with pytest.raises(ProtocolError, match="not a salesmgr sync message"):
        parse(b"GET / HTTP/1.1\r\nHost: device\r\n\r\n")


def test_a_wrong_key_fails_the_authentication_check() -> None:
    with pytest.raises(ProtocolError, match="failed its authentication check"):
        parse(SEALED_OPEN, bytes(32))
    with pytest.raises(ProtocolError, match="before authentication"):
        parse(SEALED_OPEN)


def test_another_protocol_version_is_named_but_its_error_message_is_still_read() -> None:
    with pytest.raises(VersionMismatch, match="speaks sync protocol 2") as caught:
        parse(build(Hello(bytes(32), "salesmgr 9"), 0, version=2))
    assert caught.value.peer_version == 2
    assert caught.value.wire_code == ErrorCode.VERSION
    newer_error = build(Error(ErrorCode.VERSION, "upgrade me"), 0, version=7)
    assert parse(newer_error).message == Error(ErrorCode.VERSION, "upgrade me")


def test_the_envelope_is_twenty_bytes_and_a_sealed_message_adds_a_tag() -> None:
    assert ENVELOPE_SIZE == 20
    assert len(build(Finish(False), 0)) == 21
    assert len(build(Finish(False), 0, KEY)) == 21 + 32


def test_the_limits_transports_check_describe_the_declared_envelope() -> None:
    # `limits` packs the envelope with the struct module, so a transport knows its cap without
    # importing the construct declarations; the two must describe the same bytes.
    assert limits.HEADER.size == ENVELOPE_SIZE
    header = build(Finish(False), 7)[:ENVELOPE_SIZE]
    assert limits.HEADER.unpack(header)[:5] == (MAGIC, VERSION, MessageType.FINISH, 0, 7)
    assert limits.MAX_MESSAGE == ENVELOPE_SIZE + limits.MAX_BODY + limits.TAG_SIZE


# --- the channel: order, duplicates, sealing ---------------------------------------------------


def channel_pair() -> tuple[Channel, Channel]:
    a, b = memory_link_pair()
    return Channel(a, peer="device", timeout=1), Channel(b, peer="desktop", timeout=1)


def test_a_repeated_message_is_skipped_and_a_missing_one_is_an_error() -> None:
    sender, receiver = channel_pair()
    first = build(Finish(True), 0)
    sender.link.send(first)
    sender.link.send(first)  # delivered twice
    sender.link.send(build(Finish(False), 1))
    assert receiver.receive(Finish) == Finish(True)
    assert receiver.receive(Finish) == Finish(False)
    sender.link.send(build(Finish(True), 3))  # number 2 never came
    with pytest.raises(ProtocolError, match="message 2 from the desktop was lost"):
        receiver.receive(Finish)


def test_inside_a_session_only_an_error_may_come_unsealed() -> None:
    sender, receiver = channel_pair()
    receiver.key = KEY
    sender.link.send(build(Finish(True), 0))
    with pytest.raises(ProtocolError, match="unauthenticated FINISH"):
        receiver.receive(Finish)
    sender.link.send(build(Error(ErrorCode.ABORTED, "user pressed stop"), 9))
    with pytest.raises(PeerError, match="the desktop stopped the session: user pressed stop"):
        receiver.receive(Finish)


def test_an_unexpected_message_is_named() -> None:
    sender, receiver = channel_pair()
    sender.send(Proof(bytes(32)))
    with pytest.raises(ProtocolError, match="unexpected PROOF message from the desktop"):
        receiver.receive_any(Batch, DeltaEnd)


def test_a_silent_peer_times_out() -> None:
    _, receiver = channel_pair()
    with pytest.raises(SyncError, match="within 1 s"):
        receiver.receive(Finish)


# --- authentication -----------------------------------------------------------------------------


def test_proofs_depend_on_the_secret_the_role_and_both_nonces() -> None:
    secret, a, b = b"pairing secret", b"a" * 32, b"b" * 32
    device = auth.device_proof(secret, a, b)
    assert auth.proof_matches(device, auth.device_proof(secret, a, b))
    assert len({
        device,
        auth.desktop_proof(secret, a, b),
        auth.session_key(secret, a, b),
        auth.device_proof(b"another secret", a, b),
        auth.device_proof(secret, b, a),
    }) == 5
    assert len(auth.new_nonce()) == 32 and auth.new_nonce() != auth.new_nonce()


def test_an_empty_secret_is_refused() -> None:
    with pytest.raises(SyncError, match="empty"):
        auth.secret_bytes("")


# --- documentation ------------------------------------------------------------------------------


def test_docs_describe_every_message_and_every_field() -> None:
    text = DOCS.read_text()
    for message_type, message in MESSAGES.items():
        assert re.search(rf"^#+ .*\b{message_type.name}\b", text, re.M), message_type.name
        for sub in message.BODY.subcons:
            if sub.name:
                assert f"`{sub.name}`" in text, f"{message_type.name}.{sub.name}"
    for sub in Envelope.subcons:
        assert f"`{sub.name}`" in text
    for code in ErrorCode:
        assert code.name in text
