"""The merge engine: brings a desktop and a device copy of one pipeline to the same content.

The engine only sequences the steps; every decision is a hook (see hookspecs.py, section 2), and
the built-in rules are the plugin `salesmgr.plugins.merge_rules`.  The same code serves a file merge
(`merge_files`) and a sync session (`delta_since` on the device, `merge_delta` on the desktop,
`apply_delta` back on the device).  docs/sync-model.md explains the rules and why they converge.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from dataclasses import field as default
from typing import Literal

from salesmgr.errors import MergeError
from salesmgr.gc_paused import cyclic_gc_paused
from salesmgr.merge.brake import mass_change
from salesmgr.merge.duplicates import likely_duplicates
from salesmgr.merge.report import ConflictEntry, Counts, MergeReport
from salesmgr.model.fields import RecordId, RecordType
from salesmgr.model.pipeline import BASE_PREFIX, DELETED, Dot, Pipeline, Record, new_id
from salesmgr.model.record_table import open_values
from salesmgr.plugin.interfaces import MergePolicy
from salesmgr.plugin.manager import Registry, get_registry

Side = Literal["desktop", "device"]
Take = Literal["desktop", "device", "merged", "conflict", "both"]
SIDES: tuple[Side, Side] = ("desktop", "device")


@dataclass
class Delta:
    """What one side sends the other: the records it lacks, and the sender's knowledge."""

    pipeline_id: str
    replica_id: str
    knowledge: dict[str, int]
    records: list[Record]


@dataclass
class FieldMerge:
    """One field of a matched record pair whose two versions differ."""

    record_type: RecordType | None
    kind: str
    record_id: str
    field: str
    desktop_value: str | None
    device_value: str | None
    desktop_dot: Dot
    device_dot: Dot
    desktop_knows_device: bool  # the desktop has seen the device's write of this field
    device_knows_desktop: bool
    base: str | None = None  # for free-text fields: the common ancestor text, when known

    @property
    def concurrent(self) -> bool:
        return not self.desktop_knows_device and not self.device_knows_desktop


@dataclass
class FieldOutcome:
    """How a field (or, for record-level policies, a record) is decided."""

    take: Take
    value: str | None = None  # for take="merged"
    open: bool = False  # leave the conflict open for the user (manual policy)
    note: str = ""


@dataclass
class Conflict:
    """Both sides changed the same field (or, with field "*", the same record) differently."""

    record_id: str
    kind: str
    field: str
    desktop_value: str | None
    device_value: str | None
    desktop_dot: Dot
    device_dot: Dot
    label: str = ""
    desktop_record: Record | None = None
    device_record: Record | None = None
    fields: list[FieldMerge] = default(default_factory=list)

    @property
    def is_deletion(self) -> bool:
        return self.field == DELETED

    def side_newest(self) -> Side:
        """The side whose write is most recent by wall clock; ties broken by version."""
        if self.field == "*" and self.desktop_record and self.device_record:
            d, v = self.desktop_record.last_change, self.device_record.last_change
        else:
            d, v = self.desktop_dot, self.device_dot
        newer = (d.at, d.counter, d.replica) >= (v.at, v.counter, v.replica)
        return "desktop" if newer else "device"


@dataclass
class MergeSession:
    """Everything the merge hooks may look at."""

    desktop: Pipeline
    delta: Delta  # the device's changes
    policy: MergePolicy
    registry: Registry
    report: MergeReport = default(default_factory=lambda: MergeReport("field-merge"))
    # Replicas restored from an older copy: their versions may have been minted twice, so
    # "already seen" cannot be trusted for them; their writes are compared as concurrent.
    untrusted: set[str] = default(default_factory=set)
    # The record type the conflict log is kept in (bookkeeping, not the user's records).
    log_kind: str = ""
    # Work on a record done through records that point at it (a call logged on a deal) that the
    # other side has not seen: side -> record id -> versions.  The desktop's is gathered only
    # when a deletion from the device needs it (`work_on`).
    work: dict[Side, dict[str, list[Dot]]] = default(default_factory=dict)

    def __post_init__(self) -> None:
        self.log_kind = self.log_kind or self.registry.conflict_log.name

    @property
    def device_knowledge(self) -> dict[str, int]:
        return self.delta.knowledge

    def device_knows(self, dot: Dot) -> bool:
        return self.delta.knowledge.get(dot.replica, 0) >= dot.counter

    def record_type(self, kind: str) -> RecordType | None:
        return self.registry.record_types.get(kind)


