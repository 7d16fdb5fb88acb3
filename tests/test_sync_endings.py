"""How an evening sync that does not end cleanly is reported (issue 14, items 4 and 5): what the
user reads says what is true — what this desktop file holds, and that the next sync finishes.

The device is the emulator's server loop in a thread, on a real loopback socket, so a fault can
be put in exactly the byte range wanted; the desktop is the ``salesmgr`` command line."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import content, desktop_file, one_error_line, salesmgr
from test_sync_faults import NO_FAULTS, SECRET, edit, load, serve_once

from salesmgr import hookimpl
from salesmgr.plugin.manager import get_registry
from salesmgr.testing.faults import Faults


@pytest.fixture
def evening(tmp_path: Path) -> tuple[Path, Path]:
    """A desktop and the device loaded from it this morning, each with a day's addition."""
    desk, device = desktop_file(tmp_path, count=6), tmp_path / "device.pipe"
    load(desk, device)
    edit(device, lambda p, opp: p.add(opp, {"company": "Road", "title": "met today"}))
    edit(desk, lambda p, opp: p.add(opp, {"company": "Office", "title": "web enquiry"}))
    return desk, device


def sync(desk: Path, device: Path, faults: Faults = NO_FAULTS, *options: str) -> Any:
    """``salesmgr sync`` against the device served once; its result (JSON parsed if asked)."""
    url, thread = serve_once(device, faults, 5.0)
    try:
        result = salesmgr("sync", desk, "--from", url, "--secret", SECRET, "--timeout", "5",
                          *options)
    finally:
        thread.join(15)
    assert not thread.is_alive(), result.output
    if "--json" in options:
        assert result.exit_code == 0, result.output
        return json.loads(result.output)
    return result


def companies(path: Path) -> list[str]:
    return sorted(values["company"] for kind, deleted, values in content(path).values()
                  if kind == "opportunity" and not deleted)


# --- item 4: the device's acknowledgement is lost --------------------------------------------


def test_a_lost_final_acknowledgement_is_no_failure_and_says_what_is_true(
    evening: tuple[Path, Path],
) -> None:
    desk, device = evening
    files = desk.read_bytes(), device.read_bytes()
    clean = sync(desk, device, Faults(), "--json")
    merged = content(desk)
    desk.write_bytes(files[0])
    device.write_bytes(files[1])

    # The same evening; the line drops while the device's last message, its ACK, is on it.
    cut = Faults(disconnect_after=clean["bytes_received"] - 1)
    result = sync(desk, device, cut)
    assert result.exit_code == 0, result.output
    assert "the device's confirmation did not arrive" in result.output
    assert "this desktop holds everything" in result.output
    assert "the next sync confirms it" in result.output
    assert content(desk) == merged

    again = sync(desk, device, Faults(), "--json")
    assert again["confirmed"] and again["records_received"] == again["records_sent"] == 0
    assert content(device) == content(desk) == merged


# --- item 5: Ctrl-C --------------------------------------------------------------------------


class CtrlC:
    """A plugin that stops the desktop (KeyboardInterrupt, as Ctrl-C does) at a sync event."""

    def __init__(self, stage: str, **info: str) -> None:
        self.stage = stage
        self.info = {"side": "desktop", **info}
        self.done = threading.Event()

    @hookimpl
    def salesmgr_sync_event(self, stage: str, info: dict[str, Any]) -> None:
        wanted = stage == self.stage and all(info.get(k) == v for k, v in self.info.items())
        if wanted and not self.done.is_set():
            self.done.set()
            raise KeyboardInterrupt


@pytest.fixture
def ctrl_c() -> Iterator[Any]:
    plugins: list[CtrlC] = []

    def at(stage: str, **info: str) -> CtrlC:
        plugins.append(plugin := CtrlC(stage, **info))
        get_registry().pm.register(plugin)
        return plugin

    yield at
    for plugin in plugins:
        get_registry().pm.unregister(plugin)


def test_ctrl_c_after_the_desktop_saved_says_the_devices_changes_are_in_the_file(
    evening: tuple[Path, Path], ctrl_c: Any
) -> None:
    desk, device = evening
    device_before = device.read_bytes()
    ctrl_c("batch", direction="sent")  # sent back only once the desktop file is saved
    result = sync(desk, device)
    assert result.exit_code == 130
    line = one_error_line(result)
    assert f"interrupted after {desk} was saved: it already holds the device's changes" in line
    assert "the next sync finishes the rest" in line
    assert "Road" in companies(desk)
    assert device.read_bytes() == device_before

    sync(desk, device, Faults(), "--json")
    assert companies(device) == companies(desk) == sorted(
        ["Office", "Road", *(f"Company {i}" for i in range(6))]
    )


def test_ctrl_c_before_the_desktop_saved_says_nothing_changed(
    evening: tuple[Path, Path], ctrl_c: Any
) -> None:
    desk, device = evening
    files = desk.read_bytes(), device.read_bytes()
    ctrl_c("merged")  # merged in memory, not yet saved
    result = sync(desk, device)
    assert result.exit_code == 130
    assert f"interrupted before {desk} was saved: nothing changed on this side" in (
        one_error_line(result)
    )
    assert (desk.read_bytes(), device.read_bytes()) == files
