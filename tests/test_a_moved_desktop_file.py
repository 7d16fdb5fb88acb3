"""Moving or renaming a pipeline file makes it a replica of its own (a copy elsewhere must never
mint its old versions), and that new identity is saved the first time it is taken (issue 14,
item 3): the sync after the move is the only first meeting, not every later one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import desktop_file, salesmgr

from salesmgr import storage
from salesmgr.testing.pytest_plugin import DeviceFactory


def sync(desk: Path, url: str, env: dict[str, str]) -> dict[str, object]:
    result = salesmgr("sync", desk, "--from", url, "--json", env=env)
    assert result.exit_code == 0, result.output
    outcome: dict[str, object] = json.loads(result.output)
    return outcome


def as_stored(path: Path) -> tuple[str, str]:
    """The replica id and home written in the file (no copy detection on reading)."""
    pipeline = storage.decode(path.read_bytes(), str(path))
    return pipeline.replica_id, pipeline.home


@pytest.mark.parametrize("transport", ["tcp", "serial"])
def test_after_a_move_only_the_next_sync_is_a_first_meeting(
    emulated_device: DeviceFactory, tmp_path: Path, transport: str
) -> None:
    desk = desktop_file(tmp_path, count=12)
    device = emulated_device(transport)
    assert salesmgr("load", desk, "--to", device.url, env=device.env).exit_code == 0
    sync(desk, device.url, device.env)
    moved = tmp_path / "archive" / "renamed.pipe"
    moved.parent.mkdir()
    shutil.move(desk, moved)

    first = sync(moved, device.url, device.env)
    assert first["slow_sync"] == "first sync between this desktop and this device"
    assert as_stored(moved)[1] == storage.home_of(moved)  # the new identity is in the file
    later = sync(moved, device.url, device.env)
    assert later["slow_sync"] is None
    assert later["records_received"] == 0


def test_salesmgr_merge_saves_the_identity_a_copy_took(tmp_path: Path) -> None:
    desk = desktop_file(tmp_path)
    copy = tmp_path / "copy.pipe"
    shutil.copy(desk, copy)
    assert salesmgr("merge", desk, copy).exit_code == 0  # nothing to merge: both the same
    replica, home = as_stored(copy)
    assert home == storage.home_of(copy)
    assert replica != as_stored(desk)[0]
    assert salesmgr("merge", desk, copy).exit_code == 0
    assert as_stored(copy)[0] == replica  # not a new replica at every merge
