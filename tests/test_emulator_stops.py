"""SIGTERM stops the emulator within a second or two, whatever its link is doing — even when a
desktop vanished in the middle of a sync and the device is stuck sending to a line nobody reads."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from salesmgr import storage
from salesmgr.emulator.process import EmulatorProcess, emulator_command
from salesmgr.model.pipeline import Pipeline
from salesmgr.plugin.manager import get_registry

SECRET = "emulator-stops-test-secret-Jd83kQ"


def big_device_file(path: Path, records: int = 600) -> None:
    """A device whose evening sync takes far longer than the test waits (about 600 KB)."""
    pipeline = Pipeline.create("Road", "ana")
    opportunity = get_registry().record_type("opportunity")
    for number in range(records):
        pipeline.add(opportunity, {"company": f"Customer {number}", "title": "Service",
                                   "notes": "met at the fair; " * 60})
    storage.save(pipeline, path)


def test_sigterm_stops_a_serial_emulator_stuck_sending_to_a_vanished_desktop(
    tmp_path: Path,
) -> None:
    device = tmp_path / "device.pipe"
    big_device_file(device)
    desk = tmp_path / "desk.pipe"
    office = Pipeline.create("Road", "ana")
    office.pipeline_id = storage.load(device).pipeline_id  # they first meet: it sends it all
    storage.save(office, desk)
    # A long dead-line time: the link alone would notice the vanished desktop only in minutes.
    emulator = EmulatorProcess(
        emulator_command(device, "serial-pty", baud=115200, timeout=300), tmp_path, secret=SECRET
    )
    desktop = subprocess.Popen(
        [sys.executable, "-c", "from salesmgr.cli.group import main; main()", "sync", str(desk),
         "--from", emulator.url, "--secret", SECRET, "--timeout", "300"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        time.sleep(4)  # the device is sending its records, paced at 115200 baud
        assert desktop.poll() is None, desktop.communicate()[1]
        desktop.kill()  # the desktop vanishes: nobody reads or acknowledges any more
        desktop.wait(10)
        time.sleep(1.5)  # the device's window fills up; it waits in send
        assert emulator.running()
        emulator.process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        try:
            emulator.process.wait(5)
        except subprocess.TimeoutExpired:
            raise AssertionError("SIGTERM did not stop the emulator within 5 s") from None
        assert time.monotonic() - started < 3
        assert "stopped after 1 sessions (1 failed)" in emulator.stdout
        assert storage.load(device).name == "Road"  # the device file is whole
    finally:
        if desktop.poll() is None:
            desktop.kill()
        emulator.stop(timeout=2)
