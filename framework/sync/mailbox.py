"""Store-and-forward sync: the desktop half and the device half, over any `Mailbox`.

When the desktop and the device are never connected at the same time (``folder://``: a
mirroring tool copies the device's files to a folder on the PC and back), the live session of
`salesmgr.sync.session` becomes three drops (`salesmgr.sync.wire.drops`) and three commit points:

1. The device keeps one OFFER in the mailbox, always current: its changes since what it last
   learned the desktop knows (everything when it never met one), with its knowledge.
2. ``salesmgr sync --from folder://PATH`` takes the newest offer, merges it like a live sync
   (same merge engine, same guards), **saves the desktop file**, then leaves an ANSWER: what the
   device lacks.  An offer that does not cover what the desktop lacks (a restored device or
   desktop, a first meeting) is answered with a request to offer again, and nothing is merged.
3. The device takes the answer, applies it, and **saves its file together with the answer's id**;
   only then does it remove the answer and refresh its offer.

Every step is idempotent and each side records the ids of the drops it applied in its own file
(header entry ``drops.applied``), in the same atomic save as what they changed; so a drop
delivered twice is applied once, and a cut anywhere leaves two valid files that the next round
brings together (docs/protocol.md, section ``folder://``, walks through every cut).  A plain
pipeline file found in the mailbox (copied there by hand, the old way) is merged as
``salesmgr merge`` would and put back, merged and sealed, for the device — but only when its seal
proves a paired replica wrote it (`salesmgr.sync.wire.auth.seal_problem`): anyone who can write
the folder can write a pipeline file.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from salesmgr import storage
from salesmgr.errors import (
    DropError,
    ForeignDrop,
    PipelineFileError,
    SalesmgrError,
    SessionError,
    SyncError,
)
from salesmgr.merge.engine import (
    Delta,
    apply_delta,
    count_device_side,
    delta_since,
)
from salesmgr.merge.report import MergeReport
from salesmgr.model.pipeline import Pipeline, now_ms
from salesmgr.plugin.interfaces import Mailbox, Opened
from salesmgr.plugin.manager import Registry, get_registry
from salesmgr.sync import rules
from salesmgr.sync.channel import DEFAULT_TIMEOUT, Events
from salesmgr.sync.device_file import DeviceStore
from salesmgr.sync.results import DropResult
from salesmgr.sync.rules import DesktopHeader, DeviceReport, DeviceTarget, live_count, plural
from salesmgr.sync.wire import auth, drops
from salesmgr.sync.wire.drops import Answer, Drop, DropKind, Load, Offer, Refusal

# A drop or file that fails its checks but changed less than this long ago may still be being
# copied in by the mirroring tool: it is left alone and looked at again, never applied.
SETTLE = 2.0
APPLIED = "drops.applied"  # header entry: ids of the drops this file applied, newest last
PARTNER = "drops.desktop"  # device header entry: the desktop it last took a drop from
KEEP_APPLIED = 64  # an evicted id is harmless: replaying a very old drop changes nothing
WAIT_STEP = 0.05


def applied_ids(pipeline: Pipeline | None) -> list[str]:
    return pipeline.extra.get(APPLIED, "").split() if pipeline is not None else []


def was_applied(pipeline: Pipeline | None, drop_id: str) -> bool:
    return drop_id in applied_ids(pipeline)


def remember_applied(pipeline: Pipeline, drop_id: str) -> None:
    kept = [i for i in applied_ids(pipeline) if i != drop_id] + [drop_id]
    pipeline.extra[APPLIED] = " ".join(kept[-KEEP_APPLIED:])


def header_extra(pipeline: Pipeline) -> dict[str, str]:
    """The header entries a pipeline hands on; its drop bookkeeping stays its own."""
    return {k: v for k, v in pipeline.extra.items() if not k.startswith("drops.")}


def covers(knowledge: dict[str, int], other: dict[str, int]) -> bool:
    """True when ``knowledge`` has seen every write ``other`` has."""
    return all(knowledge.get(replica, 0) >= counter for replica, counter in other.items())


# --- looking into the mailbox --------------------------------------------------------------------


@dataclass
class Found:
    """A drop that passed every check."""

    entry: str
    drop: Drop
    size: int


@dataclass
class PipelineEntry:
    """A plain pipeline file found in the mailbox."""

    entry: str
    pipeline: Pipeline
    size: int


@dataclass
class Look:
    """What one look into the mailbox found."""

    drops: list[Found] = field(default_factory=list)
    files: list[PipelineEntry] = field(default_factory=list)
    problems: dict[str, str] = field(default_factory=dict)  # entry -> why it is refused
    arriving: list[str] = field(default_factory=list)  # incomplete but young: look again

    def of(self, kind: type[Drop]) -> list[Found]:
        return [f for f in self.drops if isinstance(f.drop, kind)]


def offer_rank(found: Found) -> tuple[int, int]:
    # A device's knowledge only grows, so its later offers know more; its clock breaks ties.
    offer = found.drop
    assert isinstance(offer, Offer)
    return sum(offer.knowledge.values()), offer.created_ms


def newest_offer(found: Iterable[Found]) -> Found | None:
    return max((f for f in found if isinstance(f.drop, Offer)), key=offer_rank, default=None)


class DropReader:
    """Reads and checks entries of a mailbox; remembers what it checked until it changes."""

    def __init__(
        self, mailbox: Mailbox, secret: bytes, registry: Registry, settle: float
    ) -> None:
        self.mailbox = mailbox
        self.secret = secret
        self.registry = registry
        self.settle = settle
        self.cache: dict[str, tuple[object, Found | str | None]] = {}

    def where(self, entry: str) -> str:
        return f"{self.mailbox.url.rstrip('/')}/{entry}"

    def look(
        self,
        inbox: Collection[DropKind],
        outbox: Collection[DropKind] = (),
        *,
        files: bool = False,
        entries: dict[str, object] | None = None,
    ) -> Look:
        """Drops of the ``inbox`` kinds (problems reported), of the ``outbox`` kinds (this side's
        own: problems ignored), and with ``files`` the plain pipeline files."""
        entries = self.mailbox.entries() if entries is None else entries
        for gone in set(self.cache) - set(entries):
            del self.cache[gone]
        look = Look()
        for entry, token in sorted(entries.items()):
            claimed = drops.parse_name(entry)
            if claimed is None:
                if files and not entry.endswith(".bak"):  # storage's backups are old copies
                    self.take_file(entry, token, look)
                continue
            kind, drop_id = claimed
            if kind in inbox or kind in outbox:
                self.take_drop(entry, token, kind, drop_id, look, report=kind in inbox)
        return look

    def take_drop(
        self, entry: str, token: object, kind: DropKind, drop_id: str, look: Look, report: bool
    ) -> None:
        cached = self.cache.get(entry)
        if cached is not None and cached[0] == token:
            outcome = cached[1]
        else:
            outcome = self.check_drop(entry, kind, drop_id)
            if outcome == "arriving":
                if report:
                    look.arriving.append(entry)
                return
            self.cache[entry] = (token, outcome)
        if isinstance(outcome, Found):
            look.drops.append(outcome)
        elif isinstance(outcome, str) and report:
            look.problems[entry] = outcome

    def check_drop(self, entry: str, kind: DropKind, drop_id: str) -> Found | str | None:
        where = self.where(entry)
        try:
            opened = self.mailbox.open(entry)
            if opened is None:
                return None  # taken away meanwhile
            with opened.stream:
                # The envelope is checked against the entry's size first: a file that cannot be
                # a drop (a huge one, a sparse one) is refused before the rest of it is read,
                # and the rest is read in bounded pieces.
                drop = drops.read_drop(
                    opened.stream, opened.size, self.secret, where, self.registry
                )
        except ForeignDrop as problem:
            return str(problem)
        except DropError as problem:
            return "arriving" if opened is not None and opened.age < self.settle else str(problem)
        except SyncError as problem:
            return str(problem)
        except OSError as problem:
            return f"{where}: cannot read ({problem.strerror or problem})"
        if drop.KIND is not kind or drop.drop_id != drop_id:
            return (
                f"{where}: its name does not match what it holds "
                f"(a {drop.kind_name} {drop.drop_id[:8]})"
            )
        return Found(entry, drop, opened.size)

    def take_file(self, entry: str, token: object, look: Look) -> None:
        cached = self.cache.get(entry)
        if cached is not None and cached[0] == token:
            return  # looked at before: not a pipeline file
        where = self.where(entry)
        opened = None
        try:
            opened = self.mailbox.open(entry)
            if opened is None:
                return
            with opened.stream:
                pipeline = self.read_file(entry, token, opened, look)
        except PipelineFileError as problem:
            if opened is not None and opened.age < self.settle:
                look.arriving.append(entry)
            else:
                look.problems[entry] = str(problem)
            return
        except SyncError as problem:
            look.problems[entry] = str(problem)
            return
        except OSError as problem:
            look.problems[entry] = f"{where}: cannot read ({problem.strerror or problem})"
            return
        if pipeline is None:
            return
        # Anyone who can write the folder can put a file there: only a paired replica's is merged.
        unproved = auth.seal_problem(pipeline, self.secret, self.registry)
        if unproved:
            look.problems[entry] = (
                f"{where}: not merged: {unproved}; to merge a file you trust, use "
                "salesmgr merge DESKTOP FILE"
            )
            return
        storage.settle_home(pipeline, self.mailbox.home(entry))
        look.files.append(PipelineEntry(entry, pipeline, opened.size))

    def read_file(self, entry: str, token: object, opened: Opened, look: Look) -> Pipeline | None:
        """The pipeline file in an opened entry, its size checked before it is read; None (and
        why in ``look``) when it is not one or is refused unread."""
        where = self.where(entry)
        head = opened.stream.read(64)
        opened.stream.seek(0)
        codec = next((c for c in self.registry.codecs if c.sniff(head)), None)
        if codec is None:
            self.cache[entry] = (token, None)
            return None
        # A size over the cap, or not the one its envelope declares (a sparse or padded file),
        # is refused before the rest is read; the rest is read in bounded pieces.
        declared = codec.expected_size(head)
        too_large = storage.too_large(opened.size)
        if too_large:
            look.problems[entry] = f"{where}: {too_large}; not read"
            return None
        if declared is not None and declared != opened.size:
            if declared > opened.size and opened.age < self.settle:
                look.arriving.append(entry)
            else:
                look.problems[entry] = (
                    f"{where}: {opened.size} bytes, but its envelope declares {declared}; "
                    "not read"
                )
            return None
        return storage.read_stream(opened.stream, opened.size, where, self.registry)


# --- the desktop half ----------------------------------------------------------------------------


class DesktopDrops:
    """``salesmgr sync`` and ``salesmgr load`` through a mailbox."""

    def __init__(
        self,
        mailbox: Mailbox,
        secret: str | bytes,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        registry: Registry | None = None,
        settle: float = SETTLE,
    ) -> None:
        self.mailbox = mailbox
        self.secret = auth.secret_bytes(secret)
        self.registry = registry or get_registry()
        self.timeout = timeout
        self.reader = DropReader(mailbox, self.secret, self.registry, settle)
        self.events = Events(self.registry, "desktop")

    def look(
        self, inbox: Collection[DropKind], outbox: Collection[DropKind], files: bool
    ) -> Look:
        """A look, waiting (up to the timeout) for entries still being copied in."""
        deadline = time.monotonic() + self.timeout
        while True:
            look = self.reader.look(inbox, outbox, files=files)
            if not look.arriving:
                return look
            if time.monotonic() >= deadline:
                for entry in look.arriving:
                    look.problems[entry] = (
                        f"{self.reader.where(entry)}: still being copied into the folder after "
                        f"{self.timeout:g} s"
                    )
                return look
            time.sleep(WAIT_STEP)

    # -- sync ---------------------------------------------------------------------------------

    def sync(
        self,
        desktop: Pipeline,
        *,
        save: Callable[[Pipeline], None],
        policy: str = "field-merge",
        dry_run: bool = False,
        allow_mass_change: bool = False,
    ) -> list[DropResult]:
        """Answer the device's newest offer and merge every pipeline file found.

        ``save`` writes the desktop file; it is called (unless ``dry_run``) after a merge and
        before anything is left for the device, so the device never holds a version the
        desktop lost.  Raises SyncError when the mailbox holds nothing to take."""
        self.registry.policy(policy)  # an unknown policy fails before anything is read
        self.events.mode = "sync"
        try:
            look = self.look(
                {DropKind.OFFER, DropKind.REFUSAL}, {DropKind.ANSWER, DropKind.LOAD}, files=True
            )
            notices, told = self.refusals(look)
            results: list[DropResult] = []
            offer = newest_offer(look.drops)
            if offer is not None:
                results.append(
                    self.answer(desktop, offer, look, save, policy, dry_run, allow_mass_change)
                )
            for found in look.files:
                merged = self.merge_file(
                    desktop, found, save, policy, dry_run, allow_mass_change, notices
                )
                if merged is not None:
                    results.append(merged)
        except SalesmgrError as error:
            self.events("failed", error=str(error))
            raise
        problems = [f"{p}; left in place for inspection" for p in look.problems.values()]
        if not results and problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise SyncError(f"{problems[0]}, nothing was changed{more}")
        if not dry_run:  # the user is told now: clear the refusals and what they refused away
            for entry in told:
                self.mailbox.remove(entry)
        if not results:
            raise SyncError("; ".join([
                f"nothing to sync in {self.mailbox.url}: no offer from the device and no "
                "pipeline file (is the device's folder mirrored there?)",
                *notices,
            ]))
        results[0].notices.extend(notices)
        results[0].refused.extend(look.problems.values())  # the command says so (`refused_in`)
        return results

    def refusals(self, look: Look) -> tuple[list[str], list[str]]:
        """What the device refused, as notes for the user, and the entries to clear away once
        the user has been told (each refusal and the drop it refused)."""
        notices: list[str] = []
        told: list[str] = []
        own = {f.drop.drop_id: f for f in look.drops if isinstance(f.drop, (Load, Answer))}
        for found in look.of(Refusal):
            refusal = found.drop
            assert isinstance(refusal, Refusal)
            refused = own.get(refusal.refused)
            what = refused.entry if refused else f"drop {refusal.refused[:8]}"
            notices.append(f"the device refused {what}: {refusal.text}")
            told.append(found.entry)
            if refused is not None:
                told.append(refused.entry)
                look.drops.remove(refused)  # gone once told: neither superseded nor re-sent
        return notices, told

    def answer(
        self,
        desktop: Pipeline,
        found: Found,
        look: Look,
        save: Callable[[Pipeline], None],
        policy: str,
        dry_run: bool,
        allow_mass_change: bool,
    ) -> DropResult:
        started = time.monotonic()
        offer = found.drop
        assert isinstance(offer, Offer)
        result = DropResult(
            "desktop", "sync", peer_replica=offer.device_replica, dry_run=dry_run,
            taken=f"{found.entry} from device {offer.device_replica[:8]}",
            records_received=len(offer.records), bytes_received=found.size,
            device_records=offer.live_records,
        )
        mine = desktop.replica_id
        agreement = offer.agreement if offer.desktop_replica == mine else None
        device = DeviceReport(
            offer.pipeline_id, offer.device_replica, offer.name, offer.live_records,
            offer.knowledge, agreement, offer.blank,
        )
        rules.check_device(desktop, device)
        self.events("authenticated", peer_replica=offer.device_replica)
        if was_applied(desktop, offer.drop_id):
            back = self.merged_before(desktop, found, result, policy)
            if back is None:
                result.seconds = time.monotonic() - started
                return result
        else:
            slow = rules.slow_reason(desktop, device)
            result.slow = slow
            wanted = rules.wanted(desktop, slow)
            if not covers(wanted, offer.since):
                self.ask_again(desktop, offer, look, wanted, slow, result, dry_run)
                result.seconds = time.monotonic() - started
                return result
            merged = self.merge(
                desktop, offer, device, slow, result, policy, dry_run, allow_mass_change
            )
            if merged is None:  # dry run
                result.seconds = time.monotonic() - started
                return result
            back, before = merged
            if rules.moved(desktop, before):
                remember_applied(desktop, offer.drop_id)
            result.saved = rules.commit(desktop, before, save)
        if not dry_run:
            self.leave_answer(desktop, offer, look, back, agreement, result)
        self.events("committed", records=result.records_sent)
        result.seconds = time.monotonic() - started
        return result

    def merged_before(
        self, desktop: Pipeline, found: Found, result: DropResult, policy: str
    ) -> Delta | None:
        """An offer this desktop merged already: never merged twice.  Answer it again (the
        answer may have been lost), unless the device has since sent a newer one."""
        offer = found.drop
        assert isinstance(offer, Offer)
        result.records_received = 0
        recorded = desktop.peers.get(offer.device_replica)
        newer = recorded is not None and recorded != offer.knowledge
        if newer and recorded is not None and covers(recorded, offer.knowledge):
            result.notices.append(
                f"{found.entry} was merged before and the device has sent newer changes "
                "since: not applied again"
            )
            return None
        back = delta_since(desktop, offer.knowledge, self.registry)
        result.report = MergeReport(policy)
        count_device_side(result.report, back, offer.knowledge, self.registry.conflict_log.name)
        result.notices.append(
            f"{found.entry} was merged before (its answer may have been lost): not merged again"
        )
        return back

    def merge(
        self,
        desktop: Pipeline,
        offer: Offer,
        device: DeviceReport,
        slow: str,
        result: DropResult,
        policy: str,
        dry_run: bool,
        allow_mass_change: bool,
    ) -> tuple[Delta, rules.Versions] | None:
        """Merge the offer into ``desktop``: (what the device lacks, the desktop's versions
        before), or None for a dry run."""
        untrusted = rules.fork_if_restored(desktop, slow, dry_run)
        delta = Delta(desktop.pipeline_id, offer.device_replica, dict(offer.knowledge),
                      offer.records)
        done = rules.merge_on_desktop(
            desktop, delta, device, untrusted=untrusted, policy=policy,
            dry_run=dry_run, allow_mass_change=allow_mass_change, registry=self.registry,
            events=self.events,
        )
        result.report = done.merged.report
        result.mass_change = done.mass_change
        if dry_run:
            return None
        return done.merged.back, done.before

    def ask_again(
        self,
        desktop: Pipeline,
        offer: Offer,
        look: Look,
        wanted: dict[str, int],
        slow: str,
        result: DropResult,
        dry_run: bool,
    ) -> None:
        """The offer does not hold everything this desktop lacks: merge nothing, and ask the
        device to offer again from ``wanted`` ({} = everything)."""
        why = slow or "the device's offer does not hold everything this desktop lacks"
        what = "everything it holds" if not wanted else "what this desktop lacks"
        result.waiting = (
            f"{why}: nothing merged yet; asked the device to offer {what} "
            "(run sync again once it has)"
        )
        if dry_run:
            return
        for earlier in look.of(Answer):
            drop = earlier.drop
            if isinstance(drop, Answer) and drop.offer_id == offer.drop_id and drop.resend:
                if drop.since == wanted:
                    result.written = earlier.entry
                    return
        request = self.answer_drop(desktop, offer, [], resend=True, since=wanted)
        self.leave(request, result)

    def answer_drop(
        self, desktop: Pipeline, offer: Offer, records: list[Any], *, resend: bool = False,
        since: dict[str, int] | None = None,
    ) -> Answer:
        return Answer(
            drops.new_drop_id(), now_ms(), offer.drop_id, offer.device_replica,
            desktop.pipeline_id, desktop.replica_id, desktop.name, desktop.owner,
            desktop.currency, header_extra(desktop), dict(desktop.knowledge), records,
            resend=resend, since=dict(since or {}),
        )

    def leave(self, drop: Drop, result: DropResult) -> None:
        data = drops.seal(drop, self.secret, self.registry)
        self.mailbox.write(drop.entry, data)
        result.written = drop.entry
        result.records_sent = len(drop.carried)
        result.bytes_sent = len(data)

    def leave_answer(
        self,
        desktop: Pipeline,
        offer: Offer,
        look: Look,
        back: Delta,
        agreement: dict[str, int] | None,
        result: DropResult,
    ) -> None:
        earlier = [
            f for f in look.of(Answer)
            if isinstance(f.drop, Answer) and f.drop.offer_id == offer.drop_id
        ]
        for found in earlier:
            drop = found.drop
            assert isinstance(drop, Answer)
            if (not drop.resend and drop.desktop_replica == desktop.replica_id
                    and drop.knowledge == desktop.knowledge):
                result.written = found.entry
                result.waiting = "the device has not taken this answer yet"
                return
        if not back.records and not offer.blank and agreement == desktop.knowledge:
            result.notices.append("the device is in step with this desktop: nothing to answer")
            return
        self.leave(self.answer_drop(desktop, offer, back.records), result)
        # Superseded: earlier answers to the same offer, and loads (this answer is newer).
        for found in earlier + look.of(Load):
            self.mailbox.remove(found.entry)

    def merge_file(
        self,
        desktop: Pipeline,
        found: PipelineEntry,
        save: Callable[[Pipeline], None],
        policy: str,
        dry_run: bool,
        allow_mass_change: bool,
        notices: list[str],
    ) -> DropResult | None:
        """A pipeline file copied into the mailbox by hand: ``salesmgr merge`` with it."""
        started = time.monotonic()
        device = found.pipeline
        where = self.reader.where(found.entry)
        if device.replica_id == desktop.replica_id:
            notices.append(f"{found.entry} is this desktop file itself: skipped")
            return None
        if device.pipeline_id != desktop.pipeline_id:
            notices.append(f"{found.entry} holds another pipeline ({device.name!r}): skipped")
            return None
        result = DropResult(
            "desktop", "sync", peer_replica=device.replica_id, dry_run=dry_run,
            taken=f"the pipeline file {found.entry}", bytes_received=found.size,
        )
        result.records_received = len(delta_since(device, desktop.knowledge, self.registry).records)

        def leave_back(merged: Pipeline) -> None:
            data = auth.sealed_file(merged, self.secret, self.registry)  # a paired replica's
            self.mailbox.write(found.entry, data)
            result.written = f"the merged file back as {found.entry}"
            result.bytes_sent = len(data)

        done = rules.merge_local(
            desktop, device, save_desktop=save, save_device=leave_back, policy=policy,
            dry_run=dry_run, allow_mass_change=allow_mass_change, registry=self.registry,
            where=f"{where}: ",
        )
        result.report = done.merged.report
        result.records_sent = len(done.merged.back.records)
        result.mass_change = done.mass_change
        result.saved = done.saved_desktop
        if not dry_run and not done.saved_device:
            result.notices.append(f"{found.entry} was already in step: left as it is")
        result.seconds = time.monotonic() - started
        return result

    # -- load ---------------------------------------------------------------------------------

    def load(self, desktop: Pipeline) -> DropResult:
        """Leave the whole pipeline for the device.  Refused at once when the device's offer
        shows changes this desktop has not seen; the device checks again when it takes it."""
        self.events.mode = "load"
        started = time.monotonic()
        try:
            look = self.look({DropKind.OFFER, DropKind.REFUSAL}, {DropKind.LOAD, DropKind.ANSWER},
                             files=False)
            notices, told = self.refusals(look)
            found = newest_offer(look.drops)
            if found is not None:
                self.check_load(desktop, found)
            load = Load(
                drops.new_drop_id(), now_ms(), desktop.pipeline_id, desktop.replica_id,
                desktop.name, desktop.owner, desktop.currency, header_extra(desktop),
                dict(desktop.knowledge), list(desktop.records.values()),
            )
            result = DropResult("desktop", "load", notices=notices)
            self.leave(load, result)
            for entry in [*told, *(f.entry for f in look.of(Load))]:
                self.mailbox.remove(entry)
        except SalesmgrError as error:
            self.events("failed", error=str(error))
            raise
        result.refused.extend(look.problems.values())
        self.events("committed", records=result.records_sent)
        result.seconds = time.monotonic() - started
        return result

    def check_load(self, desktop: Pipeline, found: Found) -> None:
        offer = found.drop
        assert isinstance(offer, Offer)
        if offer.blank or not offer.records:
            return
        same = offer.pipeline_id == desktop.pipeline_id
        if same:
            unseen = [r for r in offer.records if not all(desktop.knows(d) for d in r.dots())]
        else:
            unseen = offer.records
        rules.refuse_load(len(unseen), same, offer.name, by="this desktop",
                          where=f" (its offer {found.entry})")


# --- the device half -----------------------------------------------------------------------------


@dataclass
class DeviceEvent:
    """Something the device did at one look into the mailbox."""

    kind: str  # offered, committed, loaded, refused, damaged, stale, resend, deferred
    text: str
    code: int = 0  # non-zero: a failure, with this exit code
    final: bool = False  # ends a round: what ``emulator serve --once`` waits for


def header_of(drop: Answer | Load) -> DesktopHeader:
    """What a desktop's drop says about its pipeline, in the terms of the session rules."""
    return DesktopHeader(
        drop.pipeline_id, drop.desktop_replica, drop.name, drop.owner, drop.currency,
        dict(drop.extra), dict(drop.knowledge),
    )


