"""``folder://`` — the ActiveSync-style shared folder, store and forward.

The device leaves an offer in the folder, ``salesmgr sync --from folder://PATH`` answers it,
the device takes the answer.  The story runs with the emulator in a subprocess watching the
folder; the rules (damage, replay, names, links, secrets, interruptions) run in process, where
one look of the device is one call.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import content, desktop_file, one_error_line, salesmgr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from salesmgr import storage
from salesmgr.emulator.process import EmulatorProcess, emulator_command, mailbox_settled
from salesmgr.errors import SalesmgrError, SyncError
from salesmgr.merge.engine import merge_files
from salesmgr.model.pipeline import Pipeline
from salesmgr.plugin.interfaces import Mail, Opened
from salesmgr.plugin.manager import get_registry
from salesmgr.plugins.transport_folder import FolderMailbox, folder_of
from salesmgr.sync.device_file import DeviceFile
from salesmgr.sync.mailbox import APPLIED, DesktopDrops, DeviceDrops, DeviceEvent
from salesmgr.sync.results import DropResult
from salesmgr.sync.wire import auth, drops
from salesmgr.sync.wire.drops import Answer, DropKind, Load, Offer
from salesmgr.testing.compare import user_data

SECRET = "mirrored-folder-secret-Hw3kP7"
DOCS = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"


# --- helpers -------------------------------------------------------------------------------------


def live_companies(path: Path) -> list[str]:
    return sorted(
        values["company"] for kind, deleted, values in content(path).values()
        if kind == "opportunity" and not deleted
    )


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def edit(path: Path, change: Any) -> None:
    pipeline = storage.load(path)
    change(pipeline, get_registry().record_type("opportunity"))
    storage.save(pipeline, path)


def url_of(folder: Path) -> str:
    return f"folder://{folder}"


def drop_entries(folder: Path, kind: str) -> list[str]:
    return sorted(p.name for p in folder.glob(f"{kind}-*.smdrop"))


def make_old(path: Path) -> None:
    """As if the entry had arrived a while ago (it is not still being copied in)."""
    past = time.time() - 60
    os.utime(path, (past, past))


@dataclass
class Site:
    """A desktop file, a device file and the mirrored folder between them, driven in process."""

    desk: Path
    device: Path
    box: Path
    secret: str = SECRET
    settle: float = 0.0

    @property
    def mailbox(self) -> FolderMailbox:
        return FolderMailbox(folder_of(url_of(self.box)))

    def device_side(self, secret: str | None = None) -> DeviceDrops:
        return DeviceDrops(
            self.mailbox, secret or self.secret, DeviceFile(self.device), settle=self.settle
        )

    def look(self, secret: str | None = None) -> list[DeviceEvent]:
        """One look of the device into the folder."""
        return self.device_side(secret).step()

    def desktop_side(self, secret: str | None = None, timeout: float = 5.0) -> DesktopDrops:
        return DesktopDrops(self.mailbox, secret or self.secret, timeout=timeout,
                            settle=self.settle)

    def sync(self, **options: Any) -> list[DropResult]:
        return self.desktop_side().sync(
            storage.load(self.desk), save=lambda p: storage.save(p, self.desk), **options
        )

    def load(self) -> DropResult:
        return self.desktop_side().load(storage.load(self.desk))

    def round(self) -> list[DropResult]:
        """The device offers, the desktop answers, the device commits."""
        self.look()
        results = self.sync()
        self.look()
        return results


@pytest.fixture
def site(tmp_path: Path) -> Site:
    box = tmp_path / "Mirror"
    box.mkdir()
    return Site(desktop_file(tmp_path), tmp_path / "device.pipe", box)


@pytest.fixture
def loaded(site: Site) -> Site:
    """A device loaded through the folder in the morning."""
    site.load()
    events = site.look()
    assert [e.kind for e in events] == ["loaded", "offered"]
    assert content(site.device) == content(site.desk)
    return site


# --- the story, with the emulator in a subprocess watching the folder ----------------------------


class Emulator(EmulatorProcess):
    """``salesmgr emulator serve DEVICE --on folder://PATH`` in a subprocess."""

    def __init__(self, work: Path, device: Path, box: Path, *args: str,
                 secret: str = SECRET) -> None:
        super().__init__(emulator_command(device, url_of(box), extra=args), work, secret=secret)

    def wait_for(self, text: str, count: int = 1, stream: str = "stdout") -> None:
        deadline = time.monotonic() + 15
        while getattr(self, stream).count(text) < count:
            if time.monotonic() > deadline or not self.running():
                raise AssertionError(f"no {text!r} from the emulator: {self.stdout}{self.stderr}")
            time.sleep(0.02)


@pytest.fixture
def emulators() -> Iterator[list[Emulator]]:
    started: list[Emulator] = []
    yield started
    for emulator in started:
        emulator.stop()


