"""The same record (same id, same data) added on both sides, as when one CSV with an id column is
imported into both copies, is one record and no conflict (issue 14, item 7): its ``created``
stamps differ only because salesmgr stamped each copy when it was made."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
from helpers import Ticking

from salesmgr.merge.engine import merge_files
from salesmgr.model.pipeline import Pipeline, use_sources
from salesmgr.plugin.manager import get_registry
from salesmgr.testing.compare import user_data

OPPORTUNITY = get_registry().record_type("opportunity")
DEAL = "11111111-2222-3333-4444-555555555555"
ROW = {"company": "Acme", "title": "Fleet renewal", "value": "12000"}


@pytest.fixture(autouse=True)
def ticking() -> Iterator[None]:
    previous = use_sources(Ticking())
    yield
    use_sources(previous)


def two_copies() -> tuple[Pipeline, Pipeline]:
    desktop = Pipeline.create("Imports")
    device = copy.deepcopy(desktop)
    device.fork("elsewhere:/device.smp")
    return desktop, device


@pytest.mark.parametrize("policy", sorted(get_registry().policies))
def test_identical_data_added_on_both_sides_is_no_conflict(policy: str) -> None:
    desktop, device = two_copies()
    desktop.add(OPPORTUNITY, {**ROW, "created": "2026-12-03T09:00:01+01:00"}, record_id=DEAL)
    device.add(OPPORTUNITY, {**ROW, "created": "2026-12-03T09:00:05+01:00"}, record_id=DEAL)
    result = merge_files(desktop, device, policy=policy)
    assert result.report.conflicts == []
    assert user_data(desktop) == user_data(device)
    assert desktop.records[DEAL].values == {**ROW, "value": "12000.00", "stage": "Lead",
                                            "currency": "USD",
                                            "created": "2026-12-03T09:00:01+01:00"}


def test_the_earlier_stamp_is_kept_whichever_side_made_the_record_first() -> None:
    desktop, device = two_copies()
    device.add(OPPORTUNITY, {**ROW, "created": "2026-12-03T08:00:00+00:00"}, record_id=DEAL)
    desktop.add(OPPORTUNITY, {**ROW, "created": "2026-12-03T08:30:00+00:00"}, record_id=DEAL)
    merge_files(desktop, device)
    assert desktop.records[DEAL].values["created"] == "2026-12-03T08:00:00+00:00"
    assert device.records[DEAL].values["created"] == "2026-12-03T08:00:00+00:00"


def test_data_that_differs_is_still_a_conflict() -> None:
    desktop, device = two_copies()
    desktop.add(OPPORTUNITY, {**ROW, "value": "12000"}, record_id=DEAL)
    device.add(OPPORTUNITY, {**ROW, "value": "9000"}, record_id=DEAL)
    result = merge_files(desktop, device)
    assert [c.field for c in result.report.conflicts] == ["value"]
