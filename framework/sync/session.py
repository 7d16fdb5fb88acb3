"""The live session: the desktop side and the device side of the protocol, over any `Link`.

The code here knows messages, never transports: a TCP socket, a serial cradle or a shared folder
all hand it a `salesmgr.plugin.interfaces.Link`.  What each side decides is `salesmgr.sync.rules`,
shared with the mailbox carrier.  The order of the steps is what makes a cable pulled at any byte
harmless (docs/protocol.md has the diagrams):

1. HELLO / CHALLENGE / PROOF: both ends prove they know the pairing secret; from then on every
   message is sealed with a session key.  Then each end reads its pipeline, at the same time
   (`DesktopSession.opening`).
2. OPEN / STATE: the desktop names the pipeline and what it knows; the device answers with what
   it holds and what it knows.  A wrong pipeline, or a load onto unsynced changes, stops here.
3. PULL, then the device's BATCHes and DELTA_END: only the writes the desktop lacks (a slow sync
   asks for everything).
4. The desktop merges, then sends back what the device lacks, *saving its file* while the
   first batches cross the link and before DELTA_END, the only message that lets the device
   commit; the device applies it, saves atomically and ACKs.  Both merges are idempotent, so
   whatever was cut, the next sync finishes the job without duplicates.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from salesmgr import __version__
from salesmgr.errors import (
    PeerError,
    ProtocolError,
    SalesmgrError,
    SyncError,
)
from salesmgr.merge.engine import (
    Delta,
    apply_delta,
    delta_since,
)
from salesmgr.model.pipeline import Pipeline
from salesmgr.plugin.interfaces import Link
from salesmgr.plugin.manager import Registry, get_registry
from salesmgr.sync import rules
from salesmgr.sync.batches import BATCH_BYTES, receive_delta, send_delta
from salesmgr.sync.channel import DEFAULT_TIMEOUT, Channel, Events
from salesmgr.sync.device_file import DeviceStore
from salesmgr.sync.results import SessionResult
from salesmgr.sync.rules import DesktopHeader, DeviceReport, DeviceTarget, live_count
from salesmgr.sync.wire import auth
from salesmgr.sync.wire.protocol import (
    Ack,
    Batch,
    DeltaEnd,
    Finish,
    Mode,
    Open,
    Pull,
    State,
)

SOFTWARE = f"salesmgr {__version__}"

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
            self.result.seconds += time.monotonic() - started  # the opening, then the rest
            self.result.bytes_sent = self.link.bytes_sent
            self.result.bytes_received = self.link.bytes_received
        return self.result


# --- the desktop side --------------------------------------------------------------------------


class DesktopSession(_Session):
    """Opens the session and pulls: ``sync`` merges with the device, ``load`` fills it."""

    side = "desktop"
    peer = "device"
    _greeted = False  # the handshake is done (`opening` does it before the pipeline is read)
    _opened: Pipeline

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

    def opening(self, open_pipeline: Callable[[], Pipeline]) -> Pipeline:
        """Prove the pairing both ways (HELLO / CHALLENGE / PROOF), then ``open_pipeline()``.

        The device reads its own file as soon as the desktop has proved itself, so the two
        files are read at the same time instead of one after the other (on 100,000 records,
        each read is a fifth of a sync).  A pipeline that cannot be opened is an error of this
        end: the device is told why, as for any failure."""
        def greet_then_open() -> None:
            self._greet()
            self._opened = open_pipeline()

        self._run(greet_then_open)
        return self._opened

    def _greet(self) -> None:
        if not self._greeted:
            auth.desktop_handshake(self.channel, self.secret, SOFTWARE, binding_of(self.link),
                                   lambda peer: self.events("hello", peer_software=peer))
            self._greeted = True

    def _open(self, mode: Mode, desktop: Pipeline, dry_run: bool) -> State:
        channel = self.channel
        self._greet()
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
        try:
            ack = self.channel.receive(Ack)
        except PeerError:
            raise  # the device said why it stopped: it did not commit
        except SyncError as lost:
            if self.result.mode != "sync":
                raise
            # Everything was merged, saved here and sent: only the last word is missing.  The
            # device saved its part or not; either way the next sync finishes without loss.
            self.result.unconfirmed = str(lost)
            self.events("committed", records=self.result.records_sent, confirmed=False)
            return
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
        done = rules.merge_on_desktop(
            desktop, delta, device, untrusted=untrusted, policy=policy, dry_run=dry_run,
            allow_mass_change=allow_mass_change, registry=self.registry, events=self.events,
        )
        self.result.report = done.merged.report
        self.result.mass_change = done.mass_change
        if dry_run:
            self.channel.send(Finish(True))
            self.channel.receive(Ack)
            return

        def commit() -> None:
            self.result.saved = rules.commit(desktop, done.before, save)

        # The records go out while the desktop saves; the device may commit only after the
        # save (DELTA_END follows it), so it never holds a version the desktop lost.
        self.result.records_sent = send_delta(
            self.channel, self.events, done.merged.back, self.registry, self.batch_bytes,
            commit=commit,
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


def binding_of(link: Link) -> bytes:
    """What the link binds the handshake to (`Link.channel_binding`; a link that predates it
    binds nothing)."""
    return bytes(getattr(link, "channel_binding", b""))


# --- the device side ---------------------------------------------------------------------------


class DeviceSession(_Session):
    """Answers one session from a desktop, committing to ``store`` only when told to."""

    side = "device"
    peer = "desktop"

    def __init__(
        self,
        link: Link,
        secret: str | bytes,
        store: DeviceStore,
        *,
        hold: Callable[[], AbstractContextManager[object]] = nullcontext,
        **kw: Any,
    ) -> None:
        super().__init__(link, secret, **kw)
        self.store = store
        self.hold = hold  # keeps the store to this session once the desktop authenticated

    def serve(self) -> SessionResult:
        return self._run(self._serve)

    def _serve(self) -> None:
        channel = self.channel
        auth.device_handshake(channel, self.secret, SOFTWARE, binding_of(self.link),
                              lambda peer: self.events("hello", peer_software=peer))
        # Only an authenticated desktop gets to hold the device's file; it is read at once, while
        # OPEN (sent right behind PROOF) crosses the line.
        with self.hold():
            self._answer(self.store.load())

    def _answer(self, held: Pipeline | None) -> None:
        channel = self.channel
        opening = channel.receive(Open)
        self.result.mode = self.events.mode = opening.mode.name.lower()
        self.result.peer_replica = opening.desktop_replica
        self.result.dry_run = opening.dry_run
        self.events("authenticated", peer_replica=opening.desktop_replica)

        target = DeviceTarget(held, header_of(opening))
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
        device = target.held if target.same else None
        # A normal sync pulls with the knowledge the desktop opened with: collect what that
        # lacks while STATE and PULL cross the line (a slow sync asks anew, below).
        opened_with = dict(target.header.knowledge)
        guess = delta_since(device, opened_with, self.registry) if device is not None else None
        pull = channel.receive(Pull)
        if guess is not None and dict(pull.since) == opened_with:
            delta = guess
        elif device is not None:
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
