"""``salesmgr demo``, ``salesmgr emulator day`` and the sync progress bar, as a newcomer and a
script see them: plain text when piped, rich on a terminal, nothing left behind whatever happens."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import one_error_line, salesmgr

from salesmgr import storage
from salesmgr.emulator.day import office_day, road_day, starting_pipeline
from salesmgr.model.pipeline import Pipeline
from salesmgr.plugin.manager import Registry, get_registry, make_plugin_manager, use_registry
from salesmgr.plugins.progress import showing_progress
from salesmgr.sync.results import SessionResult
from salesmgr.sync.session import DesktopSession, DeviceSession
from salesmgr.testing.compare import user_data
from salesmgr.testing.links import memory_link_pair

SALESMGR = [str(Path(sys.executable).parent / "salesmgr")]  # the installed console script


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line mentions ``text`` (an emulator left behind)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in command:
                found.append(int(entry.name))
    return found


@pytest.fixture
def temp_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the demo makes its temporary folder: it must be empty again afterwards."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    # File locks live in the user's runtime folder; keep them out of the folder under watch.
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    return folder


def section(output: str, title: str) -> str:
    """The lines of the demo's output under the heading that starts with ``title``."""
    after = output.split(f"== {title}", 1)[1]
    return after.split("\n== ", 1)[0]


# --- the demo --------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["serial", "tcp", "folder"])
def test_the_demo_plays_the_whole_day_and_leaves_nothing_behind(
    transport: str, temp_folder: Path
) -> None:
    if transport == "folder" and "folder" not in get_registry().transports:
        pytest.skip("the folder:// transport is not installed")
    result = salesmgr("demo", "--transport", transport, "--seed", 5)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert re.search(r"0 records received, \d+ sent", section(out, "3. Morning"))
    road = section(out, "4. On the road")
    assert "visit" in road and "new lead" in road and "deleted" in road and "call" in road
    office = section(out, "5. In the office")
    assert "new " in office and "phone" in office and "also changed on the road" in office
    evening = section(out, "6. Evening")
    assert "conflicts: 1 (policy field-merge)" in evening
    assert "desktop: " in evening and "device:  " in evening
    tonight = section(out, "7. The pipeline tonight")
    assert "The desktop and the device hold the same" in tonight
    header, *rows = [line for line in tonight.splitlines() if "\t" in line]
    assert header.split("\t") == ["company", "title", "stage", "value", "next_action_date",
                                  "today"]
    assert 25 <= len(rows) <= 40
    assert {row.split("\t")[-1] for row in rows} >= {"road", "office", "both", ""}
    assert "\x1b[" not in out  # plain text when piped
    assert list(temp_folder.iterdir()) == []
    assert processes_mentioning(str(temp_folder)) == []


def test_keep_leaves_both_sides_in_step_and_a_seed_replays_the_same_day(tmp_path: Path) -> None:
    first = salesmgr("demo", "--transport", "tcp", "--seed", 8, "--keep", tmp_path / "one")
    second = salesmgr("demo", "--transport", "tcp", "--seed", 8, "--keep", tmp_path / "two")
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    for title in ("4. On the road", "5. In the office"):
        assert section(first.stdout, title) == section(second.stdout, title)
    folder = tmp_path / "one"
    assert {p.name for p in folder.iterdir()} >= {"desk.smp", "device.smp", "salesmgr.toml"}
    assert user_data(storage.load(folder / "desk.smp")) == user_data(
        storage.load(folder / "device.smp")
    )
    assert processes_mentioning(str(folder)) == []
    other = salesmgr("demo", "--transport", "tcp", "--seed", 9, "--keep", tmp_path / "three")
    assert section(other.stdout, "4. On the road") != section(first.stdout, "4. On the road")


