"""The rules of a sync session, whatever carries it.

A live link (`salesmgr.sync.session`), a mailbox folder (`salesmgr.sync.mailbox`) and two local
files (``salesmgr merge``) move different messages, but they decide the same things the same way:
whether the two sides hold the same pipeline, whether they are two replicas at all, why the device
must send everything (a slow sync), when a restored desktop forks, when a merge is too big to
write without ``--allow-mass-change``, when a load must be refused, and in which order the two
sides commit.  Each of those rules lives here once; the carriers only say how they learn what
the other side holds and how they hand it what it lacks.  Nothing here knows a socket or a folder.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from salesmgr.errors import ErrorCode, MassChange, MergeError, SessionError
from salesmgr.gc_paused import cyclic_gc_paused
from salesmgr.merge.engine import (
    Delta,
    MergeResult,
    delta_since,
    merge_delta,
    merge_files,
    restored_replicas,
)
from salesmgr.model.pipeline import Pipeline, new_id
from salesmgr.plugin.manager import Registry

# Why a sync is slow (the device sends everything it holds):
DEVICE_BLANK = "the device holds no pipeline yet; it is loaded again"
DEVICE_RESTORED = "the device was reset or restored from a backup"
DESKTOP_RESTORED = "this desktop file was restored from a backup; it becomes a new replica"
FIRST_MEETING = "first sync between this desktop and this device"


@dataclass(frozen=True)
class DeviceReport:
    """What the device says about itself before anything is merged (a live STATE, a mailbox
    OFFER): the desktop decides from this alone what it needs."""

    pipeline_id: str | None  # None: the device holds no pipeline
    replica: str
    name: str
    live_records: int
    knowledge: Mapping[str, int]
    agreement: Mapping[str, int] | None  # what it last agreed with this desktop; None: never met
    blank: bool


@dataclass(frozen=True)
class DesktopHeader:
    """What the desktop says about its pipeline (a live OPEN, a mailbox ANSWER or LOAD): enough
    for a blank device to become that pipeline."""

    pipeline_id: str
    replica: str
    name: str
    owner: str
    currency: str
    extra: Mapping[str, str]
    knowledge: Mapping[str, int]


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def live_count(pipeline: Pipeline | None) -> int:
    return 0 if pipeline is None else pipeline.live_count()


# --- who is who ------------------------------------------------------------------------------


def check_same_pipeline(
    device_name: str,
    device_pipeline: str | None,
    desktop_name: str,
    desktop_pipeline: str,
    *,
    where: str = "",
) -> None:
    """A device that holds records of one pipeline never syncs another (either side checks)."""
    if device_pipeline is None or device_pipeline == desktop_pipeline:
        return
    raise SessionError(
        f"{where}the device holds another pipeline, {device_name!r} ({device_pipeline[:8]}); "
        f"the desktop's is {desktop_name!r} ({desktop_pipeline[:8]})",
        ErrorCode.PIPELINE,
    )


def check_two_replicas(desktop_replica: str, device_replica: str, *, local: bool = False) -> None:
    """Two replicas with one id would mint the same versions: refuse before anything moves."""
    if desktop_replica != device_replica:
        return
    if local:
        raise MergeError("both files are the same replica (was one copied over the other?)")
    raise SessionError(
        "the device holds this very replica (was this file copied onto it without "
        "salesmgr load?); load the device instead",
        ErrorCode.PIPELINE,
    )


def check_device(desktop: Pipeline, device: DeviceReport, *, where: str = "") -> None:
    """The desktop's checks of the device it met, before it asks for anything."""
    if not device.blank:
        check_same_pipeline(
            device.name, device.pipeline_id, desktop.name, desktop.pipeline_id, where=where
        )
    check_two_replicas(desktop.replica_id, device.replica)


# --- what the desktop asks for --------------------------------------------------------------


def slow_reason(desktop: Pipeline, device: DeviceReport) -> str:
    """Why the device must send everything, or "" when its changes since ours will do."""
    if device.blank:
        return DEVICE_BLANK
    if device.replica in restored_replicas(desktop, device.knowledge, device.replica):
        return DEVICE_RESTORED
    mine = desktop.replica_id
    told = max(device.knowledge.get(mine, 0), (device.agreement or {}).get(mine, 0))
    if told > desktop.knowledge.get(mine, 0):
        return DESKTOP_RESTORED
    if device.replica not in desktop.peers and device.agreement is None:
        return FIRST_MEETING
    return ""