def test_the_seed_story_through_a_mirrored_folder(
    tmp_path: Path, emulators: list[Emulator]
) -> None:
    desk = desktop_file(tmp_path)
    device = tmp_path / "device.pipe"  # a new device: nothing loaded yet
    box = tmp_path / "Mirror"
    box.mkdir()
    # Morning: the desktop leaves the pipeline in the folder; the device takes it when cradled.
    loaded = salesmgr("load", desk, "--to", url_of(box), "--secret", SECRET)
    assert loaded.exit_code == 0, loaded.output
    assert "left the whole pipeline for the device: 5 records in load-" in loaded.output
    assert not device.exists()
    morning = Emulator(tmp_path, device, box, "--once")
    assert morning.process.wait(20) == 0, morning.stderr
    assert morning.stdout.startswith(f"listening on {url_of(box)}\n")
    assert "loaded load-" in morning.stdout and "offered offer-" in morning.stdout
    assert content(device) == content(desk)
    assert drop_entries(box, "load") == [] and len(drop_entries(box, "offer")) == 1

    # The day: on the road (the device is not cradled) and at the office.
    ids = sorted(storage.load(desk).records)
    names = {rid: r.values["company"] for rid, r in storage.load(desk).records.items()}
    assert salesmgr("add", desk, "--company", "Office lead", "--title", "Chairs").exit_code == 0
    assert salesmgr("edit", desk, ids[0], "--stage", "Proposal").exit_code == 0
    assert salesmgr("delete", desk, ids[1]).exit_code == 0
    assert salesmgr("add", device, "--company", "Road lead", "--title", "Desks").exit_code == 0
    assert salesmgr("edit", device, ids[2], "--value", "1200").exit_code == 0
    assert salesmgr("delete", device, ids[3]).exit_code == 0
    assert salesmgr("edit", desk, ids[4], "--notes", "met\ncalled back").exit_code == 0
    assert salesmgr("edit", device, ids[4], "--notes", "visited\nmet").exit_code == 0

    # Evening: the device is cradled and offers its day; the desktop syncs.
    emulators.append(evening := Emulator(tmp_path, device, box))
    evening.wait_for("offered offer-", 1)
    before = (desk.read_bytes(), snapshot(box))
    preview = salesmgr("sync", desk, "--from", url_of(box), "--secret", SECRET, "--dry-run")
    assert preview.exit_code == 0, preview.output
    assert "desktop: 1 added, 2 changed, 1 deleted" in preview.output
    assert "dry run: nothing was written in the folder or to the desktop file" in preview.output
    assert (desk.read_bytes(), snapshot(box)) == before

    synced = salesmgr("sync", desk, "--from", url_of(box), "--secret", SECRET)
    assert synced.exit_code == 0, synced.output
    assert "desktop: 1 added, 2 changed, 1 deleted" in synced.output
    assert "device:  1 added, 2 changed, 1 deleted" in synced.output
    assert re.search(r"left answer-[0-9a-f]{32}\.smdrop for the device", synced.output)
    evening.wait_for("committed answer-")
    assert drop_entries(box, "answer") == []  # taken
    merged = content(desk)
    assert merged == content(device)
    assert live_companies(desk) == sorted(
        [names[ids[0]], names[ids[2]], names[ids[4]], "Office lead", "Road lead"]
    )
    live = {rid: v for rid, (_, deleted, v) in merged.items() if not deleted}
    assert live[ids[0]]["stage"] == "Proposal" and live[ids[2]]["value"] == "1200.00"
    assert live[ids[4]]["notes"] == "visited\nmet\ncalled back"

    # A second sync moves nothing and writes nothing anywhere.
    evening.wait_for("offered offer-", 2)  # the offer after the commit
    before = (desk.read_bytes(), device.read_bytes())
    again = salesmgr("sync", desk, "--from", url_of(box), "--secret", SECRET, "--json")
    assert again.exit_code == 0, again.output
    second = json.loads(again.output)
    assert second["records_received"] == 0 and second["records_sent"] == 0
    assert second["written"] is None
    assert (desk.read_bytes(), device.read_bytes()) == before

    assert evening.stop() == 0
    assert "stopped after 1 sessions (0 failed)" in evening.stdout
    assert content(device) == merged


def test_the_emulator_refuses_a_drop_sealed_with_another_secret(
    tmp_path: Path, emulators: list[Emulator]
) -> None:
    desk = desktop_file(tmp_path)
    box = tmp_path / "Mirror"
    box.mkdir()
    device = tmp_path / "device.pipe"
    not_ours = "not-ours-but-strong-Qm72xLp9"
    assert salesmgr("load", desk, "--to", url_of(box), "--secret", not_ours).exit_code == 0
    before = snapshot(box)
    emulator = Emulator(tmp_path, device, box, "--once")
    assert emulator.process.wait(20) == 7
    assert re.search(
        r"load-[0-9a-f]{32}\.smdrop: failed its authentication check: sealed with another "
        r"pairing secret, or altered; left in place for inspection", emulator.stderr
    )
    assert not device.exists()
    after = snapshot(box)
    assert {k: v for k, v in after.items() if k.startswith("load-")} == before


# --- when the device has settled (what the pytest plugin and the demo wait for) ------------------


def test_settled_means_the_offer_describes_the_device_file_whatever_the_file_times(
    site: Site,
) -> None:
    def settled() -> bool:
        return mailbox_settled(site.box, site.device, SECRET)

    def same_tick(*paths: Path) -> None:
        """Two processes' writes landing in one tick of the file system's clock."""
        for path in paths:
            os.utime(path, ns=(1_900_000_000_000_000_000,) * 2)

    assert not settled()  # nothing offered yet
    site.look()  # a new device offers nothing
    assert settled()
    site.load()
    # The emulator's first offer may well be written after the desktop's load.
    same_tick(*(site.box / n for n in drop_entries(site.box, "offer")),
              *(site.box / n for n in drop_entries(site.box, "load")))
    assert not settled()
    site.look()
    assert settled() and storage.load(site.device).records
    edit(site.device, lambda p, opp: p.add(opp, {"company": "Road", "title": "x"}))
    same_tick(site.device, *(site.box / n for n in drop_entries(site.box, "offer")))
    assert not settled()  # the offer does not hold the new lead yet
    site.look()
    assert settled()
    edit(site.desk, lambda p, opp: p.add(opp, {"company": "Office", "title": "y"}))
    site.sync()
    assert not settled()  # the answer waits
    site.look()
    assert settled()


# --- the desktop side on the command line --------------------------------------------------------


def test_a_site_config_names_the_folder(loaded: Site) -> None:
    (loaded.desk.parent / "salesmgr.toml").write_text(
        f'[sync]\nurl = "{url_of(loaded.box)}"\nsecret-env = "SPRING_SECRET"\n'
    )
    edit(loaded.device, lambda p, opp: p.add(opp, {"company": "Road", "title": "x"}))
    loaded.look()
    result = salesmgr("sync", loaded.desk, env={"SPRING_SECRET": SECRET})
    assert result.exit_code == 0, result.output
    loaded.look()
    assert "Road" in live_companies(loaded.desk) and content(loaded.desk) == content(loaded.device)


