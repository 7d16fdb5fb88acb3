"""Hostile peers: whatever bytes arrive, at either end of every transport, the answer is a
one-line protocol error, the serving end drops that session and keeps serving, and no file
changes.

Both ends run in this process over the real transports (a TCP socket, TLS, a pseudo-terminal, a
folder), so "no traceback" means: nothing but a `SalesmgrError` (the command line's one-line
error) ever comes out of a session, and the device's serving loop is still alive afterwards.
"""

from __future__ import annotations

import hmac
import threading
import zlib
from collections.abc import Iterator
from hashlib import sha256
from pathlib import Path
from typing import Any

import pytest
from helpers import desktop_file, self_signed_certificate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from salesmgr import storage
from salesmgr.emulator.device import DeviceEmulator
from salesmgr.errors import SalesmgrError
from salesmgr.model.pipeline import Pipeline
from salesmgr.plugin.interfaces import Link, Listener
from salesmgr.plugin.manager import get_registry
from salesmgr.plugins.transport_folder import FolderMailbox
from salesmgr.sync.channel import Channel
from salesmgr.sync.device_file import DeviceFile
from salesmgr.sync.mailbox import DesktopDrops, DeviceDrops
from salesmgr.sync.session import DesktopSession, DeviceSession
from salesmgr.sync.transports import transport_for
from salesmgr.sync.wire import auth, drops
from salesmgr.sync.wire.protocol import (
    HEADER,
    MAGIC,
    SEALED,
    TAG_SIZE,
    Ack,
    Batch,
    Challenge,
    DeltaEnd,
    Hello,
    Message,
    Mode,
    Open,
    Proof,
    Pull,
    State,
    build,
    tag_of,
)
from salesmgr.testing.links import memory_link_pair

SECRET = "hostile-peers-test-secret-Qx7v"
LIVE = ("tcp", "tcps", "serial")
FUZZ = settings(
    max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
)


# --- what an attacker sends ------------------------------------------------------------------


def valid_messages() -> list[Message]:
    """One message of every kind a session carries, as a real peer would build it."""
    pipeline = Pipeline.create("Fuzz", "ana")
    pipeline.add(get_registry().record_type("opportunity"), {"company": "Acme", "title": "t"})
    mini = storage.encode(pipeline)
    knowledge = dict(pipeline.knowledge)
    return [
        Hello(bytes(32), "salesmgr fuzz"),
        Challenge(bytes(32), bytes(32), "salesmgr fuzz"),
        Proof(bytes(32)),
        Open(Mode.SYNC, False, pipeline.pipeline_id, pipeline.replica_id, "n", "o", "EUR",
             {"k": "v"}, knowledge),
        State(pipeline.pipeline_id, pipeline.replica_id, "n", 1, knowledge, knowledge),
        Pull(False, knowledge),
        Batch(0, 1, mini),
        DeltaEnd(pipeline.replica_id, 1, 1, knowledge),
        Ack(True, 1, knowledge),
    ]


def mutate(data: bytes, draw: Any) -> bytes:
    """``data`` cut, extended, or with bytes flipped; the envelope's CRC made right again half the
    time, so that the body parser sees the damage instead of the checksum."""
    out = bytearray(data)
    how = draw(st.sampled_from(["cut", "flip", "grow", "splice"]))
    if how == "cut" and out:
        out = out[: draw(st.integers(0, len(out) - 1))]
    elif how == "flip" and out:
        for _ in range(draw(st.integers(1, 4))):
            at = draw(st.integers(0, len(out) - 1))
            out[at] ^= draw(st.integers(1, 255))
    elif how == "grow":
        out += draw(st.binary(min_size=1, max_size=64))
    else:
        at = draw(st.integers(0, len(out)))
        out[at:at] = draw(st.binary(min_size=1, max_size=16))
    return bytes(out)


