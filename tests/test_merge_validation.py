"""A merged record is checked against its type, and what fails is reported.

Both halves of a merge passed their checks when they were written, but a file may hold values
no salesmgr writes (an older or a foreign writer), and a mix of two valid halves may not be
valid.  The merge keeps what it merged and warns, naming the record, the field and the problem.
The checks are remembered for short values (a merge of thousands of records checks the same
stages and dates again and again): a remembered answer must be the answer."""

from __future__ import annotations

import copy

from salesmgr.merge.engine import merge_files
from salesmgr.model.pipeline import Pipeline
from salesmgr.plugin.manager import get_registry

OPPORTUNITY = get_registry().record_type("opportunity")


def two_sides(count: int) -> tuple[Pipeline, Pipeline, list[str]]:
    origin = Pipeline.create("Shared", "ann", "EUR")
    deals = [
        origin.add(OPPORTUNITY, {"company": f"Acme {n}", "title": "Fleet", "value": "100.00"})[0].id
        for n in range(count)
    ]
    desk, dev = copy.deepcopy(origin), copy.deepcopy(origin)
    desk.fork("test:desk")
    dev.fork("test:dev")
    return desk, dev, deals


def written_by_another_program(side: Pipeline, deal: str, field: str, text: str) -> None:
    """A write with a proper version whose text no salesmgr would store."""
    side.update(OPPORTUNITY, deal, {"title": f"set {field}"})
    side.records[deal].field_dots[field] = side.records[deal].field_dots["title"]
    side.records[deal].values[field] = text


def test_values_no_salesmgr_writes_are_reported_record_by_record() -> None:
    desk, dev, deals = two_sides(3)
    for deal in deals:
        written_by_another_program(dev, deal, "value", "12000")  # canonical: 12000.00
        desk.update(OPPORTUNITY, deal, {"stage": "Proposal"})  # so the desktop's copy changes
    written_by_another_program(dev, deals[2], "probability", "most likely")

    warnings = merge_files(desk, dev).report.warnings

    for deal in deals:
        assert f"{deal[:8]} value: '12000' is not in canonical form" in warnings
    assert f"{deals[2][:8]} probability: 'most likely' is not a number" in " ".join(warnings)
    assert len(warnings) == 4
    assert desk.records[deals[0]].values["value"] == "12000"  # kept as merged, not changed


def test_a_remembered_check_answers_as_the_check_does() -> None:
    desk, dev, deals = two_sides(2)
    written_by_another_program(dev, deals[0], "value", "12000")
    desk.update(OPPORTUNITY, deals[0], {"stage": "Proposal"})
    first = merge_files(desk, dev).report.warnings
    # The same text again, now a proper amount elsewhere: valid text is not reported.
    dev.update(OPPORTUNITY, deals[1], {"value": "12000"})  # the update normalizes it
    desk.update(OPPORTUNITY, deals[1], {"stage": "Won"})
    second = merge_files(desk, dev).report.warnings
    assert first == [f"{deals[0][:8]} value: '12000' is not in canonical form"]
    assert second == []
