"""The rules every sync session follows, whatever carries it (salesmgr.sync.rules).

The live link, the mailbox folder and ``salesmgr merge`` each have end-to-end specifications of
their own; these pin the shared rules down once, with both sides in memory.
"""

from __future__ import annotations

import pytest

from salesmgr.errors import MassChange, MergeError, SessionError
from salesmgr.merge.engine import delta_since
from salesmgr.model.pipeline import Pipeline, new_id
from salesmgr.plugin.manager import get_registry
from salesmgr.sync import rules
from salesmgr.sync.rules import DesktopHeader, DeviceReport, DeviceTarget


def pipeline_with(count: int, name: str = "North") -> Pipeline:
    pipeline = Pipeline(new_id(), name, replica_id=new_id())
    opportunity = get_registry().record_type("opportunity")
    for number in range(count):
        pipeline.add(opportunity, {"company": f"Company {number}", "title": "Scanners"})
    return pipeline


def report_of(device: Pipeline, *, agreement: dict[str, int] | None = None) -> DeviceReport:
    return DeviceReport(
        device.pipeline_id, device.replica_id, device.name, rules.live_count(device),
        dict(device.knowledge), agreement, blank=not device.records,
    )


def header_of(desktop: Pipeline) -> DesktopHeader:
    return DesktopHeader(
        desktop.pipeline_id, desktop.replica_id, desktop.name, desktop.owner, desktop.currency,
        dict(desktop.extra), dict(desktop.knowledge),
    )


def copy_of(pipeline: Pipeline) -> Pipeline:
    """Another replica of the same pipeline, holding the same records (a loaded device)."""
    twin = Pipeline(pipeline.pipeline_id, pipeline.name, replica_id=new_id())
    twin.records = {i: r.copy() for i, r in pipeline.records.items()}
    twin.knowledge = dict(pipeline.knowledge)
    twin.peers[pipeline.replica_id] = dict(pipeline.knowledge)
    pipeline.peers[twin.replica_id] = dict(twin.knowledge)
    return twin


# --- who is who ------------------------------------------------------------------------------


def test_a_device_of_another_pipeline_is_refused_naming_both() -> None:
    desktop, device = pipeline_with(1, "North"), pipeline_with(1, "South")
    with pytest.raises(SessionError, match="the device holds another pipeline, 'South'") as no:
        rules.check_device(desktop, report_of(device))
    assert "the desktop's is 'North'" in str(no.value)


def test_a_blank_device_of_another_pipeline_is_no_refusal() -> None:
    rules.check_device(pipeline_with(1), report_of(Pipeline(new_id(), replica_id=new_id())))


def test_the_very_same_replica_is_refused_live_and_local() -> None:
    desktop = pipeline_with(1)
    same = report_of(desktop)
    with pytest.raises(SessionError, match="the device holds this very replica"):
        rules.check_device(desktop, same)
    with pytest.raises(MergeError, match="both files are the same replica"):
        rules.merge_local(desktop, desktop, save_desktop=print, save_device=print)


# --- slow syncs --------------------------------------------------------------------------------


def test_why_a_sync_is_slow() -> None:
    desktop = pipeline_with(2)
    device = copy_of(desktop)
    assert rules.slow_reason(desktop, report_of(device, agreement=desktop.knowledge)) == ""
    blank = Pipeline(new_id(), replica_id=new_id())
    assert rules.slow_reason(desktop, report_of(blank)) == rules.DEVICE_BLANK
    stranger = copy_of(desktop)
    del desktop.peers[stranger.replica_id]
    assert rules.slow_reason(desktop, report_of(stranger)) == rules.FIRST_MEETING

    # The device knows less of itself than the desktop does: restored from a backup.
    device.tick()
    desktop.knowledge[device.replica_id] = device.counter + 5
    assert rules.slow_reason(desktop, report_of(device)) == rules.DEVICE_RESTORED


def test_a_restored_desktop_forks_unless_it_is_a_dry_run() -> None:
    desktop = pipeline_with(2)
    device = copy_of(desktop)
    desktop.knowledge[desktop.replica_id] -= 1  # the device has seen a version the file forgot
    slow = rules.slow_reason(desktop, report_of(device, agreement=device.peers[desktop.replica_id]))
    assert slow == rules.DESKTOP_RESTORED
    old = desktop.replica_id
    assert rules.fork_if_restored(desktop, slow, dry_run=True) == ()
    assert desktop.replica_id == old
    assert rules.fork_if_restored(desktop, slow, dry_run=False) == (old,)
    assert desktop.replica_id != old
    assert rules.wanted(desktop, slow) == {}


