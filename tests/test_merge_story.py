"""The merge contract, as the salesperson and the assistant live it (issue: record-level sync)."""

from __future__ import annotations

import shutil
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from salesmgr import storage
from salesmgr.cli.group import cli
from salesmgr.errors import MergeError
from salesmgr.merge.engine import merge_files
from salesmgr.model.pipeline import Pipeline, Sources, use_sources
from salesmgr.plugin.manager import Registry, get_registry, make_plugin_manager, use_registry
from salesmgr.testing.compare import user_data

REG = get_registry()
OPP = REG.record_type("opportunity")
ACT = REG.record_type("activity")


class SkewableClock(Sources):
    """Real ids, and a wall clock each test can set (a device a year off, exact ties...)."""

    def __init__(self) -> None:
        self.now = 1_800_000_000_000

    def now_ms(self) -> int:
        self.now += 1
        return self.now


@pytest.fixture
def clock():
    fake = SkewableClock()
    previous = use_sources(fake)
    yield fake
    use_sources(previous)


@pytest.fixture
def office(tmp_path, clock):
    """The desktop file with three opportunities, copied to the device the old way (a file copy)."""
    desktop = Pipeline.create("Northwind", "ann", "EUR")
    ids = {}
    for company, title, extra in [
        ("Acme", "Widgets", {"phone": "555-0100", "notes": "Met at the fair.\n"}),
        ("Beta", "Gadgets", {"value": "5000"}),
        ("Gamma", "Sprockets", {}),
    ]:
        record, _ = desktop.add(OPP, {"company": company, "title": title, **extra})
        ids[company] = record.id
    storage.save(desktop, tmp_path / "desktop.smp")
    shutil.copy(tmp_path / "desktop.smp", tmp_path / "device.smp")
    desk = storage.load(tmp_path / "desktop.smp")
    dev = storage.load(tmp_path / "device.smp")
    return desk, dev, ids


def test_the_seed_story_road_and_office_then_merge(office):
    desk, dev, ids = office
    # On the road: stage changes, notes added, calls logged, a new opportunity, a deletion.
    dev.update(OPP, ids["Acme"], {"stage": "Negotiation",
                                  "notes": "Met at the fair.\nWants a quote by Friday.\n"})
    call, _ = dev.add(ACT, {"opportunity_id": ids["Acme"], "kind": "call", "summary": "quote"})
    lead, _ = dev.add(OPP, {"company": "Delta", "title": "Conveyors"})
    dev.delete(ids["Gamma"])
    # In the office, at the same time: new opportunities, a corrected phone, a value changed.
    new1, _ = desk.add(OPP, {"company": "Epsilon", "title": "Belts"})
    new2, _ = desk.add(OPP, {"company": "Zeta", "title": "Gears"})
    desk.update(OPP, ids["Acme"], {"phone": "555-0199",
                                   "notes": "Assistant: new phone from switchboard.\n"
                                            "Met at the fair.\n"})
    desk.update(OPP, ids["Beta"], {"value": "6500"})

    result = merge_files(desk, dev)

    for side in (desk, dev):
        acme = side.records[ids["Acme"]].values
        assert acme["stage"] == "Negotiation" and acme["phone"] == "555-0199"
        assert acme["notes"] == (
            "Assistant: new phone from switchboard.\nMet at the fair.\nWants a quote by Friday.\n"
        )
        assert side.records[ids["Beta"]].values["value"] == "6500.00"
        assert side.records[ids["Gamma"]].deleted
        assert {call.id, lead.id, new1.id, new2.id} <= {r.id for r in side.live()}
    assert user_data(desk) == user_data(dev)
    assert result.report.conflicts == []
    assert (result.report.to_desktop.added, result.report.to_desktop.deleted) == (2, 1)
    assert result.report.to_device.added == 2
    assert merge_files(desk, dev).report.changes_nothing


def test_a_copied_file_becomes_a_replica_of_its_own(office):
    desk, dev, _ = office
    assert desk.pipeline_id == dev.pipeline_id
    assert desk.replica_id != dev.replica_id
    assert dev.knowledge == desk.knowledge  # the copy knows everything written before it


def test_same_field_same_value_on_both_sides_is_no_conflict(office):
    desk, dev, ids = office
    desk.update(OPP, ids["Beta"], {"stage": "Won"})
    dev.update(OPP, ids["Beta"], {"stage": "won"})
    assert merge_files(desk, dev).report.conflicts == []


def test_a_true_conflict_goes_to_the_latest_change_and_the_loser_is_logged(office, clock):
    desk, dev, ids = office
    desk.update(OPP, ids["Beta"], {"value": "7000"})
    clock.now += 60_000
    dev.update(OPP, ids["Beta"], {"value": "8000"})
    result = merge_files(desk, dev)
    assert desk.records[ids["Beta"]].values["value"] == "8000.00"
    [entry] = result.report.conflicts
    assert (entry.desktop_value, entry.device_value, entry.winner) == ("7000.00", "8000.00",
                                                                       "device")
    logged = dev.records[entry.id].values
    assert logged["desktop_value"] == "7000.00" and logged["status"] == "decided"