def test_an_empty_folder_or_a_missing_one_is_a_one_line_error(site: Site) -> None:
    before = site.desk.read_bytes()
    empty = salesmgr("sync", site.desk, "--from", url_of(site.box), "--secret", SECRET)
    assert empty.exit_code == 7
    assert "nothing to sync in folder://" in one_error_line(empty)
    missing = salesmgr("sync", site.desk, "--from", url_of(site.box / "nope"), "--secret", SECRET)
    assert missing.exit_code == 7
    assert "no such folder" in one_error_line(missing)
    assert site.desk.read_bytes() == before and os.listdir(site.box) == []


def test_faults_are_for_stream_transports(tmp_path: Path) -> None:
    box = tmp_path / "Mirror"
    box.mkdir()
    result = salesmgr("emulator", "serve", tmp_path / "d.pipe", "--on", url_of(box),
                      "--secret", SECRET, "--fault", "disconnect-after=10")
    assert result.exit_code == 7
    assert "folder:// has none" in one_error_line(result)


def test_a_first_sync_fills_a_new_device_without_a_load(site: Site) -> None:
    site.look()  # a new device offers that it holds nothing
    (offer,) = drop_entries(site.box, "offer")
    results = site.sync()
    assert results[0].slow == "the device holds no pipeline yet; it is loaded again"
    site.look()
    assert content(site.device) == content(site.desk)


def test_a_device_holding_another_pipeline_is_refused_and_nothing_changes(
    loaded: Site,
) -> None:
    other = desktop_file(loaded.desk.parent, name="Autumn")
    before = (other.read_bytes(), snapshot(loaded.box))
    result = salesmgr("sync", other, "--from", url_of(loaded.box), "--secret", SECRET)
    assert result.exit_code == 7
    assert "the device holds another pipeline, 'Spring'" in one_error_line(result)
    assert (other.read_bytes(), snapshot(loaded.box)) == before


def test_a_mass_change_stops_before_anything_is_written(tmp_path: Path) -> None:
    box = tmp_path / "Mirror"
    box.mkdir()
    site = Site(desktop_file(tmp_path, count=20), tmp_path / "device.pipe", box)
    site.load()
    site.look()
    edit(site.device, lambda p, opp: [p.delete(r) for r in sorted(p.records)[:15]])
    site.look()
    before = (site.desk.read_bytes(), snapshot(box))
    result = salesmgr("sync", site.desk, "--from", url_of(box), "--secret", SECRET)
    assert result.exit_code == 6
    assert "would delete 15 of the 20 records on the desktop" in one_error_line(result)
    assert (site.desk.read_bytes(), snapshot(box)) == before
    forced = salesmgr("sync", site.desk, "--from", url_of(box), "--secret", SECRET,
                      "--allow-mass-change")
    assert forced.exit_code == 0, forced.output
    assert len(live_companies(site.desk)) == 5


# --- load ---------------------------------------------------------------------------------------


def test_load_onto_unsynced_changes_is_refused_by_the_desktop_and_by_the_device(
    loaded: Site,
) -> None:
    edit(loaded.device, lambda p, opp: p.add(opp, {"company": "Road", "title": "unsynced"}))
    loaded.look()  # the offer shows the change
    before = snapshot(loaded.box)
    refused = salesmgr("load", loaded.desk, "--to", url_of(loaded.box), "--secret", SECRET)
    assert refused.exit_code == 7
    assert "the device holds 1 changed record this desktop has not seen" in one_error_line(
        refused
    )
    assert snapshot(loaded.box) == before

    # The offer can be older than the device: then the device itself refuses, with a drop.
    edit(loaded.device, lambda p, opp: p.add(opp, {"company": "Road 2", "title": "unsynced"}))
    offers = drop_entries(loaded.box, "offer")
    for name in offers:
        (loaded.box / name).unlink()  # the mirroring tool has not copied the offer yet
    assert loaded.load().written.startswith("load-")
    device_before = loaded.device.read_bytes()
    events = loaded.look()
    assert [e.kind for e in events[:1]] == ["refused"]
    assert "the device holds 2 changed records the desktop has not seen; sync first" in (
        events[0].text
    )
    assert loaded.device.read_bytes() == device_before
    assert len(drop_entries(loaded.box, "refusal")) == 1
    assert loaded.look() == []  # refused once, not at every look

    # The next sync tells the user, clears the refusal away, and brings both sides together.
    results = loaded.sync()
    assert any("the device refused load-" in n for n in results[0].notices)
    assert drop_entries(loaded.box, "refusal") == [] and drop_entries(loaded.box, "load") == []
    loaded.look()
    assert content(loaded.desk) == content(loaded.device)
    assert {"Road", "Road 2"} <= set(live_companies(loaded.desk))


# --- damaged, half copied, replayed ------------------------------------------------------------


