"""Settling or reversing one logged conflict: what ``salesmgr resolve`` and the web's conflict
page both do, so the choice is applied, recorded and later merged the same way from either."""

from __future__ import annotations

from dataclasses import dataclass, field

from salesmgr.errors import UnknownRecordError, ValidationError
from salesmgr.model.pipeline import DELETED, Pipeline, Record
from salesmgr.plugin.manager import Registry, get_registry

SIDES = ("desktop", "device")


@dataclass
class Resolution:
    """A conflict settled: the conflict record, the record it is about, and any warnings."""

    conflict: Record
    target: Record
    field_name: str
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        label = self.conflict.values.get("label") or self.target.id[:8]
        return f"resolved {self.conflict.id[:8]}: {label} {self.field_name}"


def resolve_conflict(
    pipeline: Pipeline, conflict_id: str, take: str, registry: Registry | None = None
) -> Resolution:
    """Apply ``take`` (``desktop``, ``device`` or the value to use) to the conflict's record and
    mark the conflict resolved; every write is an ordinary edit, so it travels on the next merge."""
    registry = registry or get_registry()
    log = registry.conflict_log
    conflict = pipeline.find(conflict_id, log.name)
    values = conflict.values
    target_id, name = values.get("record_id"), values.get("field")
    if not target_id or not name:
        # A conflict record arrives like any record (a sync, a file from elsewhere): it may lack
        # what resolving needs.
        missing = "record_id" if not target_id else "field"
        raise ValidationError(
            f"conflict {conflict.id[:8]} names no {missing}: it cannot be resolved "
            "(edit the record it is about instead)"
        )
    target = pipeline.records.get(target_id)
    if target is None:
        raise UnknownRecordError(
            f"the conflict's record {target_id} is not in pipeline {pipeline.name!r}"
        )
    chosen = values.get(f"{take}_value") if take in SIDES else take
    warnings: list[str] = []
    if name == DELETED:
        apply_deletion_choice(pipeline, target, chosen)
    elif name == "*":
        raise ValidationError("this conflict was decided for the whole record; edit it")
    else:
        if target.deleted:
            raise ValidationError(f"record {target_id[:8]} is deleted; resolve its deletion")
        rtype = registry.record_type(target.kind)
        _, warnings = pipeline.update(rtype, target.id, {name: chosen or None})
    pipeline.update(
        log,
        conflict.id,
        {"status": "resolved", "resolution": take, "winner": take if take in SIDES else "merged",
         "value": target.values.get(name) if name != DELETED else chosen},
    )
    return Resolution(conflict, target, name, warnings)


def apply_deletion_choice(pipeline: Pipeline, target: Record, chosen: str | None) -> None:
    if chosen == "deleted":
        if not target.deleted:
            pipeline.delete(target.id)
    elif chosen in ("edited", None, ""):
        pipeline.undelete(target.id)
    else:
        raise ValidationError("a deletion conflict takes desktop, device, 'deleted' or 'edited'")
