"""Sync sessions: the desktop side and the device side of the protocol, over any `Link`.

The code here knows messages, never transports: a TCP socket, a serial cradle or a shared folder
all hand it a `salesmgr.plugin.interfaces.Link`.  The order of the steps is what makes a cable
pulled at
any byte harmless (docs/protocol.md has the diagrams):

1. HELLO / CHALLENGE / PROOF: both ends prove they know the pairing secret; from then on every
   message is sealed with a session key.
2. OPEN / STATE: the desktop names the pipeline and what it knows; the device answers with what
   it holds and what it knows.  A wrong pipeline, or a load onto unsynced changes, stops here.
3. PULL, then the device's BATCHes and DELTA_END: only the writes the desktop lacks (a slow sync
   asks for everything).
4. The desktop merges, *saves its file*, then sends back what the device lacks; the device
   applies it, saves atomically and ACKs.  Both merges are idempotent, so whatever was cut, the
   next sync finishes the job without duplicates.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast
from urllib.parse import urlsplit

from salesmgr import __version__, storage
from salesmgr.errors import (
    ErrorCode,
    PeerError,
    PipelineFileError,
    ProtocolError,
    SalesmgrError,
    SessionError,
    SyncError,
)
from salesmgr.merge.engine import (
    Delta,
    MergeReport,
    apply_delta,
    delta_since,
    merge_delta,
)
from salesmgr.model.pipeline import Pipeline, Record
from salesmgr.plugin.interfaces import Link, Transport
from salesmgr.plugin.manager import Registry, get_registry
from salesmgr.sync import rules
from salesmgr.sync.rules import DesktopHeader, DeviceReport, DeviceTarget, live_count
from salesmgr.sync.wire import auth
from salesmgr.sync.wire.protocol import (
    Ack,
    Batch,
    Challenge,
    DeltaEnd,
    Error,
    Finish,
    Hello,
    Message,
    Mode,
    Open,
    Proof,
    Pull,
    State,
    build,
    parse,
)

DEFAULT_TIMEOUT = 30.0
BATCH_BYTES = 256 * 1024  # records per BATCH are cut by estimated size, not count
SOFTWARE = f"salesmgr {__version__}"
M = TypeVar("M", bound=Message)


# --- transports by URL ------------------------------------------------------------------------


def scheme_of(url: str) -> str:
    """The transport scheme of a device URL; ``serial-pty`` is the emulator's own pty."""
    if url == "serial-pty":
        return "serial"
    scheme = urlsplit(url).scheme
    if not scheme:
        raise SyncError(f"{url!r} is not a device URL (expected e.g. tcp://HOST:PORT)")
    return scheme.lower()


def transport_for(url: str, registry: Registry | None = None) -> Transport:
    return (registry or get_registry()).transport(scheme_of(url))


# --- the message channel ---------------------------------------------------------------------


class Events:
    """Calls the ``salesmgr_sync_event`` hook with this end's name and the session's mode."""

    def __init__(self, registry: Registry, side: str) -> None:
        self.registry = registry
        self.side = side
        self.mode = ""

    def __call__(self, stage: str, **info: Any) -> None:
        self.registry.hook.salesmgr_sync_event(
            stage=stage, info={"side": self.side, "mode": self.mode, **info}
        )


class Channel:
    """Numbered, checked (and after authentication sealed) messages over a Link."""

    def __init__(self, link: Link, *, peer: str, timeout: float) -> None:
        self.link = link
        self.peer = peer
        self.timeout = timeout
        self.key: bytes | None = None
        self.sent = 0
        self.expected = 0
        self.peer_stopped = False

    def send(self, message: Message) -> None:
        self.link.send(build(message, self.sent, self.key))
        self.sent += 1

    def receive_any(self, *expected: type[Message]) -> Message:
        deadline = time.monotonic() + self.timeout
        left = self.timeout  # the whole timeout, unless duplicates used some of it
        while True:
            if left <= 0:
                raise SyncError(f"no answer from the {self.peer} within {self.timeout:g} s")
            received = parse(self.link.receive(left), self.key)
            left = deadline - time.monotonic()
            message = received.message
            if isinstance(message, Error):
                self.peer_stopped = True
                raise PeerError(self.peer, message.code, message.text)
            if received.seq < self.expected:
                continue  # delivered twice: it was handled the first time
            if received.seq > self.expected:
                raise ProtocolError(
                    f"message {self.expected} from the {self.peer} was lost "
                    f"(message {received.seq} came next)"
                )
            self.expected += 1
            if self.key is not None and not received.sealed:
                raise ProtocolError(
                    f"an unauthenticated {message.type_name} message arrived inside the session"
                )
            if not isinstance(message, expected):
                wanted = " or ".join(m.TYPE.name for m in expected)
                raise ProtocolError(
                    f"unexpected {message.type_name} message from the {self.peer} "
                    f"(expected {wanted})"
                )
            return message

    def receive(self, kind: type[M]) -> M:
        return cast(M, self.receive_any(kind))

    def fail(self, error: SalesmgrError) -> None:
        """Tell the peer why this end stops, if the link still carries anything."""
        if self.peer_stopped:
            return
        text = getattr(error, "peer_text", None) or str(error)
        try:
            self.send(Error(int(error.wire_code), text))
        except SyncError:
            pass  # the link is gone: the peer will notice that on its own