def test_a_device_clock_a_year_off_still_has_every_edit_merged(office, clock):
    desk, dev, ids = office
    clock.now -= 365 * 24 * 3600 * 1000  # the device thinks it is last year
    dev.update(OPP, ids["Acme"], {"stage": "Proposal"})
    clock.now += 2 * 365 * 24 * 3600 * 1000
    desk.update(OPP, ids["Beta"], {"contact": "Bob"})
    merge_files(desk, dev)
    assert desk.records[ids["Acme"]].values["stage"] == "Proposal"
    assert dev.records[ids["Beta"]].values["contact"] == "Bob"


def test_overlapping_note_edits_are_a_conflict_but_additions_survive(office):
    desk, dev, ids = office
    desk.update(OPP, ids["Acme"], {"notes": "Met at the trade fair.\n"})
    dev.update(OPP, ids["Acme"], {"notes": "Met at the fair in May.\n"})
    result = merge_files(desk, dev)
    assert [c.field for c in result.report.conflicts] == ["notes"]


def test_activities_from_both_sides_are_all_kept(office):
    desk, dev, ids = office
    a, _ = desk.add(ACT, {"opportunity_id": ids["Acme"], "kind": "email", "summary": "sent"})
    b, _ = dev.add(ACT, {"opportunity_id": ids["Acme"], "kind": "meeting", "summary": "met"})
    merge_files(desk, dev)
    assert {a.id, b.id} <= {r.id for r in dev.activities_of(ids["Acme"])}


def test_deleted_on_one_side_and_edited_on_the_other_comes_back_with_the_edit(office):
    desk, dev, ids = office
    desk.delete(ids["Gamma"])
    dev.update(OPP, ids["Gamma"], {"stage": "Proposal"})
    result = merge_files(desk, dev)
    gamma = desk.records[ids["Gamma"]]
    assert not gamma.deleted and gamma.values["stage"] == "Proposal"
    assert [c.field for c in result.report.conflicts] == ["_deleted"]


def test_a_deletion_stays_deleted_on_later_merges(office, tmp_path):
    desk, dev, ids = office
    dev.delete(ids["Gamma"])
    merge_files(desk, dev)
    third = storage.decode(storage.encode(desk), "copy")
    third.fork("elsewhere:/laptop.smp")
    desk.update(OPP, ids["Acme"], {"stage": "Won"})
    for _ in range(3):
        merge_files(desk, dev)
        merge_files(third, dev)
        merge_files(desk, third)
    assert all(p.records[ids["Gamma"]].deleted for p in (desk, dev, third))


@pytest.mark.parametrize(
    "policy, winner",
    [("desktop-wins", "7000.00"), ("device-wins", "8000.00"), ("manual", "7000.00")],
)
def test_side_policies(office, policy, winner):
    desk, dev, ids = office
    desk.update(OPP, ids["Beta"], {"value": "7000"})
    dev.update(OPP, ids["Beta"], {"value": "8000"})
    result = merge_files(desk, dev, policy=policy)
    assert dev.records[ids["Beta"]].values["value"] == winner
    assert [c.status for c in result.report.conflicts] == [
        "open" if policy == "manual" else "decided"
    ]


def test_newest_record_wins_whole(office, clock):
    desk, dev, ids = office
    desk.update(OPP, ids["Beta"], {"value": "7000", "contact": "Desk"})
    clock.now += 60_000
    dev.update(OPP, ids["Beta"], {"value": "8000"})
    result = merge_files(desk, dev, policy="newest-record")
    beta = desk.records[ids["Beta"]].values
    assert beta["value"] == "8000.00"
    assert "contact" not in beta  # the older record's change lost too, and logged
    assert {c.field for c in result.report.conflicts} == {"value", "contact"}


def test_keep_both_duplicates_a_conflicting_record(office):
    desk, dev, ids = office
    desk.update(OPP, ids["Beta"], {"value": "7000"})
    dev.update(OPP, ids["Beta"], {"value": "8000"})
    merge_files(desk, dev, policy="keep-both")
    betas = sorted(r.values["value"] for r in desk.live("opportunity")
                   if r.values["company"] == "Beta")
    assert betas == ["7000.00", "8000.00"]
    assert user_data(desk) == user_data(dev)


def test_unrelated_pipelines_are_refused_unless_combined():
    a = Pipeline.create("A")
    b = Pipeline.create("B")
    a.add(OPP, {"company": "Acme", "title": "Widgets"})
    b.add(OPP, {"company": "ACME", "title": "widgets"})
    b.add(OPP, {"company": "Other", "title": "Thing"})
    with pytest.raises(MergeError, match="--combine"):
        merge_files(a, b)
    result = merge_files(a, b, combine=True)
    assert len(list(a.live("opportunity"))) == 3
    assert [label for _, _, label in result.report.duplicates] == ["ACME / widgets"]
    assert user_data(a) == user_data(b)


