"""A call logged on a deal that was deleted elsewhere is work on that deal (issue 14, item 2):
like an edit concurrent with the deletion, the deal comes back with its call, and the decision is
logged and reversible — in both directions, over ``salesmgr merge`` and over every transport."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import salesmgr

from salesmgr.testing.pytest_plugin import DeviceFactory

CALL = "they still want the fleet"
DIRECTIONS = ["deleted on the desktop", "deleted on the device"]


def run(*args: object, env: dict[str, str] | None = None) -> str:
    result = salesmgr(*args, env=env)
    assert result.exit_code == 0, result.output
    return result.output.strip()


def desktop_with_two_deals(folder: Path) -> tuple[Path, str]:
    desk = folder / "desk.smp"
    run("init", desk, "--name", "North")
    deal = run("add", desk, "--company", "Acme", "--title", "Fleet")
    run("add", desk, "--company", "Beta", "--title", "Vans")
    return desk, deal


def work_apart(direction: str, desk: Path, device: Path, deal: str) -> None:
    """One side deletes the deal; the other, not knowing, logs a call on it."""
    deleting, working = (desk, device) if direction == "deleted on the desktop" else (device, desk)
    run("delete", deleting, deal)
    run("log", working, deal, "--kind", "call", "--summary", CALL)


def assert_the_deal_is_back_with_its_call(path: Path, deal: str) -> None:
    shown = json.loads(run("show", path, deal, "--json"))
    assert [a["summary"] for a in shown["activities"]] == [CALL]
    assert deal in [d["id"] for d in json.loads(run("list", path, "--json"))]
    assert deal in run("export", path)


def the_logged_decision(path: Path, deal: str) -> dict[str, str]:
    [decision] = [c for c in json.loads(run("conflicts", path, "--all", "--json"))
                  if c["record_id"] == deal]
    assert decision["field"] == "_deleted"
    return dict(decision)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_salesmgr_merge_brings_the_deal_back_and_the_decision_can_be_reversed(
    tmp_path: Path, direction: str
) -> None:
    desk, deal = desktop_with_two_deals(tmp_path)
    device = tmp_path / "device.smp"
    shutil.copy(desk, device)
    run("merge", desk, device)
    work_apart(direction, desk, device, deal)
    report = json.loads(run("merge", desk, device, "--json"))
    assert [(c["record_id"], c["field"]) for c in report["conflicts"]] == [(deal, "_deleted")]
    assert report["warnings"] == []
    for side in (desk, device):
        assert_the_deal_is_back_with_its_call(side, deal)
    decision = the_logged_decision(desk, deal)
    deleted_side = "desktop" if direction == "deleted on the desktop" else "device"
    assert decision[f"{deleted_side}_value"] == "deleted"
    run("resolve", desk, decision["id"], "--take", deleted_side)
    run("merge", desk, device)
    for side in (desk, device):
        assert salesmgr("show", side, deal).exit_code == 4  # deleted again, on both sides


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_every_transport_brings_the_deal_back(
    emulated_device: DeviceFactory, salesmgr_transport: str, tmp_path: Path, direction: str
) -> None:
    desk, deal = desktop_with_two_deals(tmp_path)
    device = emulated_device(salesmgr_transport)
    run("load", desk, "--to", device.url, env=device.env)
    if device.mailbox is not None:
        device.expect("loaded")  # a folder device takes the load in its own time
    device.settle()
    work_apart(direction, desk, device.device_file, deal)
    device.settle()  # a folder device offers what changed on it
    evening = json.loads(run("sync", desk, "--from", device.url, "--json", env=device.env))
    if device.mailbox is not None:
        device.expect("committed")  # and takes the answer
    report = (evening[0] if isinstance(evening, list) else evening)["report"]
    assert [(c["record_id"], c["field"]) for c in report["conflicts"]] == [(deal, "_deleted")]
    for side in (desk, device.device_file):
        assert_the_deal_is_back_with_its_call(side, deal)
    the_logged_decision(device.device_file, deal)  # the log travels with the pipeline
