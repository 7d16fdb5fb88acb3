"""Likely duplicates between two unrelated pipelines joined with ``salesmgr merge --combine``."""

from __future__ import annotations

from collections.abc import Iterable

from salesmgr.model.fields import RecordType
from salesmgr.model.pipeline import Pipeline, Record


def likely_duplicates(
    desktop: Pipeline, device: Pipeline, record_types: Iterable[RecordType]
) -> list[tuple[str, str, str]]:
    """(desktop id, device id, label) of live records alike in every identity field of their type
    (case and surrounding blanks ignored)."""
    found = []
    for rtype in record_types:
        names = rtype.identity_fields
        if not names:
            continue

        def key(record: Record, names: tuple[str, ...] = names) -> tuple[str, ...]:
            return tuple(record.get(name).casefold().strip() for name in names)

        index: dict[tuple[str, ...], str] = {}
        for record in desktop.live(rtype.name):
            index.setdefault(key(record), record.id)
        for record in device.live(rtype.name):
            match = index.get(key(record))
            if match:
                label = " / ".join(record.get(name) for name in names)
                found.append((match, record.id, label))
    return found