@dataclass
class MergeResult:
    report: MergeReport
    back: Delta  # what the device lacks after the merge

    def mass_change(self, desktop_before: int, device_before: int) -> str | None:
        """Why this merge must not be written without --allow-mass-change, or None (the rule
        is `salesmgr.merge.brake.mass_change`; ``*_before``: each side's live records)."""
        return mass_change(
            self.report.losses,
            {"desktop": desktop_before, "device": device_before},
            self.report.emptied,
        )


# --- the steps ------------------------------------------------------------------------------


def knows(knowledge: Mapping[str, int], dot: Dot) -> bool:
    return knowledge.get(dot.replica, 0) >= dot.counter


def delta_since(
    replica: Pipeline, since: Mapping[str, int], registry: Registry | None = None
) -> Delta:
    """Everything ``replica`` holds that a peer with knowledge ``since`` lacks."""
    registry = registry or get_registry()
    records = registry.hook.salesmgr_collect_changes(replica=replica, since=since)
    if records is None:
        raise MergeError("no plugin collected the changes (salesmgr_collect_changes)")
    open_values(records)
    return Delta(
        replica.pipeline_id,
        replica.replica_id,
        dict(replica.knowledge),
        [r.copy() for r in records],
    )


def restored_replicas(desktop: Pipeline, device_knowledge: Mapping[str, int],
                      device_replica: str) -> set[str]:
    """Replicas whose own file knows less of them than the other side does: restored from a
    backup (or an old copy), so they may have minted again versions the other side has seen."""
    found = set()
    if desktop.knowledge.get(device_replica, 0) > device_knowledge.get(device_replica, 0):
        found.add(device_replica)
    # Knowledge never goes back: a device that knows less than it did when we last met is an
    # older copy of itself.
    recorded = desktop.peers.get(device_replica, {})
    if any(device_knowledge.get(r, 0) < counter for r, counter in recorded.items()):
        found.add(device_replica)
    if device_knowledge.get(desktop.replica_id, 0) > desktop.counter:
        found.add(desktop.replica_id)
    return found