def test_a_damaged_offer_is_refused_and_left_in_place(loaded: Site) -> None:
    edit(loaded.device, lambda p, opp: p.add(opp, {"company": "Road", "title": "x"}))
    loaded.look()
    (offer,) = drop_entries(loaded.box, "offer")
    path = loaded.box / offer
    good = path.read_bytes()
    for damaged, problem in [
        (good[:60] + bytes([good[60] ^ 0x01]) + good[61:], "damaged (checksum mismatch)"),
        (good[: len(good) // 2], f"truncated ({len(good) // 2} of {len(good)} bytes)"),
        (b"GIF89a" + good[6:], "not a salesmgr drop"),
    ]:
        path.write_bytes(damaged)
        make_old(path)
        before = (loaded.desk.read_bytes(), snapshot(loaded.box))
        result = salesmgr("sync", loaded.desk, "--from", url_of(loaded.box), "--secret", SECRET)
        assert result.exit_code == 7
        line = one_error_line(result)
        assert f"{offer}: {problem}; left in place for inspection, nothing was changed" in line
        assert (loaded.desk.read_bytes(), snapshot(loaded.box)) == before


def test_a_damaged_answer_is_refused_by_the_device_once_and_left_in_place(loaded: Site) -> None:
    edit(loaded.desk, lambda p, opp: p.add(opp, {"company": "Office", "title": "x"}))
    loaded.sync()
    (answer,) = drop_entries(loaded.box, "answer")
    path = loaded.box / answer
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # the seal's last byte
    path.write_bytes(bytes(data))
    device_before = loaded.device.read_bytes()
    events = loaded.device_side().step()
    assert [e.kind for e in events] == ["damaged"]
    assert "failed its authentication check" in events[0].text
    assert "left in place for inspection" in events[0].text
    assert path.read_bytes() == bytes(data) and loaded.device.read_bytes() == device_before


def test_a_half_copied_drop_is_not_read_until_it_is_whole(loaded: Site) -> None:
    edit(loaded.device, lambda p, opp: p.add(opp, {"company": "Road", "title": "x"}))
    loaded.look()
    (offer,) = drop_entries(loaded.box, "offer")
    path = loaded.box / offer
    whole = path.read_bytes()
    path.write_bytes(whole[:100])  # the mirroring tool is copying it, in place

    def finish_copying() -> None:
        time.sleep(0.4)
        with open(path, "ab") as handle:
            handle.write(whole[100:])

    copier = threading.Thread(target=finish_copying)
    copier.start()
    loaded.settle = 2.0
    started = time.monotonic()
    results = loaded.sync()  # waits for the copy instead of calling it damaged
    copier.join()
    assert 0.3 < time.monotonic() - started < 3
    assert results[0].taken.startswith(offer)
    assert results[0].report is not None and results[0].report.to_desktop.added == 1

    # A copy that never finishes: refused once it has been quiet for the settle time.
    path.write_bytes(whole[:100])
    timed_out = DesktopDrops(loaded.mailbox, SECRET, timeout=0.3, settle=2.0)
    with pytest.raises(SyncError, match="still being copied into the folder after 0.3 s"):
        timed_out.sync(storage.load(loaded.desk), save=lambda p: None)
    # The device (for which an offer is its own) leaves it alone too, and says nothing.
    device = DeviceDrops(loaded.mailbox, SECRET, DeviceFile(loaded.device), settle=2.0)
    assert all(e.kind != "damaged" for e in device.step())
    assert path.read_bytes() == whole[:100]


def test_a_temporary_file_is_never_listed(site: Site) -> None:
    for name in (".offer-x.smdrop.123.tmp", "offer.part", "copying.partial", "doc~", "x.tmp"):
        (site.box / name).write_bytes(b"SMGRDROP half")
    assert site.mailbox.entries() == {}


def test_a_replayed_offer_is_not_merged_twice(loaded: Site) -> None:
    edit(loaded.device, lambda p, opp: p.add(opp, {"company": "Road", "title": "x"}))
    loaded.look()
    (offer,) = drop_entries(loaded.box, "offer")
    replay = (loaded.box / offer).read_bytes()
    loaded.sync()
    loaded.look()  # commits, and replaces its offer
    assert drop_entries(loaded.box, "offer") != [offer]
    edit(loaded.device, lambda p, opp: p.add(opp, {"company": "Road 2", "title": "x"}))
    loaded.round()  # a newer offer merged
    # The mirroring tool copies the first offer back (and the newest one is not there yet).
    for name in drop_entries(loaded.box, "offer"):
        (loaded.box / name).unlink()
    (loaded.box / offer).write_bytes(replay)
    before = loaded.desk.read_bytes()
    results = loaded.sync()
    assert any("was merged before and the device has sent newer changes since: not applied "
               "again" in n for n in results[0].notices)
    assert results[0].records_received == 0 and not results[0].saved
    assert not results[0].written and drop_entries(loaded.box, "answer") == []
    assert loaded.desk.read_bytes() == before
    assert live_companies(loaded.desk).count("Road") == 1


def test_an_answer_lost_after_the_desktop_saved_is_answered_again(loaded: Site) -> None:
    edit(loaded.device, lambda p, opp: p.add(opp, {"company": "Road", "title": "x"}))
    edit(loaded.desk, lambda p, opp: p.add(opp, {"company": "Office", "title": "y"}))
    loaded.look()
    loaded.sync()
    for name in drop_entries(loaded.box, "answer"):
        (loaded.box / name).unlink()  # lost on its way to the device
    before = loaded.desk.read_bytes()
    results = loaded.sync()  # the same offer again
    assert any("was merged before (its answer may have been lost): not merged again" in n
               for n in results[0].notices)
    assert results[0].written.startswith("answer-")  # answered again, from the saved merge
    assert loaded.desk.read_bytes() == before
    # Asked once more before the device came by: the answer waiting there is not repeated.
    waiting = loaded.sync()
    assert waiting[0].written == results[0].written
    assert waiting[0].waiting == "the device has not taken this answer yet"
    assert len(drop_entries(loaded.box, "answer")) == 1
    loaded.look()
    assert content(loaded.desk) == content(loaded.device)
    assert sorted(live_companies(loaded.device)).count("Office") == 1


def test_a_replayed_answer_is_not_applied_twice(loaded: Site) -> None:
    edit(loaded.desk, lambda p, opp: p.add(opp, {"company": "Office", "title": "y"}))
    loaded.sync()
    (answer,) = drop_entries(loaded.box, "answer")
    replay = (loaded.box / answer).read_bytes()
    loaded.look()
    assert drop_entries(loaded.box, "answer") == []
    applied = storage.load(loaded.device).extra[APPLIED].split()
    assert drops.parse_name(answer)[1] in applied  # type: ignore[index]
    # Later the device changes on its own; then the old answer shows up again.
    edit(loaded.device, lambda p, opp: p.add(opp, {"company": "Road", "title": "z"}))
    (loaded.box / answer).write_bytes(replay)
    device_before = loaded.device.read_bytes()
    events = loaded.look()
    assert events[0].kind == "stale" and "was applied before" in events[0].text
    assert not (loaded.box / answer).exists()
    assert loaded.device.read_bytes() == device_before


def test_a_late_answer_never_undoes_what_the_device_wrote_after_its_offer(loaded: Site) -> None:
    deals = sorted(r.id for r in storage.load(loaded.desk).live("opportunity"))
    moved, lost = deals[0], deals[1]
    edit(loaded.desk, lambda p, opp: [p.update(opp, d, {"stage": "Proposal"}) for d in deals[:2]])
    loaded.sync()  # the answer waits in the folder until the device comes back
    assert drop_entries(loaded.box, "answer")
    # Meanwhile, on the road: a new phone number for one deal, the other deal is lost.
    edit(loaded.device, lambda p, opp: (p.update(opp, moved, {"phone": "555-0199"}),
                                        p.delete(lost)))
    loaded.look()  # the device takes the answer, written before these changes
    device = storage.load(loaded.device)
    assert device.records[moved].values["stage"] == "Proposal"  # the desktop's change arrived
    assert device.records[moved].values["phone"] == "555-0199"  # and the road's stayed
    assert device.records[lost].deleted
    loaded.round()
    assert content(loaded.desk) == content(loaded.device)
    assert storage.load(loaded.desk).records[moved].values["phone"] == "555-0199"


# --- the folder is a boundary -------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["../outside.smdrop", "/etc/passwd", "a/b", "..", ".", "", ".hidden", "x\\y", "a\0b"]
)
def test_names_that_could_leave_the_folder_are_refused(site: Site, name: str) -> None:
    mailbox = site.mailbox
    with pytest.raises(SyncError, match="not a plain name"):
        mailbox.write(name, b"x")
    with pytest.raises(SyncError, match="not a plain name"):
        mailbox.read(name, 10)
    with pytest.raises(SyncError, match="not a plain name"):
        mailbox.remove(name)
    assert not (site.box.parent / "outside.smdrop").exists()
    assert os.listdir(site.box) == []


def test_a_link_out_of_the_folder_is_never_followed(loaded: Site, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    # A real pipeline file outside, linked into the folder under an innocent name.
    target = outside / "device-copy.pipe"
    shutil.copyfile(loaded.device, target)
    (loaded.box / "device-copy.pipe").symlink_to(target)
    # A genuine, well-sealed offer outside, linked in under an offer's name.
    (offer,) = drop_entries(loaded.box, "offer")
    (loaded.box / offer).rename(outside / offer)
    (loaded.box / offer).symlink_to(outside / offer)
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in outside.iterdir()}
    desk_before = loaded.desk.read_bytes()

    result = salesmgr("sync", loaded.desk, "--from", url_of(loaded.box), "--secret", SECRET)
    assert result.exit_code == 7
    line = one_error_line(result)
    assert "is a symbolic link; refused (links are never followed" in line
    assert "(and 1 more)" in line
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in outside.iterdir()} == before
    assert loaded.desk.read_bytes() == desk_before
    assert (loaded.box / offer).is_symlink() and (loaded.box / "device-copy.pipe").is_symlink()

    # The device does not follow a link either: an answer linked in from outside is refused.
    edit(loaded.desk, lambda p, opp: p.add(opp, {"company": "Office", "title": "y"}))
    (loaded.box / offer).unlink()
    loaded.look()  # a fresh offer
    loaded.sync()
    (answer,) = drop_entries(loaded.box, "answer")
    (loaded.box / answer).rename(outside / answer)
    (loaded.box / answer).symlink_to(outside / answer)
    device_before = loaded.device.read_bytes()
    events = loaded.look()
    assert [e.kind for e in events] == ["damaged"] and "symbolic link" in events[0].text
    assert loaded.device.read_bytes() == device_before


