"""The seed story end to end, on every transport: the emulated device runs in a subprocess
(started by the pytest plugin salesmgr ships for integrators, `salesmgr.testing.pytest_plugin`),
the desktop is the ``salesmgr`` command line.

In the morning the desktop loads the device; during the day the salesperson works on the device
and the assistant on the desktop (`salesmgr.emulator.day`); in the evening the desktop pulls,
merges and sends back.  Everything either side did is then on both sides; a second sync moves
almost nothing; a noisy serial line still gets there; and a link cut anywhere is finished by the
next sync with nothing lost and nothing twice.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from helpers import salesmgr

from salesmgr import storage
from salesmgr.emulator.day import DaySummary, office_day, road_day, starting_pipeline
from salesmgr.model.pipeline import Pipeline
from salesmgr.storage import editing_pipeline
from salesmgr.testing.pytest_plugin import DeviceFactory, EmulatedDevice

SEED = 11
BAUD = 115200


def sync(desk: Path, device: EmulatedDevice, *options: str) -> dict[str, Any]:
    """``salesmgr sync --json``, once the device has taken its answer (a folder device takes
    it in its own time)."""
    result = salesmgr("sync", desk, "--from", device.url, "--json", *options, env=device.env)
    assert result.exit_code == 0, result.output
    outcome: dict[str, Any] = json.loads(result.output)
    device.settle()
    return outcome


def business(pipeline: Pipeline) -> dict[str, tuple[str, bool, dict[str, str]]]:
    """Opportunities and activities as users see them (the conflict log aside)."""
    return {
        rid: (r.kind, r.deleted, {k: v for k, v in r.values.items() if not k.startswith("~")})
        for rid, r in pipeline.records.items()
        if r.kind in ("opportunity", "activity")
    }


def live(pipeline: Pipeline, kind: str) -> dict[str, dict[str, str]]:
    return {r.id: r.values for r in pipeline.live(kind)}


@dataclass
class Day:
    """A loaded device and a desktop after a day of work on both, not yet synced."""

    desk: Path
    device_file: Path
    morning: Pipeline  # the desktop as it was loaded onto the device
    road: DaySummary
    office: DaySummary


def morning_and_day(folder: Path, device: EmulatedDevice) -> Day:
    desk = folder / "desk.smp"
    storage.save(starting_pipeline(SEED, opportunities=24), desk)
    loaded = salesmgr("load", desk, "--to", device.url, env=device.env)
    assert loaded.exit_code == 0, loaded.output
    device.settle()
    on_device = device.pipeline()
    assert on_device is not None
    morning = storage.load(desk)
    assert business(on_device) == business(morning)
    with editing_pipeline(device.device_file) as pipeline:
        road = road_day(pipeline, SEED)
    with editing_pipeline(desk) as pipeline:
        office = office_day(pipeline, SEED, contested=road.contested)
    device.settle()  # a folder device offers the day's changes
    return Day(desk, device.device_file, morning, road, office)


def assert_everything_from_both_sides_is_there(day: Day) -> Pipeline:
    desktop = storage.load(day.desk)
    device = storage.load(day.device_file)
    assert business(desktop) == business(device)
    opportunities = live(desktop, "opportunity")
    activities = live(desktop, "activity")
    contested = day.road.contested
    assert contested is not None
    for action in day.road.actions + day.office.actions:
        if action.what == "deleted":
            assert desktop.records[action.record_id].deleted, action
            continue
        if action.added:
            assert action.added in opportunities or action.added in activities, action
        if action.field and action.record_id != contested.record_id:
            assert opportunities[action.record_id][action.field] == action.value, action
    # The contested field: one side's value won, the other's is in the conflict log.
    [entry] = [c.values for c in desktop.live("conflict")]
    assert (entry["record_id"], entry["field"]) == (contested.record_id, contested.field)
    road_value = contested.value
    [office_edit] = day.office.of("edit")
    assert {entry["device_value"], entry["desktop_value"]} == {road_value, office_edit.value}
    assert opportunities[contested.record_id][contested.field] == entry["value"]
    # Nothing twice: exactly what the morning had, plus what was added, minus what was deleted.
    added = [a.added for a in day.road.actions + day.office.actions if a.added]
    deleted = [a.record_id for a in day.road.of("deleted")]
    morning = live(day.morning, "opportunity").keys() | live(day.morning, "activity").keys()
    assert set(opportunities) | set(activities) == (morning | set(added)) - set(deleted)
    return desktop


# --- the story, on each transport --------------------------------------------------------------


def test_the_seed_story_on_every_transport(
    emulated_device: DeviceFactory, salesmgr_transport: str, tmp_path: Path
) -> None:
    baud = BAUD if salesmgr_transport == "serial" else None
    device = emulated_device(salesmgr_transport, baud=baud)
    day = morning_and_day(tmp_path, device)

    evening = sync(day.desk, device)
    road = day.road.actions
    touched = {a.record_id for a in road if a.field or a.what == "deleted"}
    assert evening["records_received"] == len(touched | {a.added for a in road if a.added})
    report = evening["report"]
    assert report["to_desktop"]["deleted"] == 1
    assert len(report["conflicts"]) == 1
    assert_everything_from_both_sides_is_there(day)

    files = (day.desk.read_bytes(), day.device_file.read_bytes())
    again = sync(day.desk, device)
    assert again["records_received"] == 0 and again["records_sent"] == 0
    moved = again["bytes_sent"] + again["bytes_received"]
    assert moved < (evening["bytes_sent"] + evening["bytes_received"]) / 3
    assert (day.desk.read_bytes(), day.device_file.read_bytes()) == files
    assert device.stop() == 0
    assert "(0 failed)" in device.stdout


def test_a_noisy_serial_line_still_converges(
    emulated_device: DeviceFactory, tmp_path: Path
) -> None:
    """A few percent of the bytes the cradle sends are garbled or lost: the link layer repeats
    frames until they get through, and the sessions end as on a clean line."""
    (tmp_path / "clean").mkdir()
    clean = emulated_device("serial")
    clean_bytes = sync(morning_and_day(tmp_path / "clean", clean).desk, clean)["bytes_received"]
    noisy = ("noise=0.02,drop=0.02,seed=3",)
    device = emulated_device("serial", faults=noisy)
    day = morning_and_day(tmp_path, device)
    evening = sync(day.desk, device)
    assert evening["bytes_received"] > 1.2 * clean_bytes  # frames were sent again
    assert_everything_from_both_sides_is_there(day)
    again = sync(day.desk, device)
    assert again["records_received"] == 0 and again["records_sent"] == 0
    assert device.stop() == 0
    assert "(0 failed)" in device.stdout


# --- a cut link, anywhere, on each transport -------------------------------------------------

CUTS = 3  # cuts per transport: one in each third of what crosses the line


def offsets(size: int, name: str) -> list[int]:
    """One offset in each third of ``size`` bytes, drawn by a generator seeded with ``name``."""
    draw = random.Random(f"cuts-{name}")
    thirds = [size * part // CUTS for part in range(CUTS + 1)]
    return [draw.randrange(low, max(low + 1, high)) for low, high in pairwise(thirds)]


@dataclass
class Snapshot:
    """Files as they were: put back at the same paths (a file copied elsewhere would become a
    replica of its own)."""

    files: dict[Path, bytes]

    @classmethod
    def of(cls, *paths: Path) -> Snapshot:
        return cls({path: path.read_bytes() for path in paths})

    def restore(self) -> None:
        for path, data in self.files.items():
            path.write_bytes(data)


@pytest.mark.parametrize("transport", ["tcp", "serial"])
def test_a_link_cut_anywhere_is_finished_by_the_next_sync(
    emulated_device: DeviceFactory, transport: str, tmp_path: Path
) -> None:
    device = emulated_device(transport)
    day = morning_and_day(tmp_path, device)
    device.stop()
    evening = Snapshot.of(day.desk, day.device_file)

    clean = emulated_device(transport, device_file=day.device_file)
    whole = sync(day.desk, clean)
    clean.stop()
    expected = assert_everything_from_both_sides_is_there(day)

    for offset in offsets(whole["bytes_received"], transport):  # what the device writes
        evening.restore()
        cut = emulated_device(
            transport, device_file=day.device_file, once=True,
            faults=(f"disconnect-after={offset}",),
        )
        result = salesmgr("sync", day.desk, "--from", cut.url, "--timeout", "2", env=cut.env)
        assert result.exit_code in (0, 7), result.output
        if result.exit_code:
            assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        cut.wait(30)
        again = emulated_device(transport, device_file=day.device_file)
        sync(day.desk, again)
        again.stop()
        desktop = assert_everything_from_both_sides_is_there(day)
        assert business(desktop) == business(expected), f"cut after {offset} bytes"


def test_a_drop_cut_short_in_the_folder_is_finished_by_the_next_sync(
    emulated_device: DeviceFactory, tmp_path: Path
) -> None:
    """The folder's equivalent of a pulled cable: the mirroring tool dies while copying the
    desktop's answer, leaving its first N bytes under the final name.  The device refuses it
    and leaves it for inspection; the next sync answers again and nothing is lost."""
    device = emulated_device("folder")
    assert device.mailbox is not None
    mirror = f"folder://{device.mailbox}"
    day = morning_and_day(tmp_path, device)
    device.stop()
    entries = sorted(device.mailbox.iterdir())
    evening = Snapshot.of(day.desk, day.device_file, *entries)

    # The drops in the folder are sealed with the pairing secret: every device keeps it.
    secret = device.secret
    clean = emulated_device("folder", device_file=day.device_file, secret=secret, on=mirror)
    sync(day.desk, clean)
    clean.stop()
    expected = assert_everything_from_both_sides_is_there(day)

    for offset in offsets(1000, "folder"):  # per mille of the answer
        for entry in device.mailbox.iterdir():
            entry.unlink()
        evening.restore()
        # The device is away: the desktop leaves its answer in the folder...
        result = salesmgr("sync", day.desk, "--from", mirror, env=device.env)
        assert result.exit_code == 0, result.output
        [answer] = device.mailbox.glob("answer-*")
        data = answer.read_bytes()
        cut_at = offset * len(data) // 1000
        answer.write_bytes(data[:cut_at])  # ...and only its first bytes reach the device.
        again = emulated_device("folder", device_file=day.device_file, secret=secret, on=mirror)
        sync(day.desk, again)
        again.stop()
        desktop = assert_everything_from_both_sides_is_there(day)
        assert business(desktop) == business(expected), f"answer cut after {cut_at} bytes"