@cyclic_gc_paused()
def merge_delta(
    desktop: Pipeline,
    delta: Delta,
    *,
    policy: str = "field-merge",
    registry: Registry | None = None,
    untrusted: Iterable[str] = (),
) -> MergeResult:
    """Merge the device's ``delta`` into ``desktop`` (mutated) and say what the device lacks.

    ``untrusted`` names replicas known to have been restored from an older copy (the session
    passes the desktop's old id when it had to fork); the delta must then hold everything the
    device has, not only what looks new."""
    registry = registry or get_registry()
    if delta.pipeline_id != desktop.pipeline_id:
        raise MergeError(
            f"the two files are different pipelines ({desktop.pipeline_id[:8]} and "
            f"{delta.pipeline_id[:8]}) and share no history; use --combine to join them"
        )
    chosen = registry.policy(policy)
    session = MergeSession(desktop, delta, chosen, registry, report=MergeReport(policy))
    session.untrusted = set(untrusted) | restored_replicas(
        desktop, delta.knowledge, delta.replica_id
    )
    if session.untrusted:
        session.report.warnings.append(
            "a replica was restored from an older copy: its writes are weighed as concurrent "
            "edits, so nothing made since the restore is lost"
        )
    hook = registry.hook
    device_knowledge = dict(delta.knowledge)
    incoming = {r.id: r for r in delta.records}
    session.work["device"] = work_through(session, session.delta.records, session.desktop.knows)
    pairs = hook.salesmgr_match_records(session=session)
    if pairs is None:
        raise MergeError("no plugin matched the records (salesmgr_match_records)")
    paired_device = set()
    paired_desktop = set()
    report = session.report
    open_values([desktop.records[desktop_id] for desktop_id, _ in pairs])
    for desktop_id, device_id in pairs:
        paired_device.add(device_id)
        paired_desktop.add(desktop_id)
        merge_pair(session, desktop.records[desktop_id], incoming[device_id])
    for record_id in sorted(session.work["device"].keys() - paired_desktop):
        record = desktop.records.get(record_id)
        if record is not None and record.deleted:
            # Deleted here, untouched on the device, where work was done on it meanwhile.
            weigh_deletion(session, record, record, desktop_deleted=True)
            if not record.deleted:
                report.to_desktop.added += 1
    for record in delta.records:
        if record.id not in paired_device:
            take_new(session, record)
    # The desktop now knows everything the device knew.
    for replica, counter in device_knowledge.items():
        if desktop.knowledge.get(replica, 0) < counter:
            desktop.knowledge[replica] = counter
    # Only what the device is known to hold; merge_files and the session's commit add the rest.
    desktop.peers[delta.replica_id] = dict(device_knowledge)
    # A restored replica counts again from an older counter: the device's vector claims its
    # versions without the device holding them, so everything they wrote goes back.
    held = {r: c for r, c in device_knowledge.items() if r not in session.untrusted}
    back = delta_since(desktop, held, registry)
    count_device_side(report, back, held, session.log_kind, registry)
    report.emptied = emptied(report, desktop, registry)
    hook.salesmgr_merge_report(session=session, report=report)
    return MergeResult(report, back)


def take_new(session: MergeSession, record: Record) -> None:
    """A record the desktop has never had (or has forgotten)."""
    desktop = session.desktop
    if record.id in desktop.records:
        raise MergeError(f"record {record.id} was left unmatched although both sides have it")
    mine = desktop.records[record.id] = record.copy()
    if any(dot.replica in session.untrusted for dot in mine.dots()):
        fresh = desktop.tick()
        mine.dot = fresh
        mine.field_dots = {DELETED: fresh} if mine.deleted else {}
    if not record.deleted and record.kind != session.log_kind:
        session.report.to_desktop.added += 1
        validate(session, desktop.records[record.id])


def merge_pair(session: MergeSession, mine: Record, theirs: Record) -> None:
    """Merge the device's version of a record into the desktop's, field by field."""
    desktop = session.desktop
    hook = session.registry.hook
    rtype = session.record_type(mine.kind)
    before = mine.copy()
    names = set(mine.values) | set(theirs.values) | set(mine.field_dots) | set(theirs.field_dots)
    names = {n for n in names if not n.startswith(BASE_PREFIX)} | {DELETED}
    outcomes: dict[str, tuple[FieldMerge, FieldOutcome]] = {}
    conflicts: list[FieldMerge] = []
    for name in sorted(names):
        d_dot, v_dot = mine.dot_of(name), theirs.dot_of(name)
        if d_dot == v_dot and (
            d_dot.replica not in session.untrusted
            or field_value(mine, name) == field_value(theirs, name)
        ):
            continue
        item = FieldMerge(
            rtype,
            mine.kind,
            mine.id,
            name,
            field_value(mine, name),
            field_value(theirs, name),
            d_dot,
            v_dot,
            desktop.knows(v_dot) and v_dot.replica not in session.untrusted,
            session.device_knows(d_dot) and d_dot.replica not in session.untrusted,
            base=common_base(session, mine, theirs, name),
        )
        outcome = hook.salesmgr_merge_field(session=session, item=item)
        if outcome is None:
            raise MergeError(f"no merge rule decided field {name!r} of {mine.id}")
        if outcome.take == "conflict":
            conflicts.append(item)
        outcomes[name] = (item, outcome)

    label = record_label(rtype, mine if mine.values else theirs)
    if conflicts and session.policy.record_level and mine.kind != session.log_kind:
        decide_record(session, mine, theirs, outcomes, conflicts, label)
    else:
        for item in conflicts:
            outcome = decide(session, item, label, mine, theirs)
            outcomes[item.field] = (item, outcome)

    for name, (item, outcome) in outcomes.items():
        if name == DELETED:
            continue
        apply_outcome(session, mine, theirs, item, outcome)
    settle_deletion(session, mine, theirs, outcomes.get(DELETED), label, before)

    if mine.kind != session.log_kind and not mine.same_content(before):
        if mine.deleted and not before.deleted:
            session.report.to_desktop.deleted += 1
        elif not mine.deleted and before.deleted:
            session.report.to_desktop.added += 1
        else:
            session.report.to_desktop.changed += 1
        if mine.deleted and not before.deleted:
            session.report.losses["desktop"].deleted[mine.id] = label
        validate(session, mine)