def test_a_folder_given_through_a_link_is_used_by_its_real_path(site: Site, tmp_path: Path) -> None:
    alias = tmp_path / "alias"
    alias.symlink_to(site.box)
    mailbox = FolderMailbox(folder_of(url_of(alias)))
    assert mailbox.url == url_of(site.box.resolve())


# --- a pipeline file dropped in the folder by hand -----------------------------------------------


def test_a_pipeline_file_copied_by_hand_is_merged_like_salesmgr_merge(
    site: Site, tmp_path: Path
) -> None:
    device = tmp_path / "handheld.pipe"
    shutil.copyfile(site.desk, device)  # the device was loaded the old way
    ids = sorted(storage.load(site.desk).records)
    edit(device, lambda p, opp: (p.add(opp, {"company": "Road", "title": "x"}),
                                  p.update(opp, ids[0], {"stage": "Won"})))
    edit(site.desk, lambda p, opp: (p.add(opp, {"company": "Office", "title": "y"}),
                                     p.delete(ids[1])))
    seal(device)  # the device writes its file sealed under the pairing secret
    # What salesmgr merge would make of the two, on copies.
    expected_desk, expected_device = storage.load(site.desk), storage.load(device)
    merge_files(expected_desk, expected_device)
    expected = user_data(expected_desk)

    shutil.copyfile(device, site.box / "handheld.pipe")  # copied into the folder by hand
    before = (site.desk.read_bytes(), snapshot(site.box))
    preview = salesmgr("sync", site.desk, "--from", url_of(site.box), "--secret", SECRET,
                       "--dry-run")
    assert preview.exit_code == 0, preview.output
    assert "took the pipeline file handheld.pipe" in preview.output
    assert (site.desk.read_bytes(), snapshot(site.box)) == before

    result = salesmgr("sync", site.desk, "--from", url_of(site.box), "--secret", SECRET)
    assert result.exit_code == 0, result.output
    assert "desktop: 1 added, 1 changed, 0 deleted" in result.output
    assert "device:  1 added, 0 changed, 1 deleted" in result.output
    assert "left the merged file back as handheld.pipe for the device" in result.output
    assert content(site.desk) == expected
    merged_back = storage.decode((site.box / "handheld.pipe").read_bytes(), "x")
    assert user_data(merged_back) == expected
    assert auth.seal_problem(merged_back, auth.secret_bytes(SECRET)) == ""  # sealed in turn
    assert [p.name for p in site.box.iterdir()] == ["handheld.pipe"]  # no backup, no temp

    before = (site.desk.read_bytes(), snapshot(site.box))
    again = salesmgr("sync", site.desk, "--from", url_of(site.box), "--secret", SECRET)
    assert again.exit_code == 0, again.output
    assert "handheld.pipe was already in step: left as it is" in again.output
    assert (site.desk.read_bytes(), snapshot(site.box)) == before