def fix_envelope(data: bytes) -> bytes:
    """The same bytes with the envelope's length and CRC made to match the body again."""
    if len(data) < HEADER.size or data[:4] != MAGIC:
        return data
    magic, version, kind, flags, seq, _, _ = HEADER.unpack_from(data)
    body = data[HEADER.size :]
    return HEADER.pack(magic, version, kind, flags & ~1, seq, len(body), zlib.crc32(body)) + body


@st.composite
def hostile_messages(draw: Any) -> list[bytes]:
    """A few messages: random bytes, or valid messages damaged (envelope made right or not)."""
    sent = []
    for seq in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["random", "mutated", "mutated-fixed", "short-body"]))
        if kind == "random":
            sent.append(draw(st.binary(min_size=0, max_size=80)))
            continue
        message = draw(st.sampled_from(valid_messages()))
        data = build(message, seq)
        if kind == "short-body":  # a whole envelope around a cut body: the reported crash
            body = data[HEADER.size :][: draw(st.integers(0, 40))]
            sent.append(fix_envelope(data[: HEADER.size] + body))
            continue
        damaged = mutate(data, draw)
        sent.append(fix_envelope(damaged) if kind == "mutated-fixed" else damaged)
    return sent


# --- the device end, serving on a real transport ------------------------------------------------


class ServedDevice:
    """The emulator's serving loop in a thread, on a real listener."""

    def __init__(self, transport: str, folder: Path) -> None:
        self.device = folder / f"device-{transport}.pipe"
        storage.save(storage.load(desktop_file(folder, 3, f"D{transport}")), self.device)
        self.options: dict[str, Any] = {"timeout": 2.0}
        if transport == "tcps":
            cert, key = self_signed_certificate(folder)
            self.options.update(tls_cert=str(cert), tls_key=str(key))
        url = {"tcp": "tcp://127.0.0.1:0", "tcps": "tcps://127.0.0.1:0", "serial": "serial-pty"}
        self.listener: Listener = transport_for(url[transport]).listen(
            url[transport], self.options
        )
        self.url = self.listener.url
        self.complaints: list[str] = []
        self.emulator = DeviceEmulator(
            DeviceFile(self.device), SECRET, timeout=2.0, log=lambda _: None,
            complain=self.complaints.append,
        )
        self.crashed: list[BaseException] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            self.emulator.serve(self.listener)
        except BaseException as crash:  # what would be a traceback and an exit
            self.crashed.append(crash)
            raise

    def connect(self) -> Link:
        return transport_for(self.url).connect(self.url, {"timeout": 2.0})

    def stop(self) -> None:
        self.emulator.stop()
        self.thread.join(10)
        self.listener.close()


@pytest.fixture(scope="module", params=LIVE)
def served(request: Any, tmp_path_factory: Any) -> Iterator[ServedDevice]:
    device = ServedDevice(request.param, tmp_path_factory.mktemp(request.param))
    yield device
    device.stop()


@FUZZ
@given(messages=hostile_messages())
def test_a_device_survives_whatever_a_peer_without_the_secret_sends(
    served: ServedDevice, messages: list[bytes]
) -> None:
    before = served.device.read_bytes()
    link = served.connect()
    try:
        for message in messages:
            link.send(message)
        try:
            link.receive(0.5)  # a CHALLENGE, or the device's ERROR: a session it dropped
        except SalesmgrError:
            pass
    except SalesmgrError:
        pass  # the device hung up on us: also fine
    finally:
        link.close()
    assert not served.crashed, served.crashed
    assert served.thread.is_alive()
    assert served.device.read_bytes() == before
    assert all("\n" not in line for line in served.complaints)


# --- the desktop end, facing a hostile device on a real transport ------------------------------