def field_value(record: Record, name: str) -> str | None:
    if name == DELETED:
        return "deleted" if record.deleted else None
    return record.values.get(name)


def common_base(session: MergeSession, mine: Record, theirs: Record, name: str) -> str | None:
    """The text both sides last agreed on: of the ancestors the two sides remember (or hold),
    the most recent one that both have seen."""
    hidden = BASE_PREFIX + name
    candidates = []
    for record in (mine, theirs):
        # A side that edited the text remembers what it edited from; one that did not holds
        # the common version itself.
        field = hidden if hidden in record.values else name
        dot = record.dot_of(field)
        if session.desktop.knows(dot) and session.device_knows(dot):
            candidates.append((dot, record.values.get(field, "")))
    if not candidates:
        return None
    best = candidates[0]
    for candidate in candidates[1:]:
        if later(candidate[0], best[0]):
            best = candidate
    return best[1]


def later(a: Dot, b: Dot) -> bool:
    """Whether version ``a`` of a text is more recent than ``b``, both being ancestors of the
    texts being merged.  One replica's writes are in counter order; between two replicas only
    the writers' clocks can tell, and a wrong guess costs only an older (still common) base."""
    if a.replica == b.replica:
        return a.counter > b.counter
    return (a.at, a.counter, a.replica) > (b.at, b.counter, b.replica)


def record_label(rtype: RecordType | None, record: Record) -> str:
    if rtype and rtype.title_field:
        return record.values.get(rtype.title_field, "")[:60]
    return ""


def decide(
    session: MergeSession, item: FieldMerge, label: str, mine: Record, theirs: Record
) -> FieldOutcome:
    conflict = Conflict(
        item.record_id,
        item.kind,
        item.field,
        item.desktop_value,
        item.device_value,
        item.desktop_dot,
        item.device_dot,
        label,
        mine,
        theirs,
    )
    outcome = session.registry.hook.salesmgr_resolve_conflict(
        session=session, conflict=conflict, policy=session.policy
    )
    if outcome is None:
        raise MergeError(f"policy {session.policy.name!r} did not decide {item.field!r}")
    if item.kind != session.log_kind:
        log_conflict(session, item, outcome, label)
    return outcome


