"""The mass-change brake catches a side that is emptied or replaced, not a busy day (issue 14,
item 6; issue 9, item 14).  It is one rule, asked by every path that writes a merge: the same
cases give the same verdict over ``salesmgr merge``, a live sync and a folder sync."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import Ticking, desktop_file, one_error_line, salesmgr
from test_session import Desktop, MemoryStore, load, ok, sync
from test_transport_folder import SECRET, Site, url_of

from salesmgr import storage
from salesmgr.errors import MassChange
from salesmgr.model.pipeline import Pipeline, use_sources
from salesmgr.plugin.manager import get_registry

OPPORTUNITY = get_registry().record_type("opportunity")
Change = Callable[[Pipeline], Any]
NAMED = re.compile(r"\(Company \d+ \([0-9a-f]{8}\)[,)]")  # each record counted, by name and id


def deals(pipeline: Pipeline) -> list[str]:
    return sorted(r.id for r in pipeline.live("opportunity"))


def edit_each(count: int, **values: str) -> Change:
    def change(pipeline: Pipeline) -> None:
        for deal in deals(pipeline)[:count]:
            pipeline.update(OPPORTUNITY, deal, values)
    return change


def delete_each(count: int | None = None) -> Change:
    def change(pipeline: Pipeline) -> None:
        for deal in deals(pipeline)[:count]:
            pipeline.delete(deal)
    return change


# A case: the desktop's and the device's day apart, and what the brake says of the evening.
BUSY_DAY = (None, edit_each(10, stage="Won", notes="signed"))
REPLACED = (edit_each(12, stage="Lost"), edit_each(12, stage="Won"))  # the device's, later, win
EMPTIED = (None, delete_each())


@pytest.fixture(autouse=True)
def ticking() -> Iterator[None]:
    previous = use_sources(Ticking())
    yield
    use_sources(previous)


def fresh(folder: Path) -> Path:
    folder.mkdir()
    return folder


# --- the three paths ---------------------------------------------------------------------------


def by_merge_command(tmp_path: Path, count: int, desktop_day: Change | None, device_day: Change,
                     *options: str) -> str | None:
    """``salesmgr merge`` of a desktop file and a copy of it; the brake's message, or None."""
    desk = desktop_file(tmp_path, count=count)
    device = tmp_path / "device.pipe"
    shutil.copy(desk, device)
    for path, day in ((desk, desktop_day), (device, device_day)):
        if day is not None:
            pipeline = storage.load(path)
            day(pipeline)
            storage.save(pipeline, path)
    before = (desk.read_bytes(), device.read_bytes())
    result = salesmgr("merge", desk, device, *options)
    if result.exit_code == 0:
        return None
    assert result.exit_code == 6, result.output
    assert (desk.read_bytes(), device.read_bytes()) == before
    return one_error_line(result)


def by_live_sync(tmp_path: Path, count: int, desktop_day: Change | None, device_day: Change,
                 *options: str) -> str | None:
    desktop = Desktop(storage.load(desktop_file(tmp_path, count=count)))
    store = MemoryStore()
    ok(load(desktop, store)[0])
    if desktop_day is not None:
        desktop.edit(desktop_day)
    store.edit(device_day)
    before = (desktop.data, store.data)
    desk, _ = sync(desktop, store, allow_mass_change="--allow-mass-change" in options)
    if not isinstance(desk, MassChange):
        ok(desk)
        return None
    assert (desktop.data, store.data) == before
    return f"salesmgr: {desk}"


def by_folder_sync(tmp_path: Path, count: int, desktop_day: Change | None, device_day: Change,
                   *options: str) -> str | None:
    box = tmp_path / "Mirror"
    box.mkdir()
    site = Site(desktop_file(tmp_path, count=count), tmp_path / "device.pipe", box)
    site.load()
    site.look()
    for path, day in ((site.desk, desktop_day), (site.device, device_day)):
        if day is not None:
            pipeline = storage.load(path)
            day(pipeline)
            storage.save(pipeline, path)
    site.look()
    before = site.desk.read_bytes()
    result = salesmgr("sync", site.desk, "--from", url_of(box), "--secret", SECRET, *options)
    if result.exit_code == 0:
        return None
    assert result.exit_code == 6, result.output
    assert site.desk.read_bytes() == before
    return one_error_line(result)


PATHS = [by_merge_command, by_live_sync, by_folder_sync]


@pytest.mark.parametrize("path", PATHS)
def test_a_busy_day_of_ordinary_edits_goes_through(path: Callable[..., str | None],
                                                  tmp_path: Path) -> None:
    """The salesperson edited 10 of the 14 deals during the day; nobody else touched them."""
    assert path(tmp_path, 14, *BUSY_DAY) is None


@pytest.mark.parametrize("path", PATHS)
def test_a_side_whose_own_values_are_overwritten_is_braked_and_named(
    path: Callable[..., str | None], tmp_path: Path
) -> None:
    """Both sides changed the same 12 of 14 deals; the device's later values win every one."""
    message = path(tmp_path, 14, *REPLACED)
    assert message is not None
    assert "this would overwrite 12 of the 14 records on the desktop" in message
    assert NAMED.search(message) and "and 7 more)" in message
    assert "use --allow-mass-change" in message
    assert path(fresh(tmp_path / "again"), 14, *REPLACED, "--allow-mass-change") is None


@pytest.mark.parametrize("count", [1, 3])
@pytest.mark.parametrize("path", PATHS)
def test_emptying_a_side_is_braked_whatever_its_size(
    path: Callable[..., str | None], tmp_path: Path, count: int
) -> None:
    message = path(tmp_path, count, *EMPTIED)
    assert message is not None
    assert "this would delete every record left on the desktop (Company " in message
    assert NAMED.search(message)
    assert path(fresh(tmp_path / "again"), count, *EMPTIED, "--allow-mass-change") is None


@pytest.mark.parametrize("path", PATHS)
def test_deleting_most_of_a_side_names_what_it_counted(
    path: Callable[..., str | None], tmp_path: Path
) -> None:
    message = path(tmp_path, 20, None, delete_each(15))
    assert message is not None
    assert "this would delete 15 of the 20 records on the desktop (Company " in message
    assert NAMED.search(message)
    assert "and 10 more)" in message


def test_a_dry_run_says_what_a_real_merge_would_stop_on(tmp_path: Path) -> None:
    desk = desktop_file(tmp_path, count=3)
    device = tmp_path / "device.pipe"
    shutil.copy(desk, device)
    pipeline = storage.load(device)
    delete_each()(pipeline)
    storage.save(pipeline, device)
    result = salesmgr("merge", desk, device, "--dry-run")
    assert result.exit_code == 0
    assert "this would delete every record left on the desktop" in result.stderr