# --- deltas as batches of mini pipeline files ------------------------------------------------


def record_size(record: Record) -> int:
    """A rough size of a record in a batch, to cut batches without encoding twice."""
    return 48 + 28 * len(record.field_dots) + sum(len(k) + len(v) for k, v in record.values.items())


def split_batches(records: list[Record], batch_bytes: int) -> Iterator[list[Record]]:
    batch: list[Record] = []
    size = 0
    for record in records:
        cost = record_size(record)
        if batch and size + cost > batch_bytes:
            yield batch
            batch, size = [], 0
        batch.append(record)
        size += cost
    if batch:
        yield batch


def send_delta(
    channel: Channel, events: Events, delta: Delta, registry: Registry, batch_bytes: int
) -> int:
    sent = 0
    batches = 0
    for chunk in split_batches(delta.records, batch_bytes):
        mini = Pipeline(
            pipeline_id=delta.pipeline_id,
            replica_id=delta.replica_id,
            records={r.id: r for r in chunk},
        )
        channel.send(Batch(batches, len(chunk), storage.encode(mini, registry)))
        batches += 1
        sent += len(chunk)
        events("batch", direction="sent", records=sent, bytes=channel.link.bytes_sent)
    channel.send(DeltaEnd(delta.replica_id, batches, sent, dict(delta.knowledge)))
    return sent


def receive_delta(
    channel: Channel,
    events: Events,
    pipeline_id: str,
    registry: Registry,
    first: Message | None = None,
) -> Delta:
    records: dict[str, Record] = {}
    batches = 0
    while True:
        message = first or channel.receive_any(Batch, DeltaEnd)
        first = None
        if isinstance(message, DeltaEnd):
            break
        assert isinstance(message, Batch)
        if message.index != batches:
            raise ProtocolError(f"batch {message.index} from the {channel.peer} is out of order")
        source = f"batch {message.index} from the {channel.peer}"
        try:
            mini = storage.decode(message.payload, source, registry)
        except PipelineFileError as problem:
            raise ProtocolError(str(problem)) from None
        if mini.pipeline_id != pipeline_id:
            raise ProtocolError(f"{source} belongs to another pipeline")
        if len(mini.records) != message.records:
            raise ProtocolError(
                f"{source} holds {len(mini.records)} records, not {message.records}"
            )
        for record_id, record in mini.records.items():
            if record_id in records:
                raise ProtocolError(f"{source} repeats record {record_id}")
            records[record_id] = record
        batches += 1
        events("batch", direction="received", records=len(records),
               bytes=channel.link.bytes_received)
    if message.batches != batches or message.records != len(records):
        raise ProtocolError(
            f"the {channel.peer} announced {message.records} records in {message.batches} "
            f"batches but sent {len(records)} in {batches}"
        )
    return Delta(pipeline_id, message.replica, dict(message.knowledge), list(records.values()))


# --- what a session did -------------------------------------------------------------------------