def decide_record(
    session: MergeSession,
    mine: Record,
    theirs: Record,
    outcomes: dict[str, tuple[FieldMerge, FieldOutcome]],
    conflicts: list[FieldMerge],
    label: str,
) -> None:
    """A record-level policy decides the whole record at once."""
    first = conflicts[0]
    conflict = Conflict(
        mine.id, mine.kind, "*", None, None, first.desktop_dot, first.device_dot, label,
        mine, theirs, fields=conflicts,
    )
    outcome = session.registry.hook.salesmgr_resolve_conflict(
        session=session, conflict=conflict, policy=session.policy
    )
    if outcome is None:
        raise MergeError(f"policy {session.policy.name!r} did not decide record {mine.id}")
    if outcome.take == "both":
        # Palm HotSync's way: the desktop keeps its record, the device's becomes a new one.
        duplicate = theirs.copy()
        duplicate.id = new_id()
        duplicate.dot = session.desktop.tick()
        duplicate.field_dots = {}
        duplicate.deleted = False
        session.desktop.records[duplicate.id] = duplicate
        session.report.to_desktop.added += 1
        for item in conflicts:
            outcomes[item.field] = (item, FieldOutcome("desktop"))
            log_conflict(session, item, FieldOutcome("both", duplicate.id), label)
        return
    winner: Side = "desktop" if outcome.take == "desktop" else "device"
    # The loser's changes to this record since the two last agreed are all overruled.
    for name, (item, field_outcome) in list(outcomes.items()):
        if field_outcome.take == "conflict":
            decided = FieldOutcome(winner)
        elif field_outcome.take != winner and (
            not item.desktop_knows_device if winner == "desktop" else not item.device_knows_desktop
        ):
            # The winner's value is older than the write it overrules: putting it back is a new
            # write, or a replica that has seen the overruled write would not take it.
            value = item.desktop_value if winner == "desktop" else item.device_value
            decided = FieldOutcome("merged", value)
        else:
            continue
        outcomes[name] = (item, decided)
        log_conflict(session, item, FieldOutcome(winner), label)


def apply_outcome(
    session: MergeSession, mine: Record, theirs: Record, item: FieldMerge, outcome: FieldOutcome
) -> None:
    name = item.field
    hidden = BASE_PREFIX + name
    outcome = as_new_version(session, item, outcome)
    if outcome.take == "desktop":
        return
    if outcome.take == "device":
        set_field(mine, name, theirs.values.get(name), theirs.dot_of(name))
        if hidden in theirs.values:
            set_field(mine, hidden, theirs.values[hidden], theirs.dot_of(hidden))
        elif hidden in mine.values:
            set_field(mine, hidden, None, theirs.dot_of(name))
        return
    if outcome.take in ("merged", "both"):
        if outcome.take == "both":
            return
        dot = session.desktop.tick()
        set_field(mine, name, outcome.value, dot)
        if hidden in mine.values:
            set_field(mine, hidden, None, dot)
        return
    raise MergeError(f"unknown outcome {outcome.take!r} for field {name!r}")


def as_new_version(session: MergeSession, item: FieldMerge, outcome: FieldOutcome) -> FieldOutcome:
    """Taking one side's version as it is, or as a new version of the desktop's minting.

    A choice between two concurrent, different versions is new work: another pair of replicas
    may choose the other way (a policy that favours the desktop, a line merge that puts the
    desktop's lines first), and a replica holding one version while knowing the other would
    never again hear of the other choice.  The chosen value gets a version of its own, causally
    after both, so that two different choices meet later as concurrent versions and are
    decided once more.  Likewise a version that may have been minted twice (a restored
    replica's) is replaced by a fresh one."""
    if outcome.take not in ("desktop", "device"):
        return outcome
    value = item.desktop_value if outcome.take == "desktop" else item.device_value
    kept = item.desktop_dot if outcome.take == "desktop" else item.device_dot
    chosen = item.concurrent and item.desktop_value != item.device_value
    if chosen or kept.replica in session.untrusted:
        return FieldOutcome("merged", value, outcome.open, outcome.note)
    return outcome


def set_field(record: Record, name: str, value: str | None, dot: Dot) -> None:
    if value is None:
        record.values.pop(name, None)
    else:
        record.values[name] = value
    if dot == record.dot:
        record.field_dots.pop(name, None)
    else:
        record.field_dots[name] = dot


