"""The built-in merge rules, as a plugin on the merge hooks (see hookspecs.py, section 2).

- changes: a record is a change when it holds a write the peer has not seen;
- matching: records with the same id are the same record;
- fields: a write the other side has already seen is superseded (the causal rule); concurrent
  edits of a free-text field are merged line by line (merge3); anything else concurrent and
  different is a conflict for the policy;
- the conflict log is a record type of its own, so it travels with the pipeline.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache

from salesmgr.merge.engine import Conflict, FieldMerge, FieldOutcome, MergeSession
from salesmgr.model.fields import Choice, Field, FieldKind, RecordId, RecordType, Text
from salesmgr.model.pipeline import Pipeline, Record
from salesmgr.plugin.hookspecs import hookimpl
from salesmgr.plugin.interfaces import MergePolicy

CONFLICT_STATUS = ("open", "decided", "resolved")
CONFLICT_WINNERS = ("desktop", "device", "merged", "both")


def conflict_type() -> RecordType:
    return RecordType(
        "conflict",
        [
            Field("record_id", RecordId(), required=True),
            Field("record_kind", Text(100), required=True),
            Field("label", Text(200)),
            Field("field", Text(100), required=True),
            Field("desktop_value", Text()),
            Field("device_value", Text()),
            Field("winner", Choice(CONFLICT_WINNERS)),
            Field("value", Text(), help="the value the record was given"),
            Field("policy", Text(100)),
            Field("status", Choice(CONFLICT_STATUS), required=True),
            Field("resolution", Text(), help="what the user chose with `salesmgr resolve`"),
        ],
        help="a merge conflict: both values, which won, and whether the user settled it",
        title_field="label",
        conflict_log=True,
    )


@hookimpl
def salesmgr_register_record_types(register: Callable[[RecordType], None]) -> None:
    register(conflict_type())


@hookimpl(trylast=True)
def salesmgr_collect_changes(replica: Pipeline, since: Mapping[str, int]) -> list[Record]:
    return replica.changed_since(since)


@hookimpl(trylast=True)
def salesmgr_match_records(session: MergeSession) -> list[tuple[str, str]]:
    records = session.desktop.records
    return [(r.id, r.id) for r in session.delta.records if r.id in records]


def newest(item: FieldMerge) -> str:
    d, v = item.desktop_dot, item.device_dot
    return "desktop" if (d.at, d.counter, d.replica) >= (v.at, v.counter, v.replica) else "device"


@hookimpl(trylast=True)
def salesmgr_merge_field(session: MergeSession, item: FieldMerge) -> FieldOutcome:
    """The causal rule: only a write the other side has not seen can change its value."""
    if item.desktop_knows_device:
        return FieldOutcome("desktop")
    if item.device_knows_desktop:
        return FieldOutcome("device")
    if item.desktop_value == item.device_value or (
        item.record_type is not None and item.record_type.conflict_log
    ):
        # Same value on both sides (or two edits of a log entry): not a conflict, keep the newer.
        return FieldOutcome(newest(item))  # type: ignore[arg-type]
    spec = item.record_type.by_name.get(item.field) if item.record_type else None
    if spec is not None and spec.automatic:
        # Stamped by salesmgr, not typed by anyone (the same record made on both sides): no
        # conflict; the earlier stamp is kept.
        return FieldOutcome("device" if newest(item) == "desktop" else "desktop")
    return FieldOutcome("conflict")


@hookimpl(specname="salesmgr_merge_field")
def merge_free_text(session: MergeSession, item: FieldMerge) -> FieldOutcome | None:
    """Concurrent edits of notes: three-way line merge; text added on both sides survives."""
    rtype = item.record_type
    if rtype is None or item.field not in rtype.text_merge_fields or not item.concurrent:
        return None
    ours, theirs = item.desktop_value or "", item.device_value or ""
    if ours == theirs:
        return None
    merged = merge_text(item.base, ours, theirs)
    if merged is None:
        return None  # overlapping edits: a true conflict, for the policy
    if merged == ours:
        return FieldOutcome("desktop")
    if merged == theirs:
        return FieldOutcome("device")
    return FieldOutcome("merged", merged or None, note="line merge")


def merge_text(base: str | None, ours: str, theirs: str) -> str | None:
    """Three-way merge of lines; None when both sides changed the same lines differently.

    Lines inserted at the same place on both sides are not a conflict: both are kept, in an
    order fixed by their text, not by which side is the desktop, so that every pair of
    replicas that merges the same two texts makes the same one."""
    if base is None:
        if theirs.startswith(ours):
            return theirs
        if ours.startswith(theirs):
            return ours
        base = ""
    # Lines are what lies between newlines, so a text's last line and a trailing newline
    # are seen exactly as written (an empty text has no line at all).
    base_lines, our_lines, their_lines = (t.split("\n") if t else [] for t in (base, ours, theirs))
    # Lines replaced in place on each side (no line added or removed): line by line, so that
    # changes to neighbouring lines, or among repeated lines, are never taken for a clash.
    result = merge_line_by_line(base_lines, our_lines, their_lines)
    if result is not None:
        return "\n".join(result)
    from merge3 import Merge3  # imported by a merge that meets edited text, not by every command

    result = []
    for group in Merge3(base_lines, our_lines, their_lines).merge_groups():
        if group[0] != "conflict":
            result.extend(group[1])
            continue
        _, old, mine, other = group
        if not old:  # inserted at the same place on both sides: both kept
            first, second = sorted((list(mine), list(other)))
            result.extend(first)
            result.extend(line for line in second if line not in first)
            continue
        by_line = merge_line_by_line(old, mine, other)
        if by_line is None:
            return None
        result.extend(by_line)
    return "\n".join(result)


def merge_line_by_line(
    base: Sequence[str], ours: Sequence[str], theirs: Sequence[str]
) -> list[str] | None:
    """A region both sides changed, as many lines on each side as in the ancestor: each line
    was replaced, so each is taken from the side that changed it.  None when some line was
    changed differently on both sides, or the region is not line for line."""
    if not len(base) == len(ours) == len(theirs):
        return None
    merged = []
    for old, mine, other in zip(base, ours, theirs, strict=True):
        if mine == other or other == old:
            merged.append(mine)
        elif mine == old:
            merged.append(other)
        else:
            return None
    return merged


@hookimpl(trylast=True)
def salesmgr_resolve_conflict(
    session: MergeSession, conflict: Conflict, policy: MergePolicy
) -> FieldOutcome:
    return policy.resolve(conflict)


@hookimpl
def salesmgr_validate_merged(session: MergeSession, record: Record) -> list[str]:
    """A merged record must still satisfy its type (both halves were valid, the mix may not be)."""
    rtype = session.record_type(record.kind)
    if rtype is None or record.deleted:
        return []
    problems = []
    for name, value in record.values.items():
        spec = rtype.by_name.get(name)
        if spec is None:
            continue
        problem = canonical_problem(spec.kind, value)
        if problem is not None:
            problems.append(f"{record.id[:8]} {name}: {problem}")
    return problems


def canonical_problem(kind: FieldKind, value: str) -> str | None:
    """What keeps ``value`` from being the canonical text of ``kind``, or None.

    Short values are remembered: a merge checks every field of every record it changed, and
    stages, dates, probabilities, amounts and currencies repeat (parsing them was a tenth of a
    1%-changed merge of 100,000 records); normalizing depends on the kind and the text alone.
    Long ones (notes) are cheap to check and would only fill the memory."""
    if len(value) <= REMEMBERED_LENGTH and type(kind).__hash__ is not None:
        return remembered_problem(kind, value)
    return normalizing_problem(kind, value)


REMEMBERED_LENGTH = 64


def normalizing_problem(kind: FieldKind, value: str) -> str | None:
    try:
        if kind.normalize(value) != value:
            return f"{value!r} is not in canonical form"
    except ValueError as problem:
        return str(problem)
    return None


remembered_problem = lru_cache(maxsize=16384)(normalizing_problem)