class HostileDevice:
    """Listens on a real transport and answers the desktop's HELLO with what it is given."""

    def __init__(self, transport: str, folder: Path) -> None:
        self.options: dict[str, Any] = {"timeout": 2.0}
        if transport == "tcps":
            cert, key = self_signed_certificate(folder)
            self.options.update(tls_cert=str(cert), tls_key=str(key))
        url = {"tcp": "tcp://127.0.0.1:0", "tcps": "tcps://127.0.0.1:0", "serial": "serial-pty"}
        self.listener = transport_for(url[transport]).listen(url[transport], self.options)
        self.url = self.listener.url

    def answer_with(self, replies: list[bytes]) -> threading.Thread:
        def serve() -> None:
            try:
                link = self.listener.accept(timeout=5)
            except (SalesmgrError, TimeoutError):
                return
            try:
                link.receive(2.0)  # the HELLO
                for reply in replies:
                    link.send(reply)
                link.receive(2.0)  # the desktop's ERROR, or nothing
            except SalesmgrError:
                pass
            finally:
                link.close()

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        return thread


@pytest.fixture(scope="module", params=LIVE)
def hostile(request: Any, tmp_path_factory: Any) -> Iterator[HostileDevice]:
    device = HostileDevice(request.param, tmp_path_factory.mktemp(f"hostile-{request.param}"))
    yield device
    device.listener.close()


@FUZZ
@given(replies=hostile_messages())
def test_a_desktop_gives_a_one_line_error_whatever_a_device_without_the_secret_answers(
    hostile: HostileDevice, replies: list[bytes], tmp_path_factory: Any
) -> None:
    desk = desktop_file(tmp_path_factory.mktemp("desk"), 3)
    before = desk.read_bytes()
    peer = hostile.answer_with(replies)
    link = transport_for(hostile.url).connect(hostile.url, {"timeout": 2.0})
    try:
        with pytest.raises(SalesmgrError) as failed:
            DesktopSession(link, SECRET, timeout=1.0).sync(
                storage.load(desk), save=lambda p: storage.save(p, desk)
            )
    finally:
        link.close()
        peer.join(10)
    assert "\n" not in str(failed.value)
    assert desk.read_bytes() == before


# --- both ends of a folder ---------------------------------------------------------------------


def reseal(data: bytes, body: bytes, secret: bytes) -> bytes:
    """A drop whose body is replaced by ``body``, sealed again with ``secret``: what a hostile
    (or buggy) paired writer could leave, so that the body parser is what has to cope."""
    magic, version, kind, flags, nonce, _, _ = drops.HEADER.unpack_from(data)
    header = drops.HEADER.pack(magic, version, kind, flags, nonce, len(body), zlib.crc32(body))
    return header + body + hmac.new(drops.drop_key(secret, nonce), header + body,
                                    sha256).digest()


@st.composite
def hostile_entries(draw: Any, valid: list[bytes]) -> tuple[str, bytes, bool]:
    """(entry name, its bytes, whether it is sealed with the pairing secret)."""
    name = draw(st.sampled_from([
        f"{kind}-{draw(st.binary(min_size=16, max_size=16)).hex()}.smdrop"
        for kind in ("offer", "answer", "load", "refusal")
    ] + ["handheld.pipe"]))
    how = draw(st.sampled_from(["random", "mutated", "resealed", "short-body"]))
    if how == "random":
        return name, draw(st.binary(max_size=120)), False
    data = draw(st.sampled_from(valid))
    if how == "mutated":
        return name, mutate(data, draw), False
    body = data[drops.ENVELOPE_SIZE : -drops.TAG_SIZE]
    if how == "short-body":  # whole, sealed, but cut inside its body: the reported crash
        body = body[: draw(st.integers(0, 40))]
    else:
        body = mutate(body, draw)
    return name, reseal(data, body, auth.secret_bytes(SECRET)), True


def valid_drops() -> list[bytes]:
    """One sealed drop of every kind, as the two ends leave them."""
    pipeline = Pipeline.create("Fuzz", "ana")
    pipeline.add(get_registry().record_type("opportunity"), {"company": "Acme", "title": "t"})
    records = list(pipeline.records.values())
    known = dict(pipeline.knowledge)
    pid, replica, other = pipeline.pipeline_id, pipeline.replica_id, drops.new_drop_id()
    made = [
        drops.Offer(drops.new_drop_id(), 1, pid, other, replica, "n", 1, known, known, {},
                    records),
        drops.Answer(drops.new_drop_id(), 2, drops.new_drop_id(), other, pid, replica, "n", "o",
                     "EUR", {"k": "v"}, known, records),
        drops.Load(drops.new_drop_id(), 3, pid, replica, "n", "o", "EUR", {}, known, records),
        drops.Refusal(drops.new_drop_id(), 4, drops.new_drop_id(), 5, "sync first"),
    ]
    return [drops.seal(drop, auth.secret_bytes(SECRET)) for drop in made]