def settle_deletion(
    session: MergeSession,
    mine: Record,
    theirs: Record,
    decided: tuple[FieldMerge, FieldOutcome] | None,
    label: str,
    before: Record,
) -> None:
    """Deletion is a field like any other, except that a concurrent edit can bring a record back.

    ``before`` is the desktop's record as it was before this merge took any of the device's
    fields: the work that weighs against the device's deletion is what the desktop held."""
    desktop_deleted = mine.deleted
    if decided is not None:
        item, outcome = decided
        outcome = as_new_version(session, item, outcome)
        if outcome.take == "device":
            mine.deleted = theirs.deleted
            set_field(mine, DELETED, None, theirs.dot_of(DELETED))
        elif outcome.take == "merged":
            mine.deleted = outcome.value == "deleted"
            set_field(mine, DELETED, None, session.desktop.tick())
        if item.concurrent:
            return  # a policy has already weighed the deletion against the other side
    if not mine.deleted or desktop_deleted == theirs.deleted:
        return
    weigh_deletion(session, mine, theirs, desktop_deleted, label, before)


def weigh_deletion(
    session: MergeSession, mine: Record, theirs: Record, desktop_deleted: bool, label: str = "",
    before: Record | None = None,
) -> None:
    """Deleted on one side only: was the record worked on on the other since the two last
    agreed (edited, or an activity logged on it)?  Then the policy weighs the deletion against
    that work, and the decision is logged.

    The desktop's work is read from ``before`` (its record before this merge): a field the
    merge has just settled on the device's version (the same text, written on both sides)
    must not hide that the desktop's user wrote it too, unaware of the deletion.  Either side's
    merge of the same two records then weighs the same work."""
    live_side: Side = "device" if desktop_deleted else "desktop"
    if desktop_deleted:
        edits = [d for d in edit_dots(theirs) if not session.desktop.knows(d)]
        deletion = mine.dot_of(DELETED)
        if session.device_knows(deletion):
            return  # the device saw the deletion: nothing it did since was done in ignorance
    else:
        worked = before if before is not None else mine
        edits = [d for d in edit_dots(worked) if not session.device_knows(d)]
        deletion = theirs.dot_of(DELETED)
    edits += work_on(session, live_side).get(mine.id, [])
    if not edits:
        return
    newest_edit = max(edits, key=lambda d: (d.at, d.counter, d.replica))
    item = FieldMerge(
        session.record_type(mine.kind),
        mine.kind,
        mine.id,
        DELETED,
        "deleted" if desktop_deleted else "edited",
        "edited" if desktop_deleted else "deleted",
        deletion if desktop_deleted else newest_edit,
        newest_edit if desktop_deleted else deletion,
        False,
        False,
    )
    outcome = decide(session, item, label or record_label(item.record_type, mine), mine, theirs)
    if outcome.take == live_side:
        mine.deleted = False
        set_field(mine, DELETED, None, session.desktop.tick())


def work_on(session: MergeSession, side: Side) -> dict[str, list[Dot]]:
    """The work done on ``side`` through records pointing at others, unseen by the other side.

    The device's is in its delta; the desktop's is gathered the first time a deletion from the
    device asks for it, from the desktop's records of the types that point at others."""
    if side not in session.work:
        pointing = [
            kind for kind, rtype in session.registry.record_types.items()
            if kind != session.log_kind and any(isinstance(f.kind, RecordId) for f in rtype.fields)
        ]
        records = [r for kind in pointing for r in session.desktop.live(kind)]
        session.work[side] = work_through(session, records, session.device_knows)
    return session.work[side]


def work_through(
    session: MergeSession, records: Iterable[Record], other_knows: Callable[[Dot], bool]
) -> dict[str, list[Dot]]:
    """Writes to records that point at another record (an activity names its opportunity),
    which the other side has not seen: work done on the record pointed at, by its id."""
    work: dict[str, list[Dot]] = {}
    for record in records:
        if record.kind == session.log_kind or record.deleted:
            continue
        unseen = [d for d in record.dots() if not other_knows(d)]
        if not unseen:
            continue
        for target in pointed_at(session.record_type(record.kind), record):
            work.setdefault(target, []).extend(unseen)
    return work


