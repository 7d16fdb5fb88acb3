"""Files that are valid in form but hostile in content: a far-future clock, a conflict record
without what resolving it needs.  Each gets a one-line error, never a traceback."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from helpers import desktop_file, one_error_line, peak_memory_of, salesmgr

from salesmgr import storage
from salesmgr.model.pipeline import MAX_CLOCK_MS, MIN_CLOCK_MS, Dot
from salesmgr.plugin.manager import get_registry
from salesmgr.plugins.transport_folder import FolderMailbox
from salesmgr.sync.device_file import DeviceFile
from salesmgr.sync.mailbox import DesktopDrops, DeviceDrops
from salesmgr.sync.wire import auth, drops
from salesmgr.sync.wire.drops import DropKind

SECRET = "hostile-files-test-secret-Vb62nQe"


def stamped(path: Path, at: int, *, override: bool) -> str:
    """Stamp a write of one record of ``path`` with ``at`` (its creation, or a later edit)."""
    pipeline = storage.load(path)
    record = pipeline.records[sorted(pipeline.records)[0]]
    if override:
        record.field_dots["stage"] = Dot(record.dot.counter, record.dot.replica, at)
    else:
        record.dot = Dot(record.dot.counter, record.dot.replica, at)
    storage.save(pipeline, path)  # the format has room for it: a writer of another make
    return record.id


@pytest.mark.parametrize("override", [False, True])
@pytest.mark.parametrize("at", [MAX_CLOCK_MS + 1, 2**63 - 1, MIN_CLOCK_MS - 1, -(2**63)])
def test_a_clock_outside_the_calendar_is_refused_when_read(
    tmp_path: Path, at: int, override: bool
) -> None:
    path = desktop_file(tmp_path)
    record = stamped(path, at, override=override)
    before = path.read_bytes()
    for args in (("list", path, "--json"), ("show", path, record), ("conflicts", path, "--all")):
        result = salesmgr(*args)
        assert result.exit_code == 3, result.output
        line = one_error_line(result)
        assert f"stamped {at} ms, outside the years 1 to 9999" in line
    assert path.read_bytes() == before


@pytest.mark.parametrize("at", [MIN_CLOCK_MS, 0, MAX_CLOCK_MS])
def test_every_clock_inside_the_calendar_is_read_and_shown(tmp_path: Path, at: int) -> None:
    path = desktop_file(tmp_path)
    record = stamped(path, at, override=False)
    shown = salesmgr("show", path, record)
    assert shown.exit_code == 0, shown.output
    assert Dot(1, "r", at).when() in shown.output


def test_a_clock_out_of_the_calendar_is_shown_as_a_number_not_a_crash() -> None:
    assert Dot(1, "r", 2**62).when() == f"{2**62} ms (out of the calendar)"


@pytest.mark.parametrize("missing", ["record_id", "field"])
def test_resolving_a_conflict_record_without_its_target_is_a_one_line_error(
    tmp_path: Path, missing: str
) -> None:
    path = desktop_file(tmp_path)
    pipeline = storage.load(path)
    target = sorted(pipeline.records)[0]
    values = {"record_id": target, "record_kind": "opportunity", "field": "stage",
              "desktop_value": "Won", "device_value": "Lost", "status": "open"}
    conflict, _ = pipeline.add(get_registry().record_type("conflict"), values)
    del conflict.values[missing]  # as another writer (or a sync) may leave it
    storage.save(pipeline, path)
    before = path.read_bytes()
    result = salesmgr("resolve", path, conflict.id, "--take", "desktop")
    assert result.exit_code == 2
    assert f"names no {missing}: it cannot be resolved" in one_error_line(result)
    assert path.read_bytes() == before


# --- huge files: sizes are checked before anything large is read -------------------------------

BIG = 256 << 20  # a sparse file: it costs no disk, and reading it whole would cost this much memory


def sparse(path: Path, head: bytes, size: int = BIG) -> None:
    path.write_bytes(head)
    os.truncate(path, size)
    past = time.time() - 60  # not still being copied in
    os.utime(path, (past, past))


@pytest.mark.parametrize("case", ["zeros", "drop-envelope", "pipeline-envelope"])
def test_a_huge_entry_in_the_folder_is_refused_before_it_is_read(tmp_path: Path, case: str) -> None:
    desk = desktop_file(tmp_path)
    box = tmp_path / "Mirror"
    box.mkdir()
    name = f"offer-{'ab' * 16}.smdrop"
    if case == "zeros":
        sparse(box / name, b"")
    elif case == "drop-envelope":  # a real drop's envelope in front of a gigantic tail
        offer = drops.Offer(drops.new_drop_id(), 1, None, drops.new_drop_id(), None, "", 0, {},
                            None, {}, [], blank=True)
        sparse(box / drops.drop_name(DropKind.OFFER, offer.drop_id),
               drops.seal(offer, auth.secret_bytes(SECRET)))
    else:  # a real pipeline file's envelope, the body grown far past what it declares
        sparse(box / "handheld.pipe", desk.read_bytes())
    before = desk.read_bytes()
    desktop = DesktopDrops(FolderMailbox(str(box)), SECRET, timeout=2.0, settle=0.0)
    started = time.monotonic()
    peak = peak_memory_of(
        lambda: desktop.sync(storage.load(desk), save=lambda p: storage.save(p, desk))
    )
    assert peak < 16 << 20, f"{peak} bytes of memory for a {BIG}-byte entry"
    assert time.monotonic() - started < 5
    assert desk.read_bytes() == before
    device = DeviceDrops(FolderMailbox(str(box)), SECRET, DeviceFile(tmp_path / "device.pipe"),
                         settle=0.0)
    assert peak_memory_of(device.step) < 16 << 20