def seal(path: Path, secret: str = SECRET) -> None:
    """Save ``path`` again as a paired device does: sealed under ``secret``."""
    DeviceFile(path, secret=auth.secret_bytes(secret)).save(storage.load(path))


@pytest.mark.parametrize(
    ("sealed_with", "says"),
    [
        (None, "it carries no seal of a paired device"),
        ("another-pairing-secret-Lr5tVw9", "its seal does not verify"),
        ("tampered", "its seal does not verify"),
    ],
)
def test_a_pipeline_file_no_paired_device_sealed_is_left_untouched(
    site: Site, tmp_path: Path, sealed_with: str | None, says: str
) -> None:
    """Anyone who can write the folder can read the pipeline id from a drop and write a file
    with it: only a file sealed by a paired replica is merged; any other stays as it is."""
    forged = tmp_path / "forged.pipe"
    shutil.copyfile(site.desk, forged)
    ids = sorted(storage.load(site.desk).records)
    if sealed_with == "tampered":
        seal(forged)
    edit(forged, lambda p, opp: (p.add(opp, {"company": "Intruder", "title": "x"}),
                                  p.update(opp, ids[0], {"stage": "Lost"}), p.delete(ids[1])))
    if sealed_with not in (None, "tampered"):
        seal(forged, sealed_with)
    shutil.copyfile(forged, site.box / "handheld.pipe")
    make_old(site.box / "handheld.pipe")
    before = (site.desk.read_bytes(), snapshot(site.box))
    result = salesmgr("sync", site.desk, "--from", url_of(site.box), "--secret", SECRET)
    assert result.exit_code == 7
    line = one_error_line(result)
    assert "handheld.pipe: not merged: " + says in line
    assert "salesmgr merge" in line and "left in place" in line
    assert (site.desk.read_bytes(), snapshot(site.box)) == before


def test_the_device_seals_its_file_so_the_old_habit_of_copying_it_still_works(
    site: Site, tmp_path: Path
) -> None:
    device = tmp_path / "handheld.pipe"
    emulator = EmulatorProcess(emulator_command(device, "tcp://127.0.0.1:0"), tmp_path,
                               secret=SECRET)
    try:
        loaded = salesmgr("load", site.desk, "--to", emulator.url, "--secret", SECRET)
        assert loaded.exit_code == 0, loaded.output
    finally:
        emulator.stop()
    assert auth.seal_problem(storage.load(device), auth.secret_bytes(SECRET)) == ""
    shutil.copyfile(device, site.box / "handheld.pipe")  # the old habit
    result = salesmgr("sync", site.desk, "--from", url_of(site.box), "--secret", SECRET)
    assert result.exit_code == 0, result.output
    assert "took the pipeline file handheld.pipe" in result.output


def test_a_sealed_file_is_refused_by_a_desktop_with_another_secret(
    site: Site, tmp_path: Path
) -> None:
    device = tmp_path / "handheld.pipe"
    shutil.copyfile(site.desk, device)
    edit(device, lambda p, opp: p.add(opp, {"company": "Road", "title": "x"}))
    seal(device)
    shutil.copyfile(device, site.box / "handheld.pipe")
    before = (site.desk.read_bytes(), snapshot(site.box))
    result = salesmgr("sync", site.desk, "--from", url_of(site.box), "--secret",
                      "a-wrong-but-strong-secret-Zq81mX")
    assert result.exit_code == 7
    assert "its seal does not verify" in one_error_line(result)
    assert (site.desk.read_bytes(), snapshot(site.box)) == before


def test_a_damaged_pipeline_file_in_the_folder_is_refused_and_left(site: Site) -> None:
    data = bytearray(site.desk.read_bytes())
    data[-3] ^= 0x10
    (site.box / "copy.pipe").write_bytes(bytes(data))
    make_old(site.box / "copy.pipe")
    (site.box / "readme.txt").write_text("the mirroring tool's notes: not a pipeline")
    before = (site.desk.read_bytes(), snapshot(site.box))
    result = salesmgr("sync", site.desk, "--from", url_of(site.box), "--secret", SECRET)
    assert result.exit_code == 7
    assert "copy.pipe" in one_error_line(result) and "left in place" in one_error_line(result)
    assert (site.desk.read_bytes(), snapshot(site.box)) == before


# --- secrets ------------------------------------------------------------------------------------


def test_a_desktop_with_the_wrong_secret_changes_nothing(loaded: Site) -> None:
    edit(loaded.device, lambda p, opp: p.add(opp, {"company": "Road", "title": "x"}))
    loaded.look()
    before = (loaded.desk.read_bytes(), loaded.device.read_bytes(), snapshot(loaded.box))
    wrong = "a-wrong-guess-of-the-secret-Tz91"
    result = salesmgr("sync", loaded.desk, "--from", url_of(loaded.box), "--secret", wrong)
    assert result.exit_code == 7
    assert (
        "failed its authentication check: sealed with another pairing secret, or altered; "
        "left in place for inspection, nothing was changed" in one_error_line(result)
    )
    assert (loaded.desk.read_bytes(), loaded.device.read_bytes(), snapshot(loaded.box)) == before


def test_the_secret_never_lies_in_the_folder(loaded: Site) -> None:
    edit(loaded.desk, lambda p, opp: p.add(opp, {"company": "Office", "title": "y"}))
    loaded.sync()
    for data in snapshot(loaded.box).values():
        assert SECRET.encode() not in data