def test_keep_never_writes_into_a_folder_that_holds_files(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    result = salesmgr("demo", "--keep", tmp_path)
    assert result.exit_code == 2
    assert "is not empty" in one_error_line(result)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_baud_is_for_the_serial_cradle_only(temp_folder: Path) -> None:
    result = salesmgr("demo", "--transport", "tcp", "--baud", "9600")
    assert result.exit_code == 2
    assert "--baud is for --transport serial" in one_error_line(result)
    assert list(temp_folder.iterdir()) == []


def test_a_transport_that_is_not_installed_is_a_one_line_error(temp_folder: Path) -> None:
    pm = make_plugin_manager(entry_points=False)
    pm.unregister(name="salesmgr.plugins.transport_folder")  # a site without the plugin
    previous = use_registry(Registry(pm))
    try:
        result = salesmgr("demo", "--transport", "folder")
    finally:
        use_registry(previous)
    assert result.exit_code == 5
    assert "no folder:// transport is installed" in one_error_line(result)
    assert list(temp_folder.iterdir()) == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_in_the_middle_of_a_load_it_stops_the_device_and_cleans_up(
    tmp_path: Path, signum: signal.Signals
) -> None:
    out = tmp_path / "out.txt"
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**os.environ, "TMPDIR": str(temp), "XDG_RUNTIME_DIR": str(temp.parent)}
    # 1200 baud: the morning load takes a minute, so the signal lands in the middle of it.
    with open(out, "wb") as sink:
        demo = subprocess.Popen(
            [*SALESMGR, "demo", "--seed", "2", "--baud", "1200"],
            stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        )
    try:
        deadline = time.monotonic() + 30
        while "$ salesmgr load" not in out.read_text() and time.monotonic() < deadline:
            assert demo.poll() is None, out.read_text()
            time.sleep(0.05)
        time.sleep(0.3)
        assert processes_mentioning(str(temp)), "the emulator should be running"
        demo.send_signal(signum)
        assert demo.wait(20) != 0
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(5)
    assert "Traceback" not in out.read_text()
    assert processes_mentioning(str(temp)) == []
    assert list(temp.iterdir()) == []


def test_on_a_terminal_it_draws_headings_a_progress_bar_and_a_table(tmp_path: Path) -> None:
    controller, terminal = pty.openpty()
    env = {**os.environ, "COLUMNS": "120", "TMPDIR": str(tmp_path),
           "XDG_RUNTIME_DIR": str(tmp_path.parent)}
    demo = subprocess.Popen(
        [*SALESMGR, "demo", "--seed", "4"],
        stdout=terminal, stderr=terminal, stdin=subprocess.DEVNULL, env=env,
    )
    os.close(terminal)
    seen = bytearray()
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if select.select([controller], [], [], 0.5)[0]:
                try:
                    chunk = os.read(controller, 65536)
                except OSError:  # the demo closed the terminal
                    break
                if not chunk:
                    break
                seen += chunk
            elif demo.poll() is not None:
                break
        assert demo.wait(10) == 0, seen.decode(errors="replace")
    finally:
        os.close(controller)
        if demo.poll() is None:
            demo.kill()
            demo.wait(5)
    styled = seen.decode(errors="replace")
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", styled)
    assert text != styled  # styled
    assert "loading the device" in text and "records" in text  # the progress bar
    assert "┃ company" in text and "┃ changed" in text  # a rich table
    assert list(tmp_path.iterdir()) == []


# --- salesmgr emulator day ---------------------------------------------------------------------


def test_emulator_day_plays_a_seeded_day_on_a_device_file(tmp_path: Path) -> None:
    one, two = tmp_path / "one.smp", tmp_path / "two.smp"
    storage.save(starting_pipeline(3), one)
    storage.save(storage.load(one), two)  # the same records, kept at another path
    first = salesmgr("emulator", "day", one, "--seed", 42, "--visits", 3, "--json")
    second = salesmgr("emulator", "day", two, "--seed", 42, "--visits", 3, "--json")
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    played, replayed = json.loads(first.stdout), json.loads(second.stdout)

    def without_new_ids(day: dict[str, Any]) -> list[dict[str, Any]]:
        new = {action["added"] for action in day["actions"] if action["added"]}
        return [{k: v for k, v in action.items() if k != "added" and v not in new}
                for action in day["actions"]]

    assert (played["seed"], played["who"]) == (42, "road")
    assert without_new_ids(played) == without_new_ids(replayed)
    assert len([a for a in played["actions"] if a["what"] == "visit"]) == 3
    after = storage.load(one)
    lead = next(a for a in played["actions"] if a["what"] == "new lead")
    assert not after.records[lead["added"]].deleted
    lost = next(a for a in played["actions"] if a["what"] == "deleted")
    assert after.records[lost["record_id"]].deleted
    text = salesmgr("emulator", "day", one, "--seed", 7)
    assert text.exit_code == 0
    assert text.stdout.startswith("a day on the road (seed 7): ")


