"""Notes edited on both sides merge line by line against the text both sides last agreed on
(issue 14, item 1): each side's changed lines, once, and no conflict, whichever path — creation,
edit, merge, line merge, resolve or sync — produced that common text."""

from __future__ import annotations

import json
import shutil
from functools import partial
from pathlib import Path
from typing import TypeAlias

import hypothesis.strategies as st
import pytest
from helpers import salesmgr
from hypothesis import HealthCheck, given, settings
from test_session import Desktop, MemoryStore, ok, sync

from salesmgr import storage
from salesmgr.merge.engine import merge_files
from salesmgr.model.pipeline import Pipeline
from salesmgr.plugin.manager import get_registry
from salesmgr.plugins.merge_rules import merge_text

OPPORTUNITY = get_registry().record_type("opportunity")
AGREED = "budget approved\ncontact: Jo\nnext: demo"


def run(*args: object) -> str:
    result = salesmgr(*args)
    assert result.exit_code == 0, result.output
    return result.output.strip()


def notes(path: Path, record_id: str) -> str:
    shown = json.loads(run("show", path, record_id, "--json"))
    return str(shown["notes"])


def merge(desk: Path, device: Path) -> str:
    report = json.loads(run("merge", desk, device, "--json"))
    assert report["conflicts"] == [], report["conflicts"]
    return "merged"


@pytest.fixture(params=["set by an edit", "set at creation"])
def shared_notes(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, Path, str]:
    """Two replicas of one deal whose notes both sides hold (the issue's repro, both ways)."""
    n1, n2 = tmp_path / "n1.smp", tmp_path / "n2.smp"
    run("init", n1)
    if request.param == "set by an edit":
        deal = run("add", n1, "--company", "Acme", "--title", "Fleet")
        run("edit", n1, deal, "--notes", AGREED)
    else:
        deal = run("add", n1, "--company", "Acme", "--title", "Fleet", "--notes", AGREED)
    shutil.copy(n1, n2)
    merge(n1, n2)
    return n1, n2, deal


def test_each_sides_changed_line_is_kept_once_and_no_old_line_comes_back(
    shared_notes: tuple[Path, Path, str],
) -> None:
    n1, n2, deal = shared_notes
    run("edit", n1, deal, "--notes", "budget approved in March\ncontact: Jo\nnext: demo")
    run("edit", n2, deal, "--notes", "budget approved\ncontact: Jo\nnext: demo on site")
    merge(n1, n2)
    expected = "budget approved in March\ncontact: Jo\nnext: demo on site"
    assert notes(n1, deal) == notes(n2, deal) == expected


def test_a_later_round_after_a_one_sided_edit_merges_lines_two_and_four(
    shared_notes: tuple[Path, Path, str],
) -> None:
    n1, n2, deal = shared_notes
    run("edit", n1, deal, "--notes", "budget approved\ncontact: Jo\nnext: demo\nfleet: 12 vans")
    merge(n1, n2)  # a one-sided edit: n2 takes it
    run("edit", n1, deal, "--notes",
        "budget approved\ncontact: Jo Smith\nnext: demo\nfleet: 12 vans")
    run("edit", n2, deal, "--notes", "budget approved\ncontact: Jo\nnext: demo\nfleet: 14 vans")
    merge(n1, n2)
    expected = "budget approved\ncontact: Jo Smith\nnext: demo\nfleet: 14 vans"
    assert notes(n1, deal) == notes(n2, deal) == expected


def test_a_resolved_conflict_is_the_new_common_text(tmp_path: Path) -> None:
    n1, n2 = tmp_path / "n1.smp", tmp_path / "n2.smp"
    run("init", n1)
    deal = run("add", n1, "--company", "Acme", "--title", "Fleet", "--notes", AGREED)
    shutil.copy(n1, n2)
    run("edit", n1, deal, "--notes", "budget approved\ncontact: Ann\nnext: demo")
    run("edit", n2, deal, "--notes", "budget approved\ncontact: Bob\nnext: demo")
    run("merge", n1, n2)  # the same line changed on both sides: a true conflict
    [conflict] = json.loads(run("conflicts", n1, "--all", "--json"))
    agreed = "budget approved\ncontact: Ann and Bob\nnext: demo"
    run("resolve", n1, conflict["id"], "--take", agreed)
    merge(n1, n2)
    run("edit", n1, deal, "--notes", "budget approved in May\ncontact: Ann and Bob\nnext: demo")
    run("edit", n2, deal, "--notes", "budget approved\ncontact: Ann and Bob\nnext: visit")
    merge(n1, n2)
    expected = "budget approved in May\ncontact: Ann and Bob\nnext: visit"
    assert notes(n1, deal) == notes(n2, deal) == expected