def wanted(desktop: Pipeline, slow: str) -> dict[str, int]:
    """What the device is asked to send: everything for a slow sync, else what we lack."""
    return {} if slow else dict(desktop.knowledge)


def fork_if_restored(desktop: Pipeline, slow: str, dry_run: bool) -> tuple[str, ...]:
    """A desktop restored from a backup becomes a new replica before it merges.

    The device knows versions this file has forgotten: it mints only new ones from now on, and
    what the old identity wrote since the restore is weighed as concurrent edits (the replicas
    returned are the merge's ``untrusted``).  A dry run changes nothing, so it does not fork."""
    if slow != DESKTOP_RESTORED or dry_run:
        return ()
    return (desktop.fork(desktop.home),)


# --- the brake ---------------------------------------------------------------------------------


def brake(
    merged: MergeResult,
    desktop_before: int,
    device_before: int | None,
    *,
    dry_run: bool,
    allow: bool,
    where: str = "",
) -> str | None:
    """Stop a merge that would delete or overwrite most of one side before anything is written.

    ``device_before`` is None when the device held nothing (a blank device cannot lose records).
    Raises when the merge must not be written; returns the reason for a dry run to report."""
    reason = None if device_before is None else merged.mass_change(desktop_before, device_before)
    if reason is None or dry_run or allow:
        return reason if dry_run else None
    raise MassChange(f"{where}{reason}")


# --- the desktop merges ----------------------------------------------------------------------


@dataclass
class DesktopMerge:
    """What the desktop's merge of a device's changes did."""

    merged: MergeResult
    mass_change: str | None  # a dry run that a real sync would refuse: why
    before: Versions  # the desktop's versions before the merge, for `commit`


def merge_on_desktop(
    desktop: Pipeline,
    delta: Delta,
    device: DeviceReport,
    *,
    untrusted: tuple[str, ...],
    policy: str,
    dry_run: bool,
    allow_mass_change: bool,
    registry: Registry,
    events: Callable[..., None],
) -> DesktopMerge:
    """Merge the changes the device sent into ``desktop``, then apply the brake.

    ``untrusted`` is what `fork_if_restored` returned; ``events`` hears the ``merged`` stage.
    Nothing is saved here: the carrier commits the desktop (`commit`) before the device can
    commit what goes back."""
    desktop_before = live_count(desktop)
    before = versions(desktop)
    merged = merge_delta(desktop, delta, policy=policy, registry=registry, untrusted=untrusted)
    # Record only what the device is known to hold; the rest waits for its next report.
    desktop.peers[device.replica] = dict(device.knowledge)
    events("merged", **merged.report.progress())
    reason = brake(
        merged, desktop_before, None if device.blank else device.live_records,
        dry_run=dry_run, allow=allow_mass_change,
    )
    return DesktopMerge(merged, reason, before)


# --- commit order --------------------------------------------------------------------------


Versions = tuple[str, str, dict[str, int]]


def versions(pipeline: Pipeline) -> Versions:
    """What a side's file says about its history: a save is needed only when this moved (every
    change brings a version the file lacked)."""
    return pipeline.pipeline_id, pipeline.replica_id, dict(pipeline.knowledge)


def moved(pipeline: Pipeline, before: Versions) -> bool:
    """Whether a side must be saved: its versions moved since ``before``, or it is a copy that
    took a new identity when it was read (a moved desktop must keep it, or it is a stranger to
    its device at every later sync)."""
    return versions(pipeline) != before or bool(pipeline.forked_from)


def commit(pipeline: Pipeline, before: Versions, save: Callable[[Pipeline], None]) -> bool:
    """Save a side that `moved`; True when it was saved.

    The desktop commits first, before the device may commit anything that goes back to it: it
    minted the versions of the merge's own decisions, so the device must never hold a version
    the desktop lost.  (A live link may carry the records while the desktop saves: the device
    commits only at DELTA_END, sent after the save; `salesmgr.sync.batches.send_delta`.)"""
    if not moved(pipeline, before):
        return False
    save(pipeline)
    return True


# --- the device side -------------------------------------------------------------------------


