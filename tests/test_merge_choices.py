"""A choice between two concurrent versions is a version of its own.

When two replicas changed a field concurrently, the merge chooses (a policy that favours one
side, a line merge that puts the desktop's lines first).  Another pair of replicas may meet the
same two versions and choose the other way.  If a choice kept the chosen version's identity,
each side would end up holding one version while knowing the other, and no later merge would
ever bring them together: the office would disagree for good, silently.  So a choice is a
version of its own; and a line merge, which makes such choices all day, makes the same one
whichever side is the desktop, or the new versions would never stop.  These are the smallest
offices in which each went wrong (found by the stateful office test)."""

from __future__ import annotations

import copy

import pytest
from test_merge_story import SkewableClock

from salesmgr.merge.engine import merge_files
from salesmgr.model.pipeline import Pipeline, use_sources
from salesmgr.plugin.manager import get_registry
from salesmgr.testing.compare import user_data

OPPORTUNITY = get_registry().record_type("opportunity")


def office(*names: str) -> tuple[dict[str, Pipeline], str]:
    """Replicas of one pipeline with one deal, all in agreement; and the deal's id."""
    origin = Pipeline.create("Shared", "ann", "EUR")
    deal, _ = origin.add(OPPORTUNITY, {"company": "Acme", "title": "Fleet", "notes": "start"})
    replicas = {}
    for name in names:
        replicas[name] = copy.deepcopy(origin)
        replicas[name].fork(f"test:{name}")
    return replicas, deal.id


def edit(replica: Pipeline, deal: str, **fields: str) -> None:
    replica.update(OPPORTUNITY, deal, fields)


def value(replica: Pipeline, deal: str, field: str) -> str | None:
    return replica.records[deal].values.get(field)


def everyone_meets(replicas: dict[str, Pipeline]) -> None:
    """Merge every pair until a whole round changes nothing; then all must agree."""
    pairs = [(a, b) for a in sorted(replicas) for b in sorted(replicas) if a < b]
    for _ in range(len(replicas) + 1):
        if all([merge_files(replicas[a], replicas[b]).report.changes_nothing for a, b in pairs]):
            break
    first, *others = (user_data(r) for r in replicas.values())
    assert all(other == first for other in others)


def test_two_pairs_that_chose_differently_still_come_together() -> None:
    replicas, deal = office("ann", "bob", "cat", "dan")
    ann, bob, cat, dan = (replicas[n] for n in ("ann", "bob", "cat", "dan"))
    edit(ann, deal, phone="555-0100")
    edit(bob, deal, phone="555-0199")  # concurrent with ann's
    merge_files(cat, ann)  # cat carries ann's number
    merge_files(dan, bob)  # dan carries bob's
    # The same two versions meet twice and the desktop's wins each time: opposite choices.
    merge_files(cat, bob, policy="desktop-wins")
    merge_files(dan, ann, policy="desktop-wins")
    assert value(bob, deal, "phone") == "555-0100"
    assert value(ann, deal, "phone") == "555-0199"

    merge_files(ann, bob)
    assert value(ann, deal, "phone") == value(bob, deal, "phone")
    everyone_meets(replicas)


def test_lines_added_at_one_place_merge_the_same_whichever_side_is_the_desktop() -> None:
    """Two lines added at the same place are both kept, in an order that does not depend on
    which side is the desktop: two pairs that merge the same two texts make the same text.
    (With the desktop's lines first, two such pairs kept minting ever new orders of the same
    lines, and an office of five never settled.)"""
    replicas, deal = office("ann", "bob", "cat", "dan")
    ann, bob, cat, dan = (replicas[n] for n in ("ann", "bob", "cat", "dan"))
    edit(cat, deal, notes="start\nvisit")
    edit(dan, deal, notes="start\ncall back")
    merge_files(ann, cat)
    merge_files(bob, dan)
    merge_files(ann, bob)  # ann's line as the desktop's
    merge_files(dan, cat)  # dan's line as the desktop's
    assert value(ann, deal, "notes") == value(dan, deal, "notes")
    assert set(value(ann, deal, "notes").splitlines()) == {"start", "visit", "call back"}
    everyone_meets(replicas)


def test_a_choice_between_equal_values_needs_no_new_version() -> None:
    replicas, deal = office("ann", "bob")
    ann, bob = replicas["ann"], replicas["bob"]
    edit(ann, deal, stage="Won")
    edit(bob, deal, stage="Won")  # the same value, written twice
    result = merge_files(ann, bob)
    assert result.report.conflicts == []
    assert ann.records[deal].dot_of("stage") == bob.records[deal].dot_of("stage")
    assert merge_files(ann, bob).report.changes_nothing


@pytest.mark.parametrize("live_side", ["desktop", "device"])
def test_an_edit_equal_to_one_the_deleting_side_made_still_brings_the_deal_back(
    live_side: str,
) -> None:
    """Both wrote the same notes, bob later; then bob deleted the deal.  Ann still worked on it
    unaware of the deletion: under the default policy the deal comes back, whichever side is
    the desktop (the merge weighs the work the desktop held, not the field it has just settled
    on the device's identical, newer version)."""
    previous = use_sources(SkewableClock())  # each write later than the last
    try:
        replicas, deal = office("ann", "bob")
        ann, bob = replicas["ann"], replicas["bob"]
        edit(ann, deal, notes="visit")
        edit(bob, deal, notes="visit")
        bob.delete(deal)
        result = merge_files(ann, bob) if live_side == "desktop" else merge_files(bob, ann)
    finally:
        use_sources(previous)
    assert not ann.records[deal].deleted and not bob.records[deal].deleted
    assert [c.field for c in result.report.conflicts] == ["_deleted"]