@dataclass
class SessionResult:
    side: str  # "desktop" or "device"
    mode: str  # "sync" or "load"
    peer_replica: str = ""
    dry_run: bool = False
    slow: str = ""  # why the device was asked for everything, if it was
    report: MergeReport | None = None
    mass_change: str | None = None  # a dry run that a real sync would refuse
    committed: bool = False  # the device saved what it received
    saved: bool = False  # this end wrote its file
    records_received: int = 0
    records_sent: int = 0
    device_records: int = 0  # live records on the device at the end
    bytes_sent: int = 0
    bytes_received: int = 0
    seconds: float = 0.0

    def traffic(self) -> str:
        return (
            f"{self.records_received} records received, {self.records_sent} sent; "
            f"{self.bytes_sent} bytes sent, {self.bytes_received} received "
            f"in {self.seconds:.2f} s"
        )

    def lines(self) -> list[str]:
        out: list[str] = []
        if self.side == "desktop" and self.mode == "load":
            out.append(
                f"loaded the device: {self.records_sent} records sent, "
                f"it now holds {self.device_records}"
            )
        elif self.side == "desktop":
            out.extend(self.report.lines() if self.report else [])
        else:
            state = "committed" if self.committed else "nothing written"
            out.append(
                f"{self.mode} with desktop {self.peer_replica[:8]}: {state}, "
                f"device holds {self.device_records} records"
            )
        if self.slow:
            out.append(f"slow sync (full comparison): {self.slow}")
        if self.mass_change:
            out.append(f"a real sync would stop: {self.mass_change}")
        if self.dry_run:
            out.append("dry run: nothing was written on either side")
        out.append(self.traffic())
        return out

    def as_json(self) -> dict[str, Any]:
        return {
            "side": self.side,
            "mode": self.mode,
            "peer_replica": self.peer_replica,
            "dry_run": self.dry_run,
            "slow_sync": self.slow or None,
            "mass_change": self.mass_change,
            "committed": self.committed,
            "saved": self.saved,
            "records_received": self.records_received,
            "records_sent": self.records_sent,
            "device_records": self.device_records,
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "seconds": round(self.seconds, 4),
            "report": self.report.as_json() if self.report else None,
        }


class _Session:
    side = ""
    peer = ""

    def __init__(
        self,
        link: Link,
        secret: str | bytes,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        registry: Registry | None = None,
        batch_bytes: int = BATCH_BYTES,
    ) -> None:
        self.secret = auth.secret_bytes(secret)
        self.registry = registry or get_registry()
        self.link = link
        self.channel = Channel(link, peer=self.peer, timeout=timeout)
        self.events = Events(self.registry, self.side)
        self.batch_bytes = batch_bytes
        self.result = SessionResult(self.side, "")

    def _run(self, body: Callable[[], None]) -> SessionResult:
        started = time.monotonic()
        try:
            body()
        except SalesmgrError as error:
            self.events("failed", error=str(error))
            self.channel.fail(error)
            raise
        finally:
            self.result.seconds = time.monotonic() - started
            self.result.bytes_sent = self.link.bytes_sent
            self.result.bytes_received = self.link.bytes_received
        return self.result


# --- the desktop side --------------------------------------------------------------------------