VALID_DROPS = valid_drops()


@FUZZ
@given(entry=hostile_entries(VALID_DROPS))
def test_both_ends_of_a_folder_survive_whatever_lies_in_it(
    entry: tuple[str, bytes, bool], tmp_path_factory: Any
) -> None:
    name, data, sealed = entry
    work = tmp_path_factory.mktemp("folder")
    desk = desktop_file(work, 3)
    device = work / "device.pipe"
    storage.save(storage.load(desk), device)
    for side in ("device-box", "desktop-box"):
        (work / side).mkdir()
        (work / side / name).write_bytes(data)
    before = (desk.read_bytes(), device.read_bytes())

    device_side = DeviceDrops(FolderMailbox(str(work / "device-box")), SECRET,
                              DeviceFile(device), settle=0.0)
    try:
        device_side.step()
    except SalesmgrError as error:
        assert "\n" not in str(error)
    desktop_side = DesktopDrops(FolderMailbox(str(work / "desktop-box")), SECRET, timeout=1.0,
                                settle=0.0)
    try:
        desktop_side.sync(storage.load(desk), save=lambda p: storage.save(p, desk))
    except SalesmgrError as error:
        assert "\n" not in str(error)
    if not sealed:
        assert (desk.read_bytes(), device.read_bytes()) == before


# --- a paired peer gone wrong: valid handshake, then damaged sealed messages -------------------


def sealed_again(data: bytes, body: bytes, key: bytes) -> bytes:
    """A message with its body replaced, envelope and tag made right again with ``key``."""
    magic, version, kind, _, seq, _, _ = HEADER.unpack_from(data)
    header = HEADER.pack(magic, version, kind, SEALED, seq, len(body), zlib.crc32(body))
    return header + body + tag_of(key, header, body)


@st.composite
def paired_mutations(draw: Any) -> list[tuple[Message, bool]]:
    """Messages a paired peer sends after the handshake, each damaged or not."""
    return draw(st.lists(
        st.tuples(st.sampled_from(valid_messages()[3:]), st.booleans()), min_size=1, max_size=4
    ))


@FUZZ
@given(sent=paired_mutations(), data=st.data())
def test_a_device_survives_damaged_messages_from_a_paired_desktop(
    sent: list[tuple[Message, bool]], data: Any, tmp_path_factory: Any
) -> None:
    device = tmp_path_factory.mktemp("paired") / "device.pipe"
    storage.save(storage.load(desktop_file(device.parent, 3)), device)
    desk_link, dev_link = memory_link_pair()
    crashed: list[BaseException] = []

    def serve() -> None:
        try:
            DeviceSession(dev_link, SECRET, DeviceFile(device), timeout=1.0).serve()
        except SalesmgrError as error:
            assert "\n" not in str(error)
        except BaseException as crash:
            crashed.append(crash)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    channel = Channel(desk_link, peer="device", timeout=1.0)
    try:
        auth.desktop_handshake(channel, auth.secret_bytes(SECRET), "fuzz", b"")
        assert channel.key is not None
        for message, damaged in sent:
            raw = build(message, channel.sent, channel.key)
            if damaged:
                body = mutate(raw[HEADER.size : -TAG_SIZE], data.draw)
                raw = sealed_again(raw, body, channel.key)
            desk_link.send(raw)
            channel.sent += 1
    except SalesmgrError:
        pass
    finally:
        desk_link.close()
        thread.join(10)
    assert not crashed, crashed
