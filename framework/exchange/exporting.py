"""What ``salesmgr export`` writes: the live records as rows of canonical values.

Values are written as salesmgr keeps them (``12000.50``, ``2026-12-31``, ``60``), so the file
re-imports to exactly the same pipeline whatever the locale.  With activities, a ``record``
column says what each row is and each opportunity is followed by its activities, oldest first;
the columns are the opportunity's fields, then the activity fields the opportunity does not
have.
"""

from __future__ import annotations

from collections.abc import Mapping

from salesmgr.exchange.profiles import RECORD_COLUMN
from salesmgr.model.fields import RecordType
from salesmgr.model.pipeline import Pipeline, Record
from salesmgr.reports import sorted_records

OPPORTUNITY = "opportunity"
ACTIVITY = "activity"


def cells(record: Record, columns: list[str]) -> list[str]:
    values = record.values
    return [record.id if c == "id" else record.kind if c == RECORD_COLUMN else values.get(c, "")
            for c in columns]


def export_table(
    pipeline: Pipeline, types: Mapping[str, RecordType], *, activities: bool = False
) -> tuple[list[str], list[list[str]]]:
    """The header and rows of an export (see the module's docstring)."""
    opportunity = types[OPPORTUNITY]
    columns = ["id", *(f.name for f in opportunity.fields)]
    opportunities = sorted_records(list(pipeline.live(OPPORTUNITY)), None)
    if not activities:
        return columns, [cells(r, columns) for r in opportunities]
    activity = types[ACTIVITY]
    columns.insert(1, RECORD_COLUMN)
    columns += [f.name for f in activity.fields if f.name not in opportunity.by_name]
    rows = []
    for record in opportunities:
        rows.append(cells(record, columns))
        rows.extend(cells(a, columns) for a in pipeline.activities_of(record.id))
    return columns, rows
