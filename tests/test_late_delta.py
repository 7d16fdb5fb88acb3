"""The device's side of a sync takes the desktop's merge without undoing newer work: a write
the device made after it sent its changes (a late delta), or after it took the same delta once
already (a repeated one), is kept — the delta's sender had not seen it."""

from __future__ import annotations

from salesmgr import storage
from salesmgr.merge.engine import apply_delta, delta_since, merge_delta
from salesmgr.model.pipeline import Pipeline
from salesmgr.plugin.manager import get_registry
from salesmgr.testing.compare import user_data

OPPORTUNITY = get_registry().record_type("opportunity")


def desktop_and_device() -> tuple[Pipeline, Pipeline, list[str]]:
    desktop = Pipeline.create("Late", "ana")
    ids = [desktop.add(OPPORTUNITY, {"company": c, "title": "Deal"})[0].id
           for c in ("Acme", "Beta", "Cobalt")]
    device = storage.decode(storage.encode(desktop), "device")
    device.fork("test:device")  # a copy becomes a replica of its own
    return desktop, device, ids


def test_a_delta_taken_twice_keeps_what_the_device_wrote_in_between() -> None:
    desktop, device, (edited, deleted, added_to) = desktop_and_device()
    for record_id in (edited, deleted, added_to):
        desktop.update(OPPORTUNITY, record_id, {"stage": "Proposal"})
    back = merge_delta(desktop, delta_since(device, desktop.knowledge)).back
    apply_delta(device, back)

    device.update(OPPORTUNITY, edited, {"stage": "Won", "phone": "555-0100"})
    device.delete(deleted)
    apply_delta(device, back)  # the same delta again: a retry, a replayed drop

    assert device.records[edited].values["stage"] == "Won"
    assert device.records[edited].values["phone"] == "555-0100"
    assert device.records[deleted].deleted
    assert device.records[added_to].values["stage"] == "Proposal"
    # The next merge carries the device's newer work to the desktop; both agree.
    apply_delta(device, merge_delta(desktop, delta_since(device, desktop.knowledge)).back)
    assert user_data(desktop) == user_data(device)
    assert desktop.records[edited].values["stage"] == "Won" and desktop.records[deleted].deleted


def test_a_delta_computed_before_a_device_write_arrives_after_it() -> None:
    desktop, device, (deal, _, _) = desktop_and_device()
    sent = delta_since(device, desktop.knowledge)  # the device sends its changes...
    desktop.update(OPPORTUNITY, deal, {"value": "1200.00"})
    back = merge_delta(desktop, sent).back
    device.update(OPPORTUNITY, deal, {"contact": "Zoë"})  # ...works on before the answer comes
    apply_delta(device, back)
    values = device.records[deal].values
    assert (values["value"], values["contact"]) == ("1200.00", "Zoë")