def everything_peers_saw(pipeline: Pipeline) -> dict[str, int]:
    """The writes some peer of ``pipeline`` is known to hold (its desktops, for a device)."""
    seen: dict[str, int] = {}
    for known in pipeline.peers.values():
        for replica, counter in known.items():
            seen[replica] = max(counter, seen.get(replica, 0))
    return seen


def refuse_load(
    unseen: int, same_pipeline: bool, device_name: str, *, by: str = "the desktop",
    where: str = "",
) -> None:
    """A load replaces the device's pipeline: refuse it while the device holds changes that the
    loading desktop (``by``; for another pipeline, any desktop) has not seen."""
    if not unseen:
        return
    whose = f"{by} has" if same_pipeline else f"no desktop of {device_name!r} has"
    raise SessionError(
        f"the device holds {plural(unseen, 'changed record')} {whose} not seen{where}; "
        "sync first (salesmgr sync), then load",
        ErrorCode.REFUSED,
    )


@dataclass
class DeviceTarget:
    """The pipeline a device commits to: its own when it holds the desktop's pipeline, else an
    empty one with the desktop's header that keeps the device's counter (`fresh`)."""

    held: Pipeline | None
    header: DesktopHeader
    replica: str = field(default_factory=new_id)  # a device without this pipeline: a new replica

    def __post_init__(self) -> None:
        if self.held is not None and self.same:
            self.replica = self.held.replica_id

    @property
    def blank(self) -> bool:
        return self.held is None or not self.held.records

    @property
    def same(self) -> bool:
        return self.held is not None and self.held.pipeline_id == self.header.pipeline_id

    def fresh(self) -> Pipeline:
        """An empty pipeline with the desktop's header, to be filled by what it sends."""
        h = self.header
        fresh = Pipeline(
            pipeline_id=h.pipeline_id, name=h.name, owner=h.owner, currency=h.currency,
            replica_id=self.replica, extra=dict(h.extra),
        )
        if self.same and self.held is not None:
            fresh.peers = copy.deepcopy(self.held.peers)
            if self.held.counter:  # its own counter never goes back
                fresh.knowledge[self.replica] = self.held.counter
        return fresh


def check_desktop(
    target: DeviceTarget, *, load: bool, registry: Registry, where: str = ""
) -> None:
    """The device's checks of what a desktop hands it, before anything is taken: a sync of
    another pipeline, and a load that would overwrite changes no desktop has seen."""
    held, header = target.held, target.header
    if held is None or target.blank:
        return
    if not load:
        check_same_pipeline(held.name, held.pipeline_id, header.name, header.pipeline_id,
                            where=where)
        return
    seen = header.knowledge if target.same else everything_peers_saw(held)
    unseen = delta_since(held, seen, registry).records
    refuse_load(len(unseen), target.same, held.name)


# --- both replicas local (salesmgr merge, a pipeline file found in a mailbox) ---------------


@dataclass
class LocalMerge:
    """What merging two local replicas did."""

    merged: MergeResult
    mass_change: str | None  # a dry run that a real merge would refuse: why
    saved_desktop: bool = False
    saved_device: bool = False


@cyclic_gc_paused()  # the merge and both saves: copies of records, in no cycle
def merge_local(
    desktop: Pipeline,
    device: Pipeline,
    *,
    save_desktop: Callable[[Pipeline], None],
    save_device: Callable[[Pipeline], None],
    policy: str = "field-merge",
    combine: bool = False,
    dry_run: bool = False,
    allow_mass_change: bool = False,
    registry: Registry | None = None,
    where: str = "",
) -> LocalMerge:
    """A session whose two sides are both at hand: check, merge, brake, commit desktop first.

    ``where`` prefixes every refusal (the file the device side came from)."""
    desktop_before, device_before = live_count(desktop), live_count(device)
    before = versions(desktop), versions(device)
    try:
        check_two_replicas(desktop.replica_id, device.replica_id, local=True)
        merged = merge_files(desktop, device, policy=policy, combine=combine, registry=registry)
    except MergeError as problem:
        if not where:
            raise
        raise MergeError(f"{where}{problem}") from None
    reason = brake(merged, desktop_before, device_before, dry_run=dry_run,
                   allow=allow_mass_change, where=where)
    outcome = LocalMerge(merged, reason)
    if not dry_run:
        outcome.saved_desktop = commit(desktop, before[0], save_desktop)
        outcome.saved_device = commit(device, before[1], save_device)
    return outcome