# --- interruptions ------------------------------------------------------------------------------


class LoadArrivesWhileOffering(FolderMailbox):
    """The folder as the device sees it while the desktop leaves a load just as the device is
    writing its offer (the two never coordinate)."""

    def __init__(self, site: Site) -> None:
        super().__init__(site.mailbox.root)
        self.site, self.arrived = site, False

    def write(self, name: str, data: bytes) -> None:
        super().write(name, data)
        if name.startswith("offer-") and not self.arrived:
            self.arrived = True
            self.site.load()


def test_a_load_left_while_the_device_writes_its_offer_is_taken_at_the_next_look(
    site: Site,
) -> None:
    def stamp() -> object:  # as the emulator's: changes whenever the device file does
        return site.device.stat().st_mtime_ns if site.device.exists() else 0

    mailbox = LoadArrivesWhileOffering(site)
    device = DeviceDrops(mailbox, SECRET, DeviceFile(site.device), settle=0.0, stamp=stamp)
    assert [e.kind for e in device.step()] == ["offered"]
    assert mailbox.arrived
    assert [e.kind for e in device.step()] == ["loaded", "offered"]
    assert content(site.device) == content(site.desk)


class Killed(Exception):
    """The process was killed at this point (simulated)."""


class Cut:
    """Kills whichever side performs the ``at``-th write: ``before`` or ``after`` it, or while
    writing a drop — leaving half of it in a ``temporary`` file, or (a mirroring tool
    ``copying`` it in place) half of it under its final name."""

    def __init__(self, at: int | None, how: str) -> None:
        self.at, self.how, self.count = at, how, 0

    def point(self, write: Any, partial: Any = None) -> None:
        hit = self.count == self.at
        self.count += 1
        if not hit:
            write()
            return
        if self.how in ("temporary", "copying") and partial is not None:
            partial(self.how)
        if self.how == "after":
            write()
        raise Killed


