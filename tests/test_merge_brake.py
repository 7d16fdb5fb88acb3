"""The brake of ``salesmgr merge``: a merge that would delete or overwrite more than half of one
side's records (and at least ten) writes nothing unless ``--allow-mass-change`` says it is
right; exactly half is a normal day's work."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import content, one_error_line, salesmgr

from salesmgr import storage
from salesmgr.model.pipeline import Pipeline
from salesmgr.plugin.manager import get_registry

RECORDS = 20


@pytest.fixture
def desk_and_device(tmp_path: Path) -> tuple[Path, Path]:
    """A desktop with 20 opportunities and a device copied from it (a replica of its own)."""
    pipeline = Pipeline.create("Brake", "ana")
    opportunity = get_registry().record_type("opportunity")
    for number in range(RECORDS):
        pipeline.add(opportunity, {"company": f"Customer {number}", "title": "Service"})
    desk, device = tmp_path / "desk.smp", tmp_path / "device.smp"
    storage.save(pipeline, desk)
    shutil.copyfile(desk, device)
    return desk, device


def delete_on(path: Path, count: int) -> None:
    ids = sorted(r.id for r in storage.load(path).live("opportunity"))
    for record_id in ids[:count]:
        assert salesmgr("delete", path, record_id).exit_code == 0


def test_more_than_half_of_the_desktop_deleted_stops_the_merge_and_writes_nothing(
    desk_and_device: tuple[Path, Path],
) -> None:
    desk, device = desk_and_device
    delete_on(device, RECORDS // 2 + 1)
    before = desk.read_bytes(), device.read_bytes()

    refused = salesmgr("merge", desk, device)
    assert refused.exit_code != 0
    line = one_error_line(refused)
    assert "would delete 11 of the 20 records on the desktop" in line
    assert "nothing was written" in line and "--allow-mass-change" in line
    assert (desk.read_bytes(), device.read_bytes()) == before

    allowed = salesmgr("merge", desk, device, "--allow-mass-change")
    assert allowed.exit_code == 0, allowed.output
    assert sum(not deleted for _, deleted, _ in content(desk).values()) == RECORDS // 2 - 1
    assert content(desk) == content(device)


def test_more_than_half_of_the_device_overwritten_stops_the_merge_too(
    desk_and_device: tuple[Path, Path],
) -> None:
    desk, device = desk_and_device
    delete_on(desk, RECORDS // 2 + 1)
    before = desk.read_bytes(), device.read_bytes()
    refused = salesmgr("merge", desk, device)
    assert refused.exit_code != 0
    assert "11 of the 20 records on the device" in one_error_line(refused)
    assert (desk.read_bytes(), device.read_bytes()) == before


def test_exactly_half_is_not_a_mass_change(desk_and_device: tuple[Path, Path]) -> None:
    desk, device = desk_and_device
    delete_on(device, RECORDS // 2)
    merged = salesmgr("merge", desk, device)
    assert merged.exit_code == 0, merged.output
    assert "desktop: 0 added, 0 changed, 10 deleted" in merged.stdout
    assert content(desk) == content(device)


def test_a_dry_run_of_a_mass_change_says_what_a_real_merge_would_do(
    desk_and_device: tuple[Path, Path],
) -> None:
    desk, device = desk_and_device
    delete_on(device, RECORDS // 2 + 1)
    before = desk.read_bytes(), device.read_bytes()
    dry = salesmgr("merge", desk, device, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "would delete 11 of the 20 records on the desktop" in dry.stderr
    assert (desk.read_bytes(), device.read_bytes()) == before
