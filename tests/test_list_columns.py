"""A listing of every record reads the file column by column, and shows what the records hold.

`salesmgr list` (tab-separated and ``--json``) reads a pipeline file's sections as columns
(`Pipeline.live_columns`, `reports.select_columns`) instead of making a `Record` of each of
100,000 opportunities.  The contract: whatever was done to the pipeline since it was read, the
rows, their order and every byte written are those of the records themselves (`select`, and
`RecordJson` of each record).
"""

from __future__ import annotations

import copy
from datetime import date
from typing import Any

import msgspec
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from strategies import clocks, pipelines, record_kinds
from test_lazy_records import apply, changes, encodable

from salesmgr.cli.views import LIST_COLUMNS, RecordJson, plain_columns, plain_table, record_rows
from salesmgr.model.pipeline import DAY_MS, Pipeline, Record, clock_text, clock_texts
from salesmgr.model.record_table import RecordTable
from salesmgr.plugin.manager import get_registry
from salesmgr.plugins.pipeline_codec import PipelineCodecV1
from salesmgr.reports import select, select_columns

codec = PipelineCodecV1()
SETTINGS = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
kinds = st.one_of(st.just("opportunity"), record_kinds)
filters = st.fixed_dictionaries({}, optional={
    "search": st.sampled_from(["a", "acme", "é", "x y"]),
    "stage": st.sampled_from(["Lead", "won", ""]),
    "owner": st.sampled_from(["ana", "Ben"]),
    "due_before": st.just(date(2026, 6, 1)),
    "sort": st.sampled_from(["company", "-value", "stage", "probability", "close_date"]),
})


def plain_records(records: list[Record]) -> str:
    return plain_table(LIST_COLUMNS, record_rows(records, LIST_COLUMNS))


def json_of_records(records: list[Record]) -> bytes:
    to_json = RecordJson(get_registry().record_type("opportunity"))
    return msgspec.json.encode([to_json(record) for record in records])


def listings(pipeline: Pipeline, chosen: dict[str, Any]) -> tuple[str, bytes]:
    """What `salesmgr list` writes, tab-separated and as JSON, from the columns."""
    rows, order = select_columns(pipeline, **chosen)
    objects = RecordJson(get_registry().record_type("opportunity")).objects(rows)
    return plain_columns(rows, LIST_COLUMNS, order), msgspec.json.encode(
        [objects[i] for i in order]
    )


@SETTINGS
@given(pipelines(kinds=kinds), filters, st.data())
def test_a_listing_from_the_columns_is_the_listing_of_the_records(
    original: Pipeline, chosen: dict[str, Any], data: st.DataObject
) -> None:
    read = codec.decode(encodable(original), "file")
    assert isinstance(read.records, RecordTable)
    apply(read, data.draw(changes(read)))  # records made, changed, added, removed since read
    mirror = copy.deepcopy(read)  # plain records: the listing the records themselves give
    assert not isinstance(mirror.records, RecordTable)
    try:
        records = select(mirror, **chosen)
    except Exception as problem:  # a bad sort key: both refuse it alike
        assume(False, str(problem))
    plain, as_json = listings(read, chosen)
    assert plain == plain_records(records)
    assert as_json == json_of_records(records)


def test_a_listing_of_records_read_from_a_file_makes_none_of_them() -> None:
    """The point of the columns: listing every record of a file leaves them all unmade."""
    rtype = get_registry().record_type("opportunity")
    pipeline = Pipeline.create()
    for n in range(50):
        pipeline.add(rtype, {"company": f"Company {n % 7}", "title": f"deal {n}",
                             "probability": str(n)})
    read = codec.decode(codec.encode(pipeline), "file")
    edited = read.find(sorted(read.records)[3])
    edited.values["title"] = "changed after reading"
    plain, as_json = listings(read, {})
    assert isinstance(read.records, RecordTable)
    assert sum(map(len, read.records.touched)) == 1  # only the record edited above
    assert "changed after reading" in plain and b"changed after reading" in as_json
    assert plain == plain_records(select(copy.deepcopy(read)))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(clocks, st.integers(-(2**63), 2**63 - 1),
                          st.integers(-3 * DAY_MS, 3 * DAY_MS)), max_size=20))
def test_clocks_of_a_listing_read_as_each_one_alone(ats: list[int]) -> None:
    """A listing writes its clocks day by day and second by second; each text is that of the
    clock alone (`clock_text`), before 1970 and near the ends of the calendar too."""
    assert clock_texts(ats) == [clock_text(at) for at in ats]
