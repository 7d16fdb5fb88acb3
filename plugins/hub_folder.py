"""The hub over a store-and-forward transport, for sites that keep their mirrored folders:
``salesmgr hub serve STORE --on folder:///srv/sales/devices``.

Each paired device has a mailbox of its own per pipeline, ``URL/DEVICE/PIPELINE`` (the folder a
mirroring tool keeps in step with that device), and the device's emulator or app runs the device
half of `salesmgr.sync.mailbox` there with its credential from ``salesmgr hub pair`` as the
pairing secret.  At every look the hub reads the paired devices afresh from the database, and for
each device that may sync a pipeline (`salesmgr.plugins.hub.admitted`: the same rule as a live
session) it does what ``salesmgr sync --from URL/DEVICE/PIPELINE`` does, with that device's
credential, holding the pipeline from reading to saving.  So:

- a revoked device's mailboxes are never read again (its drops are refused, and said so once);
  pairing a device again gives it a new credential, and drops sealed with the old one are
  refused as foreign;
- a mailbox is only ever opened under a pipeline the device was paired for: whatever a device
  leaves under another pipeline's name is never read, and nothing of that pipeline is ever
  written there;
- each answer is sealed with the device's own credential, so one device cannot read, nor forge,
  another's drops.

The hub keeps no state: what it remembers (which mailboxes it looked at, as they were, and the
pipeline's revision then) only spares it reading a pipeline for a mailbox where nothing changed;
a restarted hub looks at everything once more, and a look twice at the same offer merges it once
(`salesmgr.sync.mailbox` records each drop it applied).  An office edit made meanwhile changes the
pipeline's revision, so a device whose offer stands gets the edit in a fresh answer.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from salesmgr import storage
from salesmgr.errors import SalesmgrError
from salesmgr.model.pipeline import now_ms
from salesmgr.plugin.interfaces import Mailbox, MailboxTransport
from salesmgr.plugins.hub import Ask, Hub, Refusal, admitted, credential
from salesmgr.plugins.store_sql import DeviceRow
from salesmgr.sync.mailbox import DesktopDrops
from salesmgr.sync.results import DropResult
from salesmgr.sync.wire import drops
from salesmgr.sync.wire.drops import DropKind


def mailbox_url(url: str, device: str, pipeline: str) -> str:
    """Where ``device`` keeps its mailbox for ``pipeline`` under the hub's ``url``."""
    return f"{url.rstrip('/')}/{device}/{pipeline}"


@dataclass
class Box:
    """One device's mailbox for one pipeline, as the hub last left it."""

    ask: Ask
    drops: DesktopDrops
    seen: tuple[dict[str, object], int | None] | None = None  # (entries, revision) handled