class DeviceDrops:
    """The device side: at each `step`, take what the desktop left and keep the offer current."""

    def __init__(
        self,
        mailbox: Mailbox,
        secret: str | bytes,
        store: DeviceStore,
        *,
        registry: Registry | None = None,
        settle: float = SETTLE,
        stamp: Callable[[], object] | None = None,
    ) -> None:
        self.mailbox = mailbox
        self.secret = auth.secret_bytes(secret)
        self.store = store
        self.registry = registry or get_registry()
        self.reader = DropReader(mailbox, self.secret, self.registry, settle)
        # ``stamp()`` changes whenever the stored pipeline does (e.g. the file's mtime); with
        # it, a look at an unchanged mailbox and an unchanged store costs one listing.
        self.stamp = stamp
        self.complained: dict[str, str] = {}
        self.last: tuple[object, dict[str, object]] | None = None
        self.wrote: set[str] = set()  # entries this step left in the mailbox

    def step(self) -> list[DeviceEvent]:
        entries = self.mailbox.entries()
        self.wrote = set()
        if self.stamp is not None and self.last == (self.stamp(), entries):
            return []
        look = self.reader.look(
            {DropKind.ANSWER, DropKind.LOAD}, {DropKind.OFFER, DropKind.REFUSAL}, entries=entries
        )
        events = self.complain(look)
        pipeline = self.store.load()
        if pipeline is not None and self.store.renamed:
            # A copied file became a replica of its own: that identity must stick before it is
            # offered to anyone.
            self.store.save(pipeline)
        offers = look.of(Offer)
        current = newest_offer(offers)
        refused = {f.drop.refused for f in look.of(Refusal) if isinstance(f.drop, Refusal)}
        request: Found | None = None
        committed = False
        incoming = [f for f in look.drops if isinstance(f.drop, (Answer, Load))]
        for found in sorted(incoming, key=lambda f: (f.drop.created_ms, f.drop.drop_id)):
            drop = found.drop
            assert isinstance(drop, (Answer, Load))
            if drop.drop_id in refused:
                continue  # refused already; the desktop clears both away
            if was_applied(pipeline, drop.drop_id):
                self.mailbox.remove(found.entry)
                events.append(DeviceEvent("stale", f"{found.entry} was applied before: removed"))
                continue
            if isinstance(drop, Answer) and drop.resend:
                if current is not None and drop.offer_id == current.drop.drop_id:
                    request = found
                else:  # it asks about an offer this device has since replaced
                    self.mailbox.remove(found.entry)
                continue
            try:
                pipeline = self.commit(pipeline, drop)
            except SessionError as refusal:
                events.append(self.refuse(found, refusal))
                continue
            committed = True
            self.mailbox.remove(found.entry)
            verb = "loaded" if isinstance(drop, Load) else "committed"
            events.append(DeviceEvent(
                verb,
                f"{verb} {found.entry}: {plural(len(drop.records), 'record')} from desktop "
                f"{drop.desktop_replica[:8]}, the device holds {live_count(pipeline)}",
                final=True,
            ))
        offered = self.offer(pipeline, offers, current, request, committed, seen=entries)
        if offered is None or offered.kind != "deferred":
            if offered is not None:
                events.append(offered)
            if request is not None:
                self.mailbox.remove(request.entry)
        self.last = None
        if not look.arriving and self.stamp is not None:
            after = self.mailbox.entries()
            # Remembered as seen only if nothing but this step's own drops came meanwhile: a
            # load left while the offer was being written must be taken at the next look.
            came = {name for name, token in after.items() if entries.get(name) != token}
            if came <= self.wrote:
                self.last = (self.stamp(), after)
        return events

    def leave(self, entry: str, data: bytes) -> None:
        self.mailbox.write(entry, data)
        self.wrote.add(entry)

    def complain(self, look: Look) -> list[DeviceEvent]:
        """Each damaged or foreign drop once (it stays in place for inspection)."""
        events = []
        for entry, problem in look.problems.items():
            if self.complained.get(entry) != problem:
                self.complained[entry] = problem
                events.append(DeviceEvent(
                    "damaged", f"{problem}; left in place for inspection, nothing was changed",
                    code=SyncError.exit_code, final=True,
                ))
        return events

    def commit(self, pipeline: Pipeline | None, drop: Answer | Load) -> Pipeline:
        """Apply an answer or a load and save, with the drop's id, in one atomic write."""
        load = isinstance(drop, Load)
        into = DeviceTarget(pipeline, header_of(drop))
        rules.check_desktop(into, load=load, registry=self.registry, where=f"{drop.entry}: ")
        if into.same and pipeline is not None and not load:
            target = pipeline
        else:  # a load, or a blank device that becomes this pipeline
            target = into.fresh()
        if pipeline is not None and target is not pipeline:
            target.extra[APPLIED] = pipeline.extra.get(APPLIED, "")
        known = dict(target.peers.get(drop.desktop_replica, {}))
        apply_delta(target, Delta(drop.pipeline_id, drop.desktop_replica, dict(drop.knowledge),
                                  drop.records))
        # What a desktop knows only grows: a late, older drop must not shrink the agreement.
        for replica, counter in known.items():
            agreed = target.peers[drop.desktop_replica]
            agreed[replica] = max(counter, agreed.get(replica, 0))
        target.extra[PARTNER] = drop.desktop_replica
        remember_applied(target, drop.drop_id)
        self.store.save(target)
        return target

    def refuse(self, found: Found, refusal: SessionError) -> DeviceEvent:
        """Leave a REFUSAL for the desktop; the refused drop stays until the desktop clears it."""
        note = Refusal(drops.new_drop_id(), now_ms(), found.drop.drop_id, int(refusal.wire_code),
                       str(refusal))
        self.leave(note.entry, drops.seal(note, self.secret, self.registry))
        return DeviceEvent(
            "refused", f"refused {found.entry}: {refusal}", code=refusal.exit_code, final=True
        )

    def offer(
        self,
        pipeline: Pipeline | None,
        offers: list[Found],
        current: Found | None,
        request: Found | None,
        committed: bool,
        seen: dict[str, object] | None = None,
    ) -> DeviceEvent | None:
        """Make sure the mailbox holds one offer, and that it describes the device as it is.

        With ``seen`` (the listing this look worked from), no offer is written when a drop for
        the device came after it — a "deferred" event instead: the next look takes that drop
        first, and an offer written now would say the device had seen it."""
        since: dict[str, int] | None = None
        reply_to: str | None = None
        if request is not None:
            assert isinstance(request.drop, Answer)
            since, reply_to = request.drop.since, request.drop.drop_id
        elif current is not None and not committed:
            held = current.drop
            assert isinstance(held, Offer)
            if held.reply_to:  # keep offering what the desktop asked for until it answers
                since, reply_to = held.since, held.reply_to
        fresh = self.make_offer(pipeline, since, reply_to, current)
        if current is not None and same_state(current.drop, fresh):
            for older in offers:
                if older is not current:
                    self.mailbox.remove(older.entry)
            return None
        sealed = drops.seal(fresh, self.secret, self.registry)
        if seen is not None and arrived_since(seen, self.mailbox.entries()):
            return DeviceEvent("deferred", "a drop came meanwhile: offering after taking it")
        self.leave(fresh.entry, sealed)
        for older in offers:
            self.mailbox.remove(older.entry)
        what = "everything it holds" if not fresh.since else "its changes since the last sync"
        return DeviceEvent(
            "offered", f"offered {fresh.entry}: {plural(len(fresh.records), 'record')}, {what}"
        )

    def make_offer(
        self,
        pipeline: Pipeline | None,
        since: dict[str, int] | None,
        reply_to: str | None,
        current: Found | None,
    ) -> Offer:
        if pipeline is None or not pipeline.records:
            held = current.drop if current is not None else None
            replica = (
                pipeline.replica_id if pipeline is not None
                else held.device_replica if isinstance(held, Offer) and held.blank
                else drops.new_drop_id()
            )
            return Offer(
                drops.new_drop_id(), now_ms(), pipeline.pipeline_id if pipeline else None,
                replica, None, pipeline.name if pipeline else "", 0,
                dict(pipeline.knowledge) if pipeline else {}, None, {}, [], blank=True,
                reply_to=reply_to,
            )
        partner = pipeline.extra.get(PARTNER)
        agreement = pipeline.peers.get(partner) if partner else None
        covered = dict(agreement or {}) if since is None else dict(since)
        records = delta_since(pipeline, covered, self.registry).records
        return Offer(
            drops.new_drop_id(), now_ms(), pipeline.pipeline_id, pipeline.replica_id,
            partner if agreement is not None else None, pipeline.name, live_count(pipeline),
            dict(pipeline.knowledge), dict(agreement) if agreement is not None else None,
            covered, records, reply_to=reply_to,
        )


def arrived_since(before: dict[str, object], after: dict[str, object]) -> bool:
    """True when a drop for the device (an answer or a load) appeared or changed between the
    listings ``before`` and ``after``."""
    for name, token in after.items():
        if before.get(name) != token:
            claimed = drops.parse_name(name)
            if claimed is not None and claimed[0] in (DropKind.ANSWER, DropKind.LOAD):
                return True
    return False


def same_state(held: Drop, fresh: Offer) -> bool:
    """True when an offer already in the mailbox describes what ``fresh`` would."""
    if not isinstance(held, Offer):
        return False
    return (
        held.pipeline_id == fresh.pipeline_id
        and (held.device_replica == fresh.device_replica or (held.blank and fresh.blank))
        and held.desktop_replica == fresh.desktop_replica
        and held.name == fresh.name
        and held.knowledge == fresh.knowledge
        and held.agreement == fresh.agreement
        and held.since == fresh.since
        and held.blank == fresh.blank
        and held.reply_to == fresh.reply_to
        and held.live_records == fresh.live_records
    )