def pointed_at(rtype: RecordType | None, record: Record) -> list[str]:
    """The ids of the records ``record`` names in its record-id fields."""
    if rtype is None:
        return []
    return [
        record.values[f.name]
        for f in rtype.fields
        if isinstance(f.kind, RecordId) and f.name in record.values
    ]


def edit_dots(record: Record) -> list[Dot]:
    """The versions of a record's writes other than its deletion."""
    return [record.dot] + [d for n, d in record.field_dots.items() if n != DELETED]


def log_conflict(
    session: MergeSession, item: FieldMerge, outcome: FieldOutcome, label: str
) -> None:
    if item.desktop_value == item.device_value:
        return
    if outcome.take == "desktop":
        winner, value = "desktop", item.desktop_value
    elif outcome.take == "device":
        winner, value = "device", item.device_value
    elif outcome.take == "both":
        winner, value = "both", outcome.value
    else:
        winner, value = "merged", outcome.value
    status = "open" if outcome.open else "decided"
    if item.field != DELETED and item.kind != session.log_kind:
        # The losing side's own value is overwritten: what the mass-change brake counts.
        losers = {"desktop": ("device",), "device": ("desktop",), "merged": SIDES}
        for side in losers.get(winner, ()):
            session.report.losses[side].replaced[item.record_id] = label
    values = {
        "record_id": item.record_id,
        "record_kind": item.kind,
        "label": label,
        "field": item.field,
        "desktop_value": item.desktop_value,
        "device_value": item.device_value,
        "winner": winner,
        "value": value,
        "policy": session.policy.name,
        "status": status,
    }
    rtype = session.registry.record_type(session.log_kind)
    record, _ = session.desktop.add(
        rtype, {k: v for k, v in values.items() if v is not None}, strict_names=False
    )
    session.report.conflicts.append(
        ConflictEntry(
            record.id, item.record_id, item.kind, label, item.field, item.desktop_value,
            item.device_value, winner, value, session.policy.name, status,
        )
    )


def validate(session: MergeSession, record: Record) -> None:
    results = session.registry.hook.salesmgr_validate_merged(session=session, record=record)
    for problems in results:
        session.report.warnings.extend(problems or ())


def count_device_side(
    report: MergeReport,
    back: Delta,
    device_knowledge: Mapping[str, int],
    log_kind: str,
    registry: Registry | None = None,
) -> None:
    """What the device will see change, judged from what it knew when it sent its changes
    (entries of the conflict log, records of type ``log_kind``, are not counted)."""
    types = (registry or get_registry()).record_types
    for record in back.records:
        if record.kind == log_kind:
            continue
        existed = knows(device_knowledge, record.dot)
        if not existed:
            if not record.deleted:
                report.to_device.added += 1
            continue
        if record.deleted and not knows(device_knowledge, record.dot_of(DELETED)):
            report.to_device.deleted += 1
            report.losses["device"].deleted[record.id] = record_label(
                types.get(record.kind), record
            )
        else:
            report.to_device.changed += 1


@cyclic_gc_paused()
def apply_delta(device: Pipeline, delta: Delta) -> None:
    """Take the desktop's merged records: the device side of a sync.

    A write of the device's own that the delta's sender had not seen (made after the device sent
    its changes) is kept, so a late or repeated delta never undoes newer work."""
    if delta.pipeline_id != device.pipeline_id:
        raise MergeError("the changes are for a different pipeline")
    for incoming in delta.records:
        current = device.records.get(incoming.id)
        if current is None:
            device.records[incoming.id] = incoming.copy()
            continue
        merged = incoming.copy()
        for name, dot in dots_of_all(current):
            if knows(delta.knowledge, dot) or merged.dot_of(name) == dot:
                continue
            if name == DELETED:
                merged.deleted = current.deleted
                set_field(merged, DELETED, None, dot)
            else:
                set_field(merged, name, current.values.get(name), dot)
        device.records[incoming.id] = merged
    for replica, counter in delta.knowledge.items():
        if device.knowledge.get(replica, 0) < counter:
            device.knowledge[replica] = counter
    device.peers[delta.replica_id] = dict(delta.knowledge)