def test_neighbouring_and_repeated_lines_changed_on_either_side_are_no_clash() -> None:
    base = "a\n\n\nb"
    assert merge_text(base, "A\n\n\nb", "a\nX\n\nb") == "A\nX\n\nb"
    assert merge_text(base, "a\n\n\nb\nc", "A\n\n\nb") == "A\n\n\nb\nc"  # a line added
    assert merge_text("", "one", "two") == "one\ntwo"  # added on both sides: both kept
    assert merge_text(base, "A\n\n\nb", "B\n\n\nb") is None  # the same line, two ways


# --- the property ----------------------------------------------------------------------------

LINE = st.text(alphabet="ab ", max_size=3)  # short, often repeated lines: the hard case
# A round: the desktop's and the device's line edits, and in how many saves each side made them.
Round: TypeAlias = tuple[dict[int, str], dict[int, str], int, int]
Day: TypeAlias = tuple[list[str], bool, list[Round]]  # common text, set at creation?, rounds


@st.composite
def days_of_edits(draw: st.DrawFn) -> Day:
    """A common text; whether it was set at creation; then rounds, each with line edits for
    the desktop and for the device on disjoint lines (each side's in up to three saves)."""
    size = draw(st.integers(1, 7))
    text = draw(st.lists(LINE, min_size=size, max_size=size))
    rounds = []
    for _ in range(draw(st.integers(1, 4))):
        lines = draw(st.permutations(range(size)))
        cut = draw(st.integers(0, size))
        end = draw(st.integers(cut, size))
        desktop = {i: draw(LINE) for i in lines[:cut]}
        device = {i: draw(LINE) for i in lines[cut:end]}
        rounds.append((desktop, device, draw(st.integers(1, 3)), draw(st.integers(1, 3))))
    return text, draw(st.booleans()), rounds


def edit_lines(pipeline: Pipeline, deal: str, lines: list[str], edits: dict[int, str],
               saves: int) -> None:
    """Apply ``edits`` to the text ``lines`` in ``saves`` successive edits of the notes."""
    current = list(lines)
    changes = sorted(edits.items())
    for step in range(saves):
        for number, line in changes[step::saves]:
            current[number] = line
        pipeline.update(OPPORTUNITY, deal, {"notes": "\n".join(current)})


def start(text: list[str], at_creation: bool) -> tuple[Pipeline, Pipeline, str]:
    desktop = Pipeline.create("Notes")
    if at_creation:
        deal, _ = desktop.add(OPPORTUNITY, {"company": "A", "title": "T", "notes": "\n".join(text)})
    else:
        deal, _ = desktop.add(OPPORTUNITY, {"company": "A", "title": "T"})
        desktop.update(OPPORTUNITY, deal.id, {"notes": "\n".join(text)})
    device = storage.decode(storage.encode(desktop), "device")
    device.fork("elsewhere:/device.smp")  # a copied file becomes a replica of its own
    return desktop, device, deal.id


@settings(max_examples=200, deadline=None)
@given(days_of_edits(), st.booleans())
def test_edits_to_disjoint_lines_always_merge_to_exactly_both_edits(
    day: Day, swap: bool
) -> None:
    text, at_creation, rounds = day
    desktop, device, deal = start(text, at_creation)
    for desktop_edits, device_edits, desktop_saves, device_saves in rounds:
        if desktop_edits:
            edit_lines(desktop, deal, text, desktop_edits, desktop_saves)
        if device_edits:
            edit_lines(device, deal, text, device_edits, device_saves)
        for number, line in {**desktop_edits, **device_edits}.items():
            text[number] = line
        first, second = (device, desktop) if swap else (desktop, device)
        result = merge_files(first, second)
        assert result.report.conflicts == []
        for replica in (desktop, device):
            assert replica.records[deal].values.get("notes", "") == "\n".join(text)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(days_of_edits())
def test_over_a_live_sync_too(day: Day) -> None:
    """The desktop's file records only what the device held before a sync; the device's only
    what the desktop sent: the common text must still be found."""
    text, at_creation, rounds = day
    origin, _, deal = start(text, at_creation)
    desktop, store = Desktop(origin), MemoryStore()
    ok(sync(desktop, store)[0])  # a first sync fills the new device
    for desktop_edits, device_edits, desktop_saves, device_saves in rounds:
        if desktop_edits:
            desktop.edit(partial(edit_lines, deal=deal, lines=text, edits=desktop_edits,
                                 saves=desktop_saves))
        if device_edits:
            store.edit(partial(edit_lines, deal=deal, lines=text, edits=device_edits,
                               saves=device_saves))
        for number, line in {**desktop_edits, **device_edits}.items():
            text[number] = line
        result = ok(sync(desktop, store)[0])
        assert result.report is not None and result.report.conflicts == []
        for replica in (desktop.pipeline, store.pipeline):
            assert replica.records[deal].values.get("notes", "") == "\n".join(text)