class DesktopSession(_Session):
    """Opens the session and pulls: ``sync`` merges with the device, ``load`` fills it."""

    side = "desktop"
    peer = "device"

    def sync(
        self,
        desktop: Pipeline,
        *,
        save: Callable[[Pipeline], None],
        policy: str = "field-merge",
        dry_run: bool = False,
        allow_mass_change: bool = False,
    ) -> SessionResult:
        """Merge the device's changes into ``desktop`` and send back what it lacks.

        ``save`` writes the desktop file; it is called (unless ``dry_run``) after the merge and
        before anything is sent back, so the device never holds a version the desktop lost."""
        self.registry.policy(policy)  # an unknown policy fails before anything is sent
        self.result.mode = self.events.mode = "sync"
        self.result.dry_run = dry_run
        return self._run(
            lambda: self._sync(desktop, save, policy, dry_run, allow_mass_change)
        )

    def load(self, desktop: Pipeline) -> SessionResult:
        """Give the device the whole desktop pipeline (it refuses if it holds unsynced changes)."""
        self.result.mode = self.events.mode = "load"
        return self._run(lambda: self._load(desktop))

    def _open(self, mode: Mode, desktop: Pipeline, dry_run: bool) -> State:
        channel = self.channel
        nonce = auth.new_nonce()
        channel.send(Hello(nonce, SOFTWARE))
        challenge = channel.receive(Challenge)
        self.events("hello", peer_software=challenge.software)
        expected = auth.device_proof(self.secret, nonce, challenge.nonce)
        if not auth.proof_matches(expected, challenge.proof):
            raise SessionError(
                "authentication failed: the device does not know this pairing secret "
                "(give both ends the same --secret or SALESMGR_SECRET)",
                ErrorCode.AUTH,
                "authentication failed: the desktop does not accept this device's pairing secret",
            )
        channel.send(Proof(auth.desktop_proof(self.secret, nonce, challenge.nonce)))
        channel.key = auth.session_key(self.secret, nonce, challenge.nonce)
        channel.send(
            Open(
                mode,
                dry_run,
                desktop.pipeline_id,
                desktop.replica_id,
                desktop.name,
                desktop.owner,
                desktop.currency,
                dict(desktop.extra),
                dict(desktop.knowledge),
            )
        )
        state = channel.receive(State)
        self.result.peer_replica = state.device_replica
        self.result.device_records = state.live_records
        self.events("authenticated", peer_replica=state.device_replica)
        return state

    def _load(self, desktop: Pipeline) -> None:
        self._open(Mode.LOAD, desktop, False)
        everything = delta_since(desktop, {}, self.registry)
        self.result.records_sent = send_delta(
            self.channel, self.events, everything, self.registry, self.batch_bytes
        )
        self._finish()

    def _finish(self) -> None:
        ack = self.channel.receive(Ack)
        if not ack.committed:
            raise ProtocolError("the device did not commit what it received")
        self.result.committed = True
        self.result.device_records = ack.live_records
        self.events("committed", records=self.result.records_sent)

    def _sync(
        self,
        desktop: Pipeline,
        save: Callable[[Pipeline], None],
        policy: str,
        dry_run: bool,
        allow_mass_change: bool,
    ) -> None:
        state = self._open(Mode.SYNC, desktop, dry_run)
        device = reported(state)
        rules.check_device(desktop, device)
        slow = rules.slow_reason(desktop, device)
        untrusted = rules.fork_if_restored(desktop, slow, dry_run)
        self.result.slow = slow
        self.channel.send(Pull(bool(slow), rules.wanted(desktop, slow)))
        delta = receive_delta(self.channel, self.events, desktop.pipeline_id, self.registry)
        self.result.records_received = len(delta.records)

        desktop_before = live_count(desktop)
        versions_before = rules.versions(desktop)
        merged = merge_delta(
            desktop, delta, policy=policy, registry=self.registry, untrusted=untrusted
        )
        # Record only what the device is known to hold; the rest waits for its next report.
        desktop.peers[device.replica] = dict(state.knowledge)
        self.result.report = merged.report
        self.events("merged", **merged.report.progress())
        self.result.mass_change = rules.brake(
            merged, desktop_before, None if state.blank else state.live_records,
            dry_run=dry_run, allow=allow_mass_change,
        )
        if dry_run:
            self.channel.send(Finish(True))
            self.channel.receive(Ack)
            return
        self.result.saved = rules.commit(desktop, versions_before, save)
        self.result.records_sent = send_delta(
            self.channel, self.events, merged.back, self.registry, self.batch_bytes
        )
        self._finish()



def reported(state: State) -> DeviceReport:
    """What the device's STATE says about it, in the terms of the session rules."""
    return DeviceReport(
        state.pipeline_id, state.device_replica, state.name, state.live_records,
        state.knowledge, state.agreement, state.blank,
    )


def header_of(opening: Open) -> DesktopHeader:
    """What the desktop's OPEN says about its pipeline, in the terms of the session rules."""
    return DesktopHeader(
        opening.pipeline_id, opening.desktop_replica, opening.name, opening.owner,
        opening.currency, opening.extra, opening.knowledge,
    )


# --- the device side ---------------------------------------------------------------------------


class DeviceStore(Protocol):
    """Where the device keeps its pipeline (the emulator: a file)."""

    # True when the last load() gave the pipeline a new replica id (the file was a copy): the
    # session then saves at its commit even if nothing else changed, so the identity sticks.
    renamed: bool

    def load(self) -> Pipeline | None:
        """The device's pipeline, or None for a new or reset device."""

    def save(self, pipeline: Pipeline) -> None:
        """Replace the stored pipeline atomically."""


@dataclass
class DeviceFile:
    """A device pipeline in a file; a missing or empty file is a device with nothing loaded."""

    path: Path
    registry: Registry | None = None
    renamed: bool = False

    def load(self) -> Pipeline | None:
        self.renamed = False
        try:
            if self.path.stat().st_size == 0:
                return None
        except FileNotFoundError:
            return None
        except OSError as problem:
            raise PipelineFileError(self.path, f"cannot read ({problem.strerror})") from None
        pipeline = storage.decode(storage.read_bytes(self.path), str(self.path), self.registry)
        self.renamed = storage.settle_home(pipeline, storage.home_of(self.path))
        return pipeline

    def save(self, pipeline: Pipeline) -> None:
        storage.save(pipeline, self.path, self.registry)