def test_emulator_day_on_a_device_never_loaded_is_a_one_line_error(tmp_path: Path) -> None:
    result = salesmgr("emulator", "day", tmp_path / "device.smp", "--seed", 1)
    assert result.exit_code == 3
    assert "load the device first" in one_error_line(result)
    assert list(tmp_path.iterdir()) == []


def test_the_office_contests_the_field_the_road_changed() -> None:
    desk = starting_pipeline(6)
    device = storage.decode(storage.encode(desk), "device")
    road = road_day(device, 6, visits=2)
    contested = road.contested
    assert contested is not None and contested.field == "value"
    office = office_day(desk, 6, contested=contested)
    [edit] = office.of("edit")
    assert (edit.record_id, edit.field) == (contested.record_id, contested.field)
    assert edit.value != contested.value
    assert desk.records[edit.record_id].values["value"] == edit.value


# --- the progress bar ------------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class MemoryStore:
    """A device's storage in memory."""

    renamed = False

    def __init__(self) -> None:
        self.data: bytes | None = None

    def load(self) -> Pipeline | None:
        return None if self.data is None else storage.decode(self.data, "device")

    def save(self, pipeline: Pipeline) -> None:
        self.data = storage.encode(pipeline)


def load_then_sync_with_progress(stream: io.StringIO) -> None:
    """Load 300 opportunities onto a device in memory, change 40 there, and sync, in small
    batches, with the progress display on ``stream``."""
    desk = starting_pipeline(1, opportunities=30)
    rtype = get_registry().record_type("opportunity")
    for number in range(270):
        desk.add(rtype, {"company": f"Prospect {number}", "title": "Scanners"})
    store = MemoryStore()
    size = len(storage.encode(desk))
    for mode in ("load", "sync"):
        desktop_link, device_link = memory_link_pair()
        device = DeviceSession(device_link, "s", store, batch_bytes=4096)
        served: list[SessionResult] = []
        thread = threading.Thread(target=lambda d=device, s=served: s.append(d.serve()))
        thread.start()
        session = DesktopSession(desktop_link, "s", timeout=10, batch_bytes=4096)
        with showing_progress(
            desktop_link, pipeline_bytes=size, records=len(desk.records), stream=stream
        ):
            if mode == "load":
                session.load(desk)
            else:
                session.sync(desk, save=lambda _: None)
        thread.join(10)
        assert served and served[0].committed
        if mode == "load":
            mine = store.load()
            assert mine is not None
            for record in sorted(mine.live("opportunity"), key=lambda r: r.id)[:40]:
                mine.update(rtype, record.id, {"next_action": "Call back on Monday"})
            store.save(mine)


def test_progress_shows_records_and_bytes_on_a_terminal() -> None:
    screen = Terminal()
    load_then_sync_with_progress(screen)
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue())
    assert "loading the device" in shown
    assert "receiving changes" in shown and "sending the merge" in shown
    assert " 307 records" in shown  # the whole pipeline went in the morning...
    assert " 40 records" in shown  # ...and 40 changed records came back
    assert re.search(r"\d+\.\d/\d+\.\d kB", shown)


def test_progress_stays_quiet_when_output_is_not_a_terminal() -> None:
    piped = io.StringIO()
    load_then_sync_with_progress(piped)
    assert piped.getvalue() == ""