# --- through the command line ----------------------------------------------------------------


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_merge_conflicts_and_resolve_from_the_command_line(tmp_path):
    desk, dev = str(tmp_path / "desk.smp"), str(tmp_path / "dev.smp")
    assert run("init", desk, "--name", "Pipe")[0] == 0
    _, opp, _ = run("add", desk, "--company", "Acme", "--title", "Widgets")
    opp = opp.strip()
    shutil.copy(desk, dev)
    run("edit", desk, opp, "--value", "100")
    run("edit", dev, opp, "--value", "200")
    before = Path(desk).read_bytes(), Path(dev).read_bytes()
    code, out, _ = run("merge", desk, dev, "--dry-run")
    assert code == 0 and "dry run" in out
    assert (Path(desk).read_bytes(), Path(dev).read_bytes()) == before

    code, out, _ = run("merge", desk, dev, "--policy", "manual", "--json")
    assert code == 0
    import json

    report = json.loads(out)
    assert report["conflicts"][0]["status"] == "open"
    code, out, _ = run("conflicts", dev, "--json")
    [conflict] = json.loads(out)
    assert (conflict["desktop_value"], conflict["device_value"]) == ("100.00", "200.00")
    assert run("resolve", dev, conflict["id"][:8], "--take", "device")[0] == 0
    assert json.loads(run("conflicts", dev, "--json")[1]) == []
    run("merge", desk, dev)
    assert json.loads(run("show", desk, opp, "--json")[1])["value"] == "200.00"
    code, out, _ = run("merge", desk, dev, "--json")
    assert json.loads(out)["to_desktop"] == {"added": 0, "changed": 0, "deleted": 0}


def test_merge_refuses_unrelated_files_with_one_line(tmp_path):
    a, b = str(tmp_path / "a.smp"), str(tmp_path / "b.smp")
    run("init", a)
    run("init", b)
    before = Path(a).read_bytes()
    result = CliRunner().invoke(cli, ["merge", a, b])
    assert result.exit_code != 0
    assert "--combine" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert Path(a).read_bytes() == before


# --- a third-party policy, installed through an entry point ------------------------------


def test_a_policy_plugin_installed_by_entry_point(tmp_path, monkeypatch, office):
    site = tmp_path / "site"
    (site / "bigdeal_policy").mkdir(parents=True)
    (site / "bigdeal_policy" / "__init__.py").write_text(textwrap.dedent('''
        from decimal import Decimal
        from salesmgr import hookimpl
        from salesmgr.merge.engine import FieldOutcome
        from salesmgr.plugin.interfaces import MergePolicy

        class HigherValueWins(MergePolicy):
            name = "higher-value"
            help = "the side with the bigger deal value wins every conflict of the record"

            def resolve(self, conflict):
                def value(record):
                    return Decimal(record.values.get("value", "0"))
                desk, dev = conflict.desktop_record, conflict.device_record
                return FieldOutcome("desktop" if value(desk) >= value(dev) else "device")

        @hookimpl
        def salesmgr_register_policies(register):
            register(HigherValueWins())
    '''))
    dist = site / "bigdeal_policy-1.2.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: bigdeal-policy\nVersion: 1.2.0\n")
    (dist / "entry_points.txt").write_text("[salesmgr]\nbigdeal = bigdeal_policy\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delenv("SALESMGR_DISABLE_PLUGINS", raising=False)
    registry = Registry(make_plugin_manager())
    previous = use_registry(registry)
    try:
        assert registry.plugins["bigdeal"].version == "1.2.0"
        desk, dev, ids = office
        desk.update(OPP, ids["Beta"], {"value": "9000", "contact": "Desk"})
        dev.update(OPP, ids["Beta"], {"value": "100", "contact": "Dev"})
        merge_files(desk, dev, policy="higher-value")
        assert dev.records[ids["Beta"]].values["contact"] == "Desk"
    finally:
        use_registry(previous)
        sys.modules.pop("bigdeal_policy", None)


def test_a_device_restored_from_a_backup_loses_nothing_it_did_since(office):
    """The classic tools lost exactly this: a restored device mints version numbers again.

    Detected when the restored device knows less than it did at the last merge (here: it lost
    three writes and made two since); see docs/sync-model.md for the case that is not."""
    import copy

    desk, dev, ids = office
    merge_files(desk, dev)
    backup = copy.deepcopy(dev)
    dev.update(OPP, ids["Acme"], {"stage": "Won"})  # made and synced, then the device is wiped
    dev.update(OPP, ids["Acme"], {"probability": "100"})
    dev.update(OPP, ids["Acme"], {"close_date": "2026-12-01"})
    merge_files(desk, dev)
    dev = backup  # restored: its counter is behind what the desktop has seen of it
    dev.update(OPP, ids["Beta"], {"phone": "555-0111"})
    lead, _ = dev.add(OPP, {"company": "Omega", "title": "After the restore"})
    result = merge_files(desk, dev)
    assert desk.records[ids["Beta"]].values["phone"] == "555-0111"
    assert lead.id in desk.records and not desk.records[lead.id].deleted
    assert desk.records[ids["Acme"]].values["stage"] == "Won"
    assert desk.records[ids["Acme"]].values["probability"] == "100"
    assert user_data(desk) == user_data(dev)
    assert any("restored" in w for w in result.report.warnings)
    assert merge_files(desk, dev).report.changes_nothing
