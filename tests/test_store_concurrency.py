"""Many writers, no lost update: writer *processes* edit, add and merge devices into one pipeline
at the same moment, and every write each of them made is checked against what it says it did.

Each writer (tests/concurrent_writer.py) runs whole ``salesmgr`` commands in a loop: it adds
opportunities, edits the latest of its own, writes its own field of one record every writer
shares, and plays a device's evening (the device adds a lead, then ``salesmgr merge`` brings it
in).  Any lost update shows: an added record missing or there twice, an edit undone, another
writer's field of the shared record overwritten with an older value, a device's lead missing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import Addresses
from helpers import salesmgr

from salesmgr import storage

WRITERS = 4
OPERATIONS = 12  # per writer: three rounds of add, edit, shared edit, device merge
SCRIPT = Path(__file__).with_name("concurrent_writer.py")


def ok(*args: object) -> str:
    result = salesmgr(*args)
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def test_concurrent_writer_processes_lose_no_update(address: Addresses, tmp_path: Path) -> None:
    desk = address("office")
    ok("init", desk, "--owner", "ana")
    shared = ok("add", desk, "--company", "Shared", "--title", "everyone's deal")
    devices = []
    for worker in range(WRITERS):
        device = tmp_path / f"device-{worker}.smp"
        ok("copy", desk, device)
        devices.append(device)
    go = tmp_path / "go"
    writers = [
        subprocess.Popen(
            [sys.executable, str(SCRIPT), desk, str(worker), str(OPERATIONS), shared,
             str(devices[worker]), str(go)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for worker in range(WRITERS)
    ]
    go.touch()  # all at once
    models = []
    for writer in writers:
        out, err = writer.communicate(timeout=240)
        assert writer.returncode == 0, err
        models.append(json.loads(out))

    pipeline = storage.open_pipeline(desk)
    live = {r.values["company"]: r for r in pipeline.live("opportunity")}
    companies = [r.values["company"] for r in pipeline.live("opportunity")]
    assert len(companies) == len(set(companies)), "a record is there twice"
    expected = {"Shared"}
    for model in models:
        expected |= set(model["added"]) | set(model["from_device"])
    assert set(live) == expected, "a record is missing"
    for model in models:
        for company, rid in model["added"].items():
            assert live[company].id == rid
        for rid, value in model["edited"].items():
            assert pipeline.records[rid].values["value"] == value, "an edit was undone"
        for field, value in model["shared"].items():
            assert live["Shared"].values[field] == value, f"{field} of the shared record lost"
    assert len(expected) == 1 + WRITERS * OPERATIONS // 2
    # Every device got back everything the office had when it merged: its last merge saw
    # at least its own leads and those of its writer's office adds made before it.
    for worker, model in enumerate(models):
        on_device = {r.values["company"] for r in storage.load(devices[worker]).live()}
        assert set(model["from_device"]) | set(model["added"]) <= on_device