class CutMailbox:
    def __init__(self, inner: FolderMailbox, cut: Cut) -> None:
        self.inner, self.cut, self.url = inner, cut, inner.url

    def entries(self) -> dict[str, object]:
        return self.inner.entries()

    def read(self, name: str, limit: int) -> Mail | None:
        return self.inner.read(name, limit)

    def open(self, name: str) -> Opened | None:
        return self.inner.open(name)

    def home(self, name: str) -> str:
        return self.inner.home(name)

    def close(self) -> None:
        pass

    def write(self, name: str, data: bytes) -> None:
        def torn(how: str) -> None:
            target = f".{name}.cut.tmp" if how == "temporary" else name
            Path(self.inner.root, target).write_bytes(data[: len(data) // 2])

        self.cut.point(lambda: self.inner.write(name, data), torn)

    def remove(self, name: str) -> None:
        self.cut.point(lambda: self.inner.remove(name))


class CutStore:
    def __init__(self, inner: DeviceFile, cut: Cut) -> None:
        self.inner, self.cut = inner, cut

    @property
    def renamed(self) -> bool:
        return self.inner.renamed

    def load(self) -> Pipeline | None:
        return self.inner.load()

    def save(self, pipeline: Pipeline) -> None:
        self.cut.point(lambda: self.inner.save(pipeline))


@dataclass
class Evening:
    site: Site
    desk_bytes: bytes
    device_bytes: bytes
    offer: dict[str, bytes]
    expected: dict[str, Any]
    writes: int  # writes of a clean evening round, both sides

    def reset(self) -> None:
        self.site.desk.write_bytes(self.desk_bytes)
        self.site.device.write_bytes(self.device_bytes)
        for path in self.site.box.iterdir():
            path.unlink()
        for name, data in self.offer.items():
            (self.site.box / name).write_bytes(data)

    def round(self, cut: Cut) -> None:
        site = self.site
        mailbox = CutMailbox(site.mailbox, cut)
        desktop = DesktopDrops(mailbox, SECRET, timeout=1.0, settle=0.0)
        desktop.sync(
            storage.load(site.desk),
            save=lambda p: cut.point(lambda: storage.save(p, site.desk)),
        )
        DeviceDrops(mailbox, SECRET, CutStore(DeviceFile(site.device), cut), settle=0.0).step()


@pytest.fixture(scope="module")
def evening(tmp_path_factory: pytest.TempPathFactory) -> Evening:
    work = tmp_path_factory.mktemp("folder-cuts")
    box = work / "Mirror"
    box.mkdir()
    site = Site(desktop_file(work, count=8), work / "device.pipe", box)
    site.load()
    site.look()
    ids = sorted(storage.load(site.desk).records)

    def office(p: Pipeline, opp: Any) -> None:
        p.add(opp, {"company": "Office", "title": "chairs"})
        p.update(opp, ids[0], {"stage": "Won"})
        p.update(opp, ids[5], {"notes": "met\nsent the quote"})
        p.delete(ids[1])

    def road(p: Pipeline, opp: Any) -> None:
        p.add(opp, {"company": "Road", "title": "desks"})
        p.update(opp, ids[2], {"stage": "Lost"})
        p.update(opp, ids[5], {"notes": "called\nmet"})
        p.delete(ids[3])

    edit(site.desk, office)
    edit(site.device, road)
    site.look()  # the evening's offer
    evening = Evening(site, site.desk.read_bytes(), site.device.read_bytes(),
                      snapshot(box), {}, 0)
    clean = Cut(None, "")
    evening.round(clean)
    evening.writes = clean.count
    evening.expected = content(site.desk)
    assert evening.expected == content(site.device)
    companies = live_companies(site.desk)
    assert "Office" in companies and "Road" in companies and len(companies) == 8
    return evening


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_an_interruption_anywhere_is_finished_by_the_next_round(
    evening: Evening, data: st.DataObject
) -> None:
    at = data.draw(st.integers(0, evening.writes - 1), label="write cut")
    how = data.draw(st.sampled_from(["before", "temporary", "copying", "after"]), label="how")
    evening.reset()
    try:
        evening.round(Cut(at, how))
    except Killed:
        pass
    # Restarted: the device looks into the folder, the desktop syncs, until nothing moves.
    site = evening.site
    for _ in range(3):
        site.look()
        try:
            results = site.sync()
        except SalesmgrError as error:
            raise AssertionError(f"the next round failed: {error}") from None
        site.look()
        if content(site.desk) == content(site.device) and not results[0].written:
            break
    assert content(site.desk) == evening.expected
    assert content(site.device) == evening.expected
    # Every answer was taken; only a torn one (damaged) stays, left for inspection.
    for name in drop_entries(site.box, "answer"):
        with pytest.raises(drops.DropError):
            drops.unseal((site.box / name).read_bytes(), SECRET.encode(), name)


def test_a_restored_device_is_asked_for_everything_and_loses_nothing(loaded: Site) -> None:
    backup = loaded.device.read_bytes()
    for name in ("Before restore", "Also before"):  # more edits lost than made after
        edit(loaded.device, lambda p, opp, n=name: p.add(opp, {"company": n, "title": "x"}))
    loaded.round()
    assert "Before restore" in live_companies(loaded.desk)
    # The device is restored from the morning's backup, then used again.
    loaded.device.write_bytes(backup)
    edit(loaded.device, lambda p, opp: p.add(opp, {"company": "After restore", "title": "y"}))
    loaded.look()
    results = loaded.sync()
    assert results[0].waiting.startswith("the device was reset or restored from a backup")
    assert "asked the device to offer everything it holds" in results[0].waiting
    events = loaded.look()
    assert [e.kind for e in events] == ["offered"] and "everything it holds" in events[0].text
    results = loaded.sync()
    assert results[0].report is not None and not results[0].waiting
    loaded.look()
    assert content(loaded.desk) == content(loaded.device)
    assert {"Before restore", "Also before", "After restore"} <= set(
        live_companies(loaded.desk)
    )


def test_a_restored_desktop_file_asks_for_everything_and_mints_only_new_versions(
    loaded: Site,
) -> None:
    backup = loaded.desk.read_bytes()
    edit(loaded.desk, lambda p, opp: p.add(opp, {"company": "Lost at the office", "title": "x"}))
    loaded.round()  # the device now holds a desktop version the restored file will not have
    loaded.desk.write_bytes(backup)
    edit(loaded.device, lambda p, opp: p.add(opp, {"company": "Road", "title": "y"}))
    loaded.look()
    replica_before = storage.load(loaded.desk).replica_id
    first = loaded.sync()
    assert first[0].waiting.startswith("this desktop file was restored from a backup")
    assert loaded.desk.read_bytes() == backup  # nothing merged, nothing saved
    loaded.look()
    second = loaded.sync()
    assert second[0].saved and not second[0].waiting
    assert storage.load(loaded.desk).replica_id != replica_before  # a new replica
    loaded.look()
    assert content(loaded.desk) == content(loaded.device)
    assert {"Lost at the office", "Road"} <= set(live_companies(loaded.desk))


# --- the documentation follows the declarations -----------------------------------------------


def test_docs_describe_every_drop_and_every_field() -> None:
    text = DOCS.read_text()
    assert re.search(r"^## `folder://`", text, re.M)
    for kind, drop in drops.DROPS.items():
        assert re.search(rf"^#+ .*\b{kind.name}\b", text, re.M), kind.name
        for sub in drop.BODY.subcons:
            if sub.name:
                assert f"`{sub.name}`" in text, f"{kind.name}.{sub.name}"
    for sub in drops.Envelope.subcons:
        assert f"`{sub.name}`" in text


def test_compiled_and_uncompiled_drop_parsers_agree(loaded: Site) -> None:
    edit(loaded.desk, lambda p, opp: p.add(opp, {"company": "Office", "title": "y"}))
    loaded.sync()
    loaded.load()
    names = [*drop_entries(loaded.box, "answer"), *drop_entries(loaded.box, "offer"),
             *drop_entries(loaded.box, "load")]
    assert len(names) == 3
    for name in names:
        data = (loaded.box / name).read_bytes()
        body = data[drops.ENVELOPE_SIZE : -drops.TAG_SIZE]
        claimed = drops.parse_name(name)
        assert claimed is not None
        kind: DropKind = claimed[0]
        assert drops.COMPILED[kind].parse(body) == drops.DROPS[kind].BODY.parse(body)
        drop = drops.unseal(data, SECRET.encode(), name)
        assert isinstance(drop, (Answer, Offer, Load)) and drop.entry == name


def test_a_drop_that_lands_while_the_device_looks_is_taken_at_its_next_look(site: Site) -> None:
    """The device lists the folder, then works; a load left meanwhile must neither be skipped
    by the next look (it was never seen) nor be covered by an offer that says it was."""
    site.look()  # a new device offers that it holds nothing
    mailbox = site.mailbox
    listings = 0
    real_entries = mailbox.entries

    def entries() -> dict[str, object]:
        nonlocal listings
        listings += 1
        if listings == 2:  # right after the look's own listing, the desktop leaves its load
            site.load()
        return real_entries()

    mailbox.entries = entries  # type: ignore[method-assign]
    device = DeviceDrops(mailbox, SECRET, DeviceFile(site.device), settle=0.0,
                         stamp=lambda: site.device.exists() and site.device.stat().st_mtime_ns)
    offers = snapshot(site.box)
    offers = {name: data for name, data in offers.items() if name.startswith("offer-")}
    first = device.step()
    assert not any(e.kind == "loaded" for e in first)
    now = {n: d for n, d in snapshot(site.box).items() if n.startswith("offer-")}
    assert now == offers  # no offer claims the device saw the load
    second = device.step()
    assert [e.kind for e in second] == ["loaded", "offered"]
    assert content(site.device) == content(site.desk)