class DeviceSession(_Session):
    """Answers one session from a desktop, committing to ``store`` only when told to."""

    side = "device"
    peer = "desktop"

    def __init__(self, link: Link, secret: str | bytes, store: DeviceStore, **kw: Any) -> None:
        super().__init__(link, secret, **kw)
        self.store = store

    def serve(self) -> SessionResult:
        return self._run(self._serve)

    def _serve(self) -> None:
        channel = self.channel
        hello = channel.receive(Hello)
        self.events("hello", peer_software=hello.software)
        nonce = auth.new_nonce()
        channel.send(
            Challenge(nonce, auth.device_proof(self.secret, hello.nonce, nonce), SOFTWARE)
        )
        proof = channel.receive(Proof)
        expected = auth.desktop_proof(self.secret, hello.nonce, nonce)
        if not auth.proof_matches(expected, proof.proof):
            raise SessionError(
                "authentication failed: the desktop does not know this pairing secret",
                ErrorCode.AUTH,
                "authentication failed: the device does not accept this desktop's pairing secret "
                "(give both ends the same --secret or SALESMGR_SECRET)",
            )
        channel.key = auth.session_key(self.secret, hello.nonce, nonce)
        opening = channel.receive(Open)
        self.result.mode = self.events.mode = opening.mode.name.lower()
        self.result.peer_replica = opening.desktop_replica
        self.result.dry_run = opening.dry_run
        self.events("authenticated", peer_replica=opening.desktop_replica)

        target = DeviceTarget(self.store.load(), header_of(opening))
        rules.check_desktop(target, load=opening.mode is Mode.LOAD, registry=self.registry)
        device = target.held if target.same else None
        self.result.device_records = live_count(device)
        knowledge = dict(device.knowledge) if device else {}
        agreement = device.peers.get(opening.desktop_replica) if device else None
        channel.send(
            State(
                target.held.pipeline_id if target.held else None,
                target.replica,
                target.held.name if target.held else "",
                self.result.device_records,
                knowledge,
                dict(agreement) if agreement is not None else None,
                blank=target.blank,
            )
        )
        if opening.mode is Mode.LOAD:
            self._load(target)
        else:
            self._sync(target, knowledge, opening.dry_run)

    def _load(self, target: DeviceTarget) -> None:
        everything = receive_delta(
            self.channel, self.events, target.header.pipeline_id, self.registry
        )
        self.result.records_received = len(everything.records)
        fresh = target.fresh()
        apply_delta(fresh, everything)
        self._commit(fresh, changed=True)

    def _sync(self, target: DeviceTarget, knowledge: dict[str, int], dry_run: bool) -> None:
        channel = self.channel
        pipeline_id = target.header.pipeline_id
        pull = channel.receive(Pull)
        device = target.held if target.same else None
        if device is not None:
            delta = delta_since(device, pull.since, self.registry)
        else:
            delta = Delta(pipeline_id, target.replica, knowledge, [])
        self.result.records_sent = send_delta(
            channel, self.events, delta, self.registry, self.batch_bytes
        )
        answer = channel.receive_any(Batch, DeltaEnd, Finish)
        if isinstance(answer, Finish) or dry_run:
            if not isinstance(answer, Finish):
                receive_delta(channel, self.events, pipeline_id, self.registry, answer)
            channel.send(Ack(False, self.result.device_records, knowledge))
            return
        back = receive_delta(channel, self.events, pipeline_id, self.registry, answer)
        self.result.records_received = len(back.records)
        into: Pipeline = device if device is not None else target.fresh()
        before = (dict(into.knowledge), copy.deepcopy(into.peers))
        apply_delta(into, back)
        changed = (
            device is None
            or self.store.renamed
            or bool(back.records)
            or (into.knowledge, into.peers) != before
        )
        self._commit(into, changed)

    def _commit(self, target: Pipeline, changed: bool) -> None:
        if changed:
            self.store.save(target)
            self.result.saved = True
        self.result.committed = True
        self.result.device_records = live_count(target)
        self.channel.send(Ack(True, self.result.device_records, dict(target.knowledge)))
        self.events("committed", records=self.result.records_received)