# --- the brake ---------------------------------------------------------------------------------


def deleting_all_but(keep: int) -> tuple[Pipeline, rules.DesktopMerge]:
    """A desktop that deleted all but ``keep`` of 20 records, merged into a loaded device."""
    desktop = pipeline_with(20)
    device = copy_of(desktop)
    for record_id in list(desktop.records)[keep:]:
        desktop.delete(record_id)
    report = report_of(desktop, agreement=desktop.knowledge)
    back = rules.merge_on_desktop(
        device, delta_since(desktop, device.knowledge, get_registry()), report,
        untrusted=(), policy="field-merge", dry_run=True, allow_mass_change=False,
        registry=get_registry(), events=lambda stage, **info: None,
    )
    return device, back


def test_the_brake_stops_a_merge_that_changes_more_than_half_of_a_side() -> None:
    _, done = deleting_all_but(5)  # 15 of 20 records deleted
    assert done.mass_change is not None and "15 of the 20 records" in done.mass_change
    with pytest.raises(MassChange, match="15 of the 20"):
        rules.brake(done.merged, 20, 20, dry_run=False, allow=False)
    assert rules.brake(done.merged, 20, 20, dry_run=False, allow=True) is None
    assert rules.brake(done.merged, 20, None, dry_run=False, allow=False) is None  # was blank


def test_the_brake_lets_half_or_less_through() -> None:
    _, done = deleting_all_but(10)  # 10 of 20: not more than half
    assert done.mass_change is None


def test_a_merge_brake_in_salesmgr_merge_is_the_same_brake() -> None:
    desktop = pipeline_with(20)
    device = copy_of(desktop)
    for record_id in list(device.records)[5:]:
        device.delete(record_id)
    saved: list[Pipeline] = []
    with pytest.raises(MassChange, match="15 of the 20 records on the desktop"):
        rules.merge_local(desktop, device, save_desktop=saved.append, save_device=saved.append)
    assert saved == []


# --- commit order and the device side ----------------------------------------------------------


def test_only_a_side_whose_versions_moved_is_saved_and_the_desktop_first() -> None:
    desktop = pipeline_with(3)
    device = copy_of(desktop)
    saved: list[str] = []
    done = rules.merge_local(
        desktop, device, save_desktop=lambda p: saved.append("desktop"),
        save_device=lambda p: saved.append("device"),
    )
    assert (done.saved_desktop, done.saved_device, saved) == (False, False, [])
    device.add(get_registry().record_type("opportunity"), {"company": "New", "title": "Lead"})
    done = rules.merge_local(
        desktop, device, save_desktop=lambda p: saved.append("desktop"),
        save_device=lambda p: saved.append("device"),
    )
    assert saved[0] == "desktop" and done.saved_desktop


def test_a_load_over_changes_no_desktop_has_seen_is_refused() -> None:
    desktop = pipeline_with(2)
    device = copy_of(desktop)
    target = DeviceTarget(device, header_of(desktop))
    rules.check_desktop(target, load=True, registry=get_registry())  # nothing unseen
    opportunity = get_registry().record_type("opportunity")
    device.add(opportunity, {"company": "Met", "title": "On the road"})
    with pytest.raises(SessionError, match="1 changed record the desktop has not seen"):
        rules.check_desktop(DeviceTarget(device, header_of(desktop)), load=True,
                            registry=get_registry())


def test_a_device_target_keeps_the_devices_identity_and_counter() -> None:
    desktop = pipeline_with(2)
    device = copy_of(desktop)
    device.tick()
    fresh = DeviceTarget(device, header_of(desktop)).fresh()
    assert fresh.replica_id == device.replica_id and fresh.records == {}
    assert fresh.knowledge[device.replica_id] == device.counter
    stranger = DeviceTarget(pipeline_with(1, "South"), header_of(desktop))
    assert stranger.fresh().replica_id not in (desktop.replica_id, stranger.held.replica_id)