@dataclass
class FolderHub:
    """Serves the devices of ``hub`` through their mailboxes under ``url``."""

    hub: Hub
    transport: MailboxTransport
    url: str
    options: Mapping[str, Any] = field(default_factory=dict)
    boxes: dict[tuple[str, str, str], Box] = field(default_factory=dict)
    said: dict[tuple[str, str], str] = field(default_factory=dict)  # what was last complained

    def check(self) -> str:
        """The real address of the folder the devices' mailboxes are in; a SyncError if there is
        none (the hub does not start)."""
        root = self.transport.open_mailbox(self.url, self.options)
        root.close()
        self.url = root.url
        return root.url

    def serve(self, interval: float) -> None:
        """Look at every mailbox, then again every ``interval`` seconds, until the hub is told
        to stop; the syncs under way then finish (drain), the others are not begun."""
        stop = self.hub._stop
        with ThreadPoolExecutor(self.hub.workers, thread_name_prefix="hub-folder") as pool:
            while not stop.is_set():
                try:
                    due = self.due()
                except SalesmgrError as error:  # the database is down: say so once, go on
                    self.complain(("", ""), str(error))
                    due = []
                else:
                    self.complain(("", ""), "")
                for _ in pool.map(self.visit, due):
                    pass
                stop.wait(interval)

    def due(self) -> list[tuple[Box, tuple[dict[str, object], int | None]]]:
        """The mailboxes where something changed since the hub last looked (read afresh)."""
        store = self.hub.store
        devices = {d.name: d for d in store.device_rows(self.hub.address)}
        revisions = store.revisions(self.hub.address)
        found: list[tuple[Box, tuple[dict[str, object], int | None]]] = []
        kept: dict[tuple[str, str, str], Box] = {}
        for device in devices.values():
            for pipeline in device.pipelines:
                ask = Ask(device.name, pipeline)
                try:
                    admitted(ask, device)
                except Refusal as refusal:
                    self.refuse(ask, device, refusal)
                    continue
                box = self.box(ask, device)
                if box is None:
                    continue
                kept[(device.name, pipeline, device.pairing)] = box
                try:
                    state = (box.drops.mailbox.entries(), revisions.get(pipeline))
                except SalesmgrError as problem:
                    self.complain((device.name, pipeline), str(problem))
                    continue
                if state != box.seen:
                    found.append((box, state))
        self.boxes = kept
        return found

    def box(self, ask: Ask, device: DeviceRow) -> Box | None:
        """The mailbox of an admitted device (opened once per pairing), or None if it has none
        yet (said once)."""
        key = (ask.device, ask.pipeline, device.pairing)
        box = self.boxes.get(key)
        if box is not None:
            return box
        url = mailbox_url(self.url, ask.device, ask.pipeline)
        try:
            mailbox = self.transport.open_mailbox(url, self.options)
        except SalesmgrError as problem:
            self.complain((ask.device, ask.pipeline), f"{ask.device} {ask.pipeline}: {problem}")
            return None
        self.complain((ask.device, ask.pipeline), "")
        desk = DesktopDrops(mailbox, credential(self.hub.key, device),
                            timeout=self.hub.timeout, registry=self.hub.registry)
        return Box(ask, desk)

    def refuse(self, ask: Ask, device: DeviceRow, refusal: Refusal) -> None:
        """A device that may not sync: its mailbox is never read.  Said once, if it holds
        anything the device left for the hub."""
        try:
            mailbox: Mailbox = self.transport.open_mailbox(
                mailbox_url(self.url, ask.device, ask.pipeline), self.options)
            waiting = [name for name in mailbox.entries() if offered(name)]
        except SalesmgrError:
            return  # no mailbox: nothing to refuse
        if waiting:
            self.complain((ask.device, ask.pipeline),
                          f"refused {ask.device}: {refusal}; its drops in {mailbox.url} are "
                          "not read")

    def visit(self, due: tuple[Box, tuple[dict[str, object], int | None]]) -> None:
        """``salesmgr sync --from`` the box's mailbox into its pipeline, as that device."""
        box, state = due
        hub = self.hub
        if hub._stop.is_set():
            return  # stopping: begin nothing new
        ask = box.ask
        look = box.drops.reader.look({DropKind.OFFER, DropKind.REFUSAL}, files=True)
        if look.arriving:
            return  # still being copied in: looked at again next time, not marked seen
        if not (look.drops or look.files or look.problems):
            box.seen = state
            return
        started = time.monotonic()
        address = f"{hub.address}#{ask.pipeline}"
        try:
            with storage.exclusive(address):
                desktop = storage.open_pipeline(address)
                results = box.drops.sync(
                    desktop, save=lambda merged: storage.save_pipeline(merged, address),
                    policy=hub.policy,
                )
        except SalesmgrError as error:
            box.seen = state  # refused as it is (a foreign or damaged drop): said once
            self.complain((ask.device, ask.pipeline), f"{ask.device} {ask.pipeline}: {error}")
            hub.done(False)
            return
        box.seen = state
        self.complain((ask.device, ask.pipeline), "")
        if not any(worked(result) for result in results):
            return  # the device has not taken the last answer yet, or is in step
        hub.store.mark_device(hub.address, ask.device, "last_sync", now_ms())
        hub.done(True)
        received = sum(r.records_received for r in results)
        sent = sum(r.records_sent for r in results)
        hub.log(f"{ask.device} {ask.pipeline}: {received} received, {sent} sent in "
                f"{time.monotonic() - started:.3f} s (folder)")

    def complain(self, about: tuple[str, str], text: str) -> None:
        """Say ``text`` unless it was the last thing said about ``about``; "" forgets it."""
        if self.said.get(about, "") != text:
            self.said[about] = text
            if text:
                self.hub.complain(text)


def offered(name: str) -> bool:
    claimed = drops.parse_name(name)
    return claimed is not None and claimed[0] is DropKind.OFFER


def worked(result: DropResult) -> bool:
    """True when a look merged something or left the device something new."""
    return bool(result.saved or (result.written and not result.waiting))