def dots_of_all(record: Record) -> Iterable[tuple[str, Dot]]:
    names = set(record.values) | set(record.field_dots)
    for name in names:
        yield name, record.dot_of(name)
    yield DELETED, record.dot_of(DELETED)


@cyclic_gc_paused()
def merge_files(
    desktop: Pipeline,
    device: Pipeline,
    *,
    policy: str = "field-merge",
    combine: bool = False,
    registry: Registry | None = None,
) -> MergeResult:
    """Merge two whole pipelines; both are mutated to the same content."""
    registry = registry or get_registry()
    duplicates: list[tuple[str, str, str]] = []
    if desktop.pipeline_id != device.pipeline_id:
        if not combine:
            raise MergeError(
                "the two files are different pipelines and share no history; "
                "use --combine to join them (likely duplicates are flagged, not merged)"
            )
        duplicates = likely_duplicates(desktop, device, registry.record_types.values())
        clash = set(desktop.records) & set(device.records)
        if clash:
            raise MergeError(f"cannot combine: {len(clash)} record ids appear in both pipelines")
        device.pipeline_id = desktop.pipeline_id
    restored = restored_replicas(desktop, device.knowledge, device.replica_id)
    since = {} if restored else desktop.knowledge
    result = merge_delta(
        desktop, delta_since(device, since, registry), policy=policy, registry=registry,
    )
    found = (device.records.get(r.id) for r in result.back.records)
    held = [record for record in found if record is not None]
    open_values(held)
    before = {record.id: record.copy() for record in held}
    apply_delta(device, result.back)
    desktop.peers[device.replica_id] = dict(device.knowledge)
    recount_device_side(result.report, before, device, result.back, registry)
    result.report.emptied = emptied(result.report, desktop, registry)
    result.report.duplicates = duplicates
    return result


def recount_device_side(
    report: MergeReport,
    before: dict[str, Record],
    device: Pipeline,
    back: Delta,
    registry: Registry,
) -> None:
    """With the device's whole file at hand, count exactly what changed on it."""
    log_kind = registry.conflict_log.name
    counts = Counts()
    deleted = report.losses["device"].deleted
    deleted.clear()
    for incoming in back.records:
        if incoming.kind == log_kind:
            continue
        old = before.get(incoming.id)
        new = device.records[incoming.id]
        if old is None or old.deleted:
            if not new.deleted:
                counts.added += 1
            continue
        if new.same_content(old):
            continue
        if new.deleted:
            counts.deleted += 1
            deleted[incoming.id] = record_label(registry.record_types.get(new.kind), old)
        else:
            counts.changed += 1
    report.to_device = counts


def emptied(report: MergeReport, merged: Pipeline, registry: Registry) -> bool:
    """Whether the merge deletes records and leaves none standing on its own (asked only when
    something was deleted: a large pipeline's records are not made to answer it)."""
    deletes = any(losses.deleted for losses in report.losses.values())
    return deletes and not any_standing(merged, registry)


def any_standing(pipeline: Pipeline, registry: Registry) -> bool:
    """Whether a live record stands on its own (not a call logged on a deal, not a conflict
    log entry: their types name another record in a record-id field).  Stops at the first, so
    that a large pipeline's records are not all made to answer."""
    standing: dict[str, bool] = {}
    for record in pipeline.live():
        alone = standing.get(record.kind)
        if alone is None:
            rtype = registry.record_types.get(record.kind)
            alone = standing[record.kind] = rtype is None or not any(
                isinstance(f.kind, RecordId) for f in rtype.fields
            )
        if alone:
            return True
    return False
