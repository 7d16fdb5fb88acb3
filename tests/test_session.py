"""A sync session, both ends in one process over an in-memory Link pair: what each end writes,
when, and what it refuses."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeAlias

import pytest

from salesmgr import hookimpl, storage
from salesmgr.errors import (
    ErrorCode,
    MergeError,
    PeerError,
    PipelineFileError,
    SalesmgrError,
    SyncError,
)
from salesmgr.model.pipeline import Pipeline
from salesmgr.plugin.manager import get_registry
from salesmgr.sync import batches
from salesmgr.sync.device_file import DeviceFile, DeviceStore
from salesmgr.sync.results import SessionResult
from salesmgr.sync.session import DesktopSession, DeviceSession
from salesmgr.sync.wire.protocol import MessageType
from salesmgr.testing.compare import user_data
from salesmgr.testing.links import MemoryLink, memory_link_pair

SECRET = "correct horse battery staple"


class MemoryStore:
    """A device's storage in memory; counts its saves."""

    def __init__(self, pipeline: Pipeline | None = None) -> None:
        self.data = storage.encode(pipeline) if pipeline is not None else None
        self.saves = 0
        self.on_save: Callable[[], None] | None = None
        self.renamed = False

    def load(self) -> Pipeline | None:
        return None if self.data is None else storage.decode(self.data, "device")

    def save(self, pipeline: Pipeline) -> None:
        if self.on_save:
            self.on_save()
        self.data = storage.encode(pipeline)
        self.saves += 1

    @property
    def pipeline(self) -> Pipeline:
        found = self.load()
        assert found is not None
        return found

    def edit(self, change: Callable[[Pipeline], Any]) -> None:
        pipeline = self.pipeline
        change(pipeline)
        self.data = storage.encode(pipeline)


class Desktop:
    """A desktop pipeline file in memory: each session opens it afresh, as the CLI does."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.data = storage.encode(pipeline)
        self.saves = 0
        self.on_save: Callable[[], None] | None = None

    @property
    def pipeline(self) -> Pipeline:
        return storage.decode(self.data, "desktop")

    def save(self, pipeline: Pipeline) -> None:
        if self.on_save:
            self.on_save()
        self.data = storage.encode(pipeline)
        self.saves += 1

    def edit(self, change: Callable[[Pipeline], Any]) -> None:
        pipeline = self.pipeline
        change(pipeline)
        self.data = storage.encode(pipeline)


Outcome: TypeAlias = SessionResult | SalesmgrError


def run(
    act: Callable[[DesktopSession], SessionResult],
    store: DeviceStore,
    *,
    desktop_secret: str = SECRET,
    device_secret: str = SECRET,
    links: tuple[Any, Any] | None = None,
    batch_bytes: int = 256 * 1024,
) -> tuple[Outcome, Outcome]:
    """Run one session; each end's result, or the error it raised."""
    desk_link, dev_link = links or memory_link_pair()
    device_outcome: list[Outcome] = []

    def device() -> None:
        try:
            device_outcome.append(
                DeviceSession(
                    dev_link, device_secret, store, timeout=5, batch_bytes=batch_bytes
                ).serve()
            )
        except SalesmgrError as error:
            device_outcome.append(error)
        finally:
            dev_link.close()

    thread = threading.Thread(target=device)
    thread.start()
    try:
        desktop_outcome: Outcome = act(
            DesktopSession(desk_link, desktop_secret, timeout=5, batch_bytes=batch_bytes)
        )
    except SalesmgrError as error:
        desktop_outcome = error
    finally:
        desk_link.close()
        thread.join(10)
    assert not thread.is_alive()
    return desktop_outcome, device_outcome[0]


def ok(outcome: Outcome) -> SessionResult:
    assert isinstance(outcome, SessionResult), f"session failed: {outcome}"
    return outcome


def sync(desktop: Desktop, store: DeviceStore, **kw: Any) -> tuple[Outcome, Outcome]:
    options = {k: kw.pop(k) for k in ("policy", "dry_run", "allow_mass_change") if k in kw}
    pipeline = desktop.pipeline
    return run(lambda s: s.sync(pipeline, save=desktop.save, **options), store, **kw)


def load(desktop: Desktop, store: DeviceStore, **kw: Any) -> tuple[Outcome, Outcome]:
    return run(lambda s: s.load(desktop.pipeline), store, **kw)


OPP = "opportunity"


def opportunity_type() -> Any:
    return get_registry().record_type(OPP)


def new_pipeline(count: int = 5) -> Pipeline:
    pipeline = Pipeline.create("Spring", "ana")
    for i in range(count):
        pipeline.add(opportunity_type(), {"company": f"Company {i}", "title": f"Deal {i}"})
    return pipeline


def add(pipeline: Pipeline, company: str) -> str:
    record, _ = pipeline.add(opportunity_type(), {"company": company, "title": "new"})
    return record.id


def update(pipeline: Pipeline, record_id: str, **changes: str) -> None:
    pipeline.update(opportunity_type(), record_id, changes)


def companies(pipeline: Pipeline) -> list[str]:
    return sorted(r.values["company"] for r in pipeline.live(OPP))


@pytest.fixture
def loaded() -> tuple[Desktop, MemoryStore]:
    """A desktop and a device loaded with it this morning."""
    desktop = Desktop(new_pipeline())
    store = MemoryStore()
    ok(load(desktop, store)[0])
    return desktop, store


# --- load -------------------------------------------------------------------------------------


def test_load_onto_a_new_device_gives_it_the_pipeline_under_a_replica_id_of_its_own() -> None:
    desktop = Desktop(new_pipeline())
    store = MemoryStore()
    desk, dev = load(desktop, store)
    assert ok(desk).committed and ok(dev).committed
    device = store.pipeline
    assert user_data(device) == user_data(desktop.pipeline)
    assert device.pipeline_id == desktop.pipeline.pipeline_id
    assert device.replica_id != desktop.pipeline.replica_id
    assert desktop.saves == 0  # load never writes the desktop file
    assert ok(desk).device_records == 5


def test_load_onto_an_empty_pipeline_just_works() -> None:
    desktop = Desktop(new_pipeline())
    store = MemoryStore(Pipeline.create("blank"))
    ok(load(desktop, store)[0])
    assert user_data(store.pipeline) == user_data(desktop.pipeline)


def test_load_refuses_a_device_holding_changes_the_desktop_has_not_seen(
    loaded: tuple[Desktop, MemoryStore],
) -> None:
    desktop, store = loaded
    store.edit(lambda p: add(p, "Made on the road"))
    before = store.data
    desk, dev = load(desktop, store)
    assert isinstance(desk, PeerError) and desk.wire_code == ErrorCode.REFUSED
    assert "sync first" in str(desk) and "sync first" in str(dev)
    assert store.data == before and store.saves == 1
    ok(sync(desktop, store)[0])
    ok(load(desktop, store)[0])  # nothing unseen any more
    assert "Made on the road" in companies(store.pipeline)


def test_load_refuses_to_replace_another_pipeline_with_unsynced_changes() -> None:
    other = MemoryStore(new_pipeline(2))  # its records were never synced anywhere
    before = other.data
    desk, _ = load(Desktop(new_pipeline()), other)
    assert isinstance(desk, PeerError) and "sync first" in str(desk)
    assert other.data == before


# --- sync -------------------------------------------------------------------------------------


def test_a_days_edits_on_both_sides_meet_in_the_evening(
    loaded: tuple[Desktop, MemoryStore],
) -> None:
    desktop, store = loaded
    ids = sorted(desktop.pipeline.records)
    names = {rid: r.values["company"] for rid, r in desktop.pipeline.records.items()}

    def at_the_office(pipeline: Pipeline) -> None:
        add(pipeline, "Desk lead")
        update(pipeline, ids[0], stage="Proposal")
        pipeline.delete(ids[1])

    desktop.edit(at_the_office)

    def on_the_road(device: Pipeline) -> None:
        add(device, "Road lead")
        update(device, ids[2], value="1200")
        device.delete(ids[3])

    store.edit(on_the_road)
    desk, dev = sync(desktop, store)
    result = ok(desk)
    ok(dev)
    assert result.records_received == 3 and result.committed and result.saved
    assert user_data(store.pipeline) == user_data(desktop.pipeline)
    assert companies(store.pipeline) == sorted(
        set(names.values()) - {names[ids[1]], names[ids[3]]} | {"Desk lead", "Road lead"}
    )
    assert store.pipeline.records[ids[2]].values["value"] == "1200.00"
    assert result.report is not None
    assert result.report.to_desktop.as_json() == {"added": 1, "changed": 1, "deleted": 1}
    assert result.report.to_device.as_json() == {"added": 1, "changed": 1, "deleted": 1}


def test_a_second_sync_moves_no_records_and_writes_no_file(
    loaded: tuple[Desktop, MemoryStore],
) -> None:
    desktop, store = loaded
    store.edit(lambda p: add(p, "Road lead"))
    ok(sync(desktop, store)[0])
    saves = (store.saves, desktop.saves)
    desk, dev = sync(desktop, store)
    assert ok(desk).records_received == 0 and ok(desk).records_sent == 0
    assert not ok(desk).saved and not ok(dev).saved
    assert (store.saves, desktop.saves) == saves
    assert ok(desk).bytes_sent + ok(desk).bytes_received < 1500


@pytest.fixture
def evening(loaded: tuple[Desktop, MemoryStore]) -> tuple[Desktop, MemoryStore]:
    """The loaded pair after a day's addition on each side."""
    desktop, store = loaded
    store.edit(lambda p: add(p, "Road lead"))
    desktop.edit(lambda p: add(p, "Desk lead"))
    return desktop, store


def test_the_desktop_saves_before_the_device_commits_anything(
    evening: tuple[Desktop, MemoryStore],
) -> None:
    desktop, store = evening
    order: list[str] = []
    desktop.on_save = lambda: order.append("desktop")
    store.on_save = lambda: order.append("device")
    ok(sync(desktop, store)[0])
    assert order == ["desktop", "device"]


class WatchedLink(MemoryLink):
    """A desktop link that notes each message type it sends in ``order`` (shared with the
    desktop's save), and fails instead of sending the types in ``fail_on``."""

    def __init__(self, order: list[str], fail_on: frozenset[MessageType] = frozenset()) -> None:
        super().__init__("desktop link")
        self.order = order
        self.fail_on = fail_on
        self.hold: dict[MessageType, threading.Event] = {}  # sent once the event is set (or 2 s)

    def send(self, message: bytes) -> None:
        kind = MessageType(message[5])  # the envelope: magic (4), version, type
        if kind in self.fail_on:
            raise SyncError("the line went dead")
        if kind in self.hold:
            self.hold[kind].wait(2)
        self.order.append(kind.name)
        super().send(message)


def watched_pair(
    order: list[str], fail_on: frozenset[MessageType] = frozenset()
) -> tuple[WatchedLink, MemoryLink]:
    desk, dev = WatchedLink(order, fail_on), MemoryLink("device link")
    desk.peer, dev.peer = dev, desk
    return desk, dev


def after_pull(order: list[str]) -> list[str]:
    return order[order.index("PULL") + 1 :]


def test_the_records_go_back_while_the_desktop_saves_and_delta_end_only_after_it(
    evening: tuple[Desktop, MemoryStore],
) -> None:
    desktop, store = evening
    order: list[str] = []
    desktop.on_save = lambda: order.append("saved")
    desk, dev = sync(desktop, store, links=watched_pair(order))
    assert ok(desk).saved and ok(dev).committed
    assert after_pull(order) == ["BATCH", "saved", "DELTA_END"]
    assert companies(store.pipeline) == companies(desktop.pipeline)


def test_a_large_delta_does_not_hold_back_the_desktops_save(
    loaded: tuple[Desktop, MemoryStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    desktop, store = loaded
    store.edit(lambda p: add(p, "Road lead"))
    desktop.edit(lambda p: [add(p, f"Desk lead {i}") for i in range(12)])
    monkeypatch.setattr(batches, "AHEAD_BYTES", 1000)  # a few of the 200-byte batches
    order: list[str] = []
    desktop.on_save = lambda: order.append("saved")
    desk, dev = sync(desktop, store, links=watched_pair(order), batch_bytes=200)
    assert ok(desk).saved and ok(dev).committed
    pushed = after_pull(order)
    ahead = pushed.index("saved")
    assert 1 <= ahead < pushed.count("BATCH")  # some went ahead, not all
    assert pushed[ahead + 1 :] == ["BATCH"] * (len(pushed) - ahead - 2) + ["DELTA_END"]
    assert companies(store.pipeline) == companies(desktop.pipeline)


def test_a_link_that_fails_before_the_save_still_leaves_the_merge_saved_on_the_desktop(
    evening: tuple[Desktop, MemoryStore],
) -> None:
    desktop, store = evening
    device_before, saves = store.data, (desktop.saves, store.saves)
    order: list[str] = []
    desk, dev = sync(desktop, store, links=watched_pair(order, frozenset({MessageType.BATCH})))
    assert isinstance(desk, SyncError) and "went dead" in str(desk)
    assert isinstance(dev, SalesmgrError)  # told why the desktop stopped: nothing committed
    assert (desktop.saves, store.saves) == (saves[0] + 1, saves[1])
    assert "Road lead" in companies(desktop.pipeline) and store.data == device_before


def test_only_changes_cross_the_link_after_a_load() -> None:
    desktop = Desktop(new_pipeline(400))
    store = MemoryStore()
    full = ok(load(desktop, store)[0]).bytes_sent
    ids = sorted(desktop.pipeline.records)
    store.edit(lambda p: update(p, ids[0], stage="Won"))
    result = ok(sync(desktop, store)[0])
    assert not result.slow
    assert result.records_received == 1
    assert result.bytes_sent + result.bytes_received < full / 20


def test_first_sync_with_an_unknown_device_compares_everything_without_duplicates() -> None:
    desktop = Desktop(new_pipeline())
    # The device was loaded the old way: a copy of the file, which became a replica of its own.
    copy = storage.decode(storage.encode(desktop.pipeline), "copy")
    copy.fork("device:/copy")
    add(copy, "Road lead")
    store = MemoryStore(copy)
    desktop.edit(lambda p: p.peers.clear())
    result = ok(sync(desktop, store)[0])
    assert result.slow == ""  # the copy remembers the desktop it came from
    assert len(desktop.pipeline.records) == 6

    stranger = MemoryStore(storage.decode(storage.encode(copy), "stranger"))
    stranger.edit(lambda p: (p.peers.clear(), p.fork("elsewhere:/x"), p.peers.clear()))
    other_desktop = Desktop(desktop.pipeline)
    other_desktop.edit(lambda p: (p.fork("other:/desk"), p.peers.clear()))
    result = ok(sync(other_desktop, stranger)[0])
    assert result.slow.startswith("first sync")
    assert result.records_received == 6  # everything, and yet...
    assert len(other_desktop.pipeline.records) == 6  # ...no duplicates
    assert user_data(other_desktop.pipeline) == user_data(stranger.pipeline)


def test_a_device_file_copied_from_the_desktop_becomes_a_replica_of_its_own(
    tmp_path: Path,
) -> None:
    desk = tmp_path / "desk.pipe"
    storage.save(new_pipeline(), desk)
    copied = tmp_path / "device.pipe"
    copied.write_bytes(desk.read_bytes())  # the old way: copy the file onto the device
    device = DeviceFile(copied)
    desktop = Desktop(storage.load(desk))
    first = ok(sync(desktop, device)[1])
    assert device.renamed and first.saved  # the new identity is written down at once
    assert storage.load(copied).replica_id != desktop.pipeline.replica_id
    desk_result, again = sync(desktop, device)
    assert not device.renamed and not ok(again).saved
    assert not ok(desk_result).slow and ok(desk_result).records_received == 0


def test_the_same_replica_on_both_ends_is_refused() -> None:
    desktop = Desktop(new_pipeline())
    store = MemoryStore(desktop.pipeline)  # not forked: the very same replica id
    desk, dev = sync(desktop, store)
    assert isinstance(desk, SyncError) and "this very replica" in str(desk)
    assert isinstance(dev, PeerError)
    assert desktop.saves == 0 and store.saves == 0


def test_a_reset_device_is_loaded_again_and_deletes_nothing(
    loaded: tuple[Desktop, MemoryStore],
) -> None:
    desktop, _ = loaded
    before = user_data(desktop.pipeline)
    for reset in (MemoryStore(), MemoryStore(Pipeline.create("factory default"))):
        desk, _ = sync(desktop, reset)
        assert "loaded again" in ok(desk).slow
        assert user_data(desktop.pipeline) == before
        assert user_data(reset.pipeline) == before


class Collections:
    """Notes in ``order`` each time the changes of ``replica`` are collected, and for whom."""

    def __init__(self, order: list[str], replica: str) -> None:
        self.order = order
        self.replica = replica
        self.asked: list[dict[str, int]] = []
        self.done = threading.Event()

    @hookimpl(wrapper=True)
    def salesmgr_collect_changes(self, replica: Pipeline, since: dict[str, int]) -> Any:
        if replica.replica_id == self.replica:
            self.order.append("collected")
            self.asked.append(dict(since))
            self.done.set()
        return (yield)


def test_a_device_restored_from_a_backup_gets_a_full_comparison(
    loaded: tuple[Desktop, MemoryStore],
) -> None:
    desktop, store = loaded
    backup = store.data
    store.edit(lambda p: add(p, "Lost with the old phone?"))
    ok(sync(desktop, store)[0])
    store.data = backup  # the phone was restored from last week's backup
    device = Collections([], store.pipeline.replica_id)
    with registered(device):
        result = ok(sync(desktop, store)[0])
    assert "restored" in result.slow
    assert device.asked[-1] == {}  # not what it collected before PULL came: everything
    assert "Lost with the old phone?" in companies(store.pipeline)
    assert user_data(store.pipeline) == user_data(desktop.pipeline)


class ReadNoted:
    """A device store that notes in ``order`` when the session reads it."""

    renamed = False

    def __init__(self, store: MemoryStore, order: list[str]) -> None:
        self.store = store
        self.order = order
        self.read = threading.Event()

    def load(self) -> Pipeline | None:
        self.order.append("device read")
        self.read.set()
        return self.store.load()

    def save(self, pipeline: Pipeline) -> None:
        self.store.save(pipeline)


def test_the_device_reads_its_file_while_open_crosses_the_line(
    evening: tuple[Desktop, MemoryStore],
) -> None:
    desktop, store = evening
    order: list[str] = []
    device = ReadNoted(store, order)
    links = watched_pair(order)
    links[0].hold[MessageType.OPEN] = device.read  # OPEN leaves only once the device read
    desk, dev = sync(desktop, device, links=links)
    assert ok(desk).committed and ok(dev).committed
    assert order.index("PROOF") < order.index("device read") < order.index("OPEN")
    assert companies(store.pipeline) == companies(desktop.pipeline)


def test_the_desktop_reads_its_pipeline_while_the_device_reads_its_own(
    evening: tuple[Desktop, MemoryStore],
) -> None:
    """`DesktopSession.opening`: the pairing is proved first, so the device starts on its
    file while the desktop reads its own, instead of after it."""
    desktop, store = evening
    order: list[str] = []
    device = ReadNoted(store, order)

    def read_desktop() -> Pipeline:
        assert device.read.wait(2), "the device had not started reading its file"
        order.append("desktop read")
        return desktop.pipeline

    desk, dev = run(
        lambda s: s.sync(s.opening(read_desktop), save=desktop.save), device,
        links=watched_pair(order),
    )
    assert ok(desk).committed and ok(dev).committed
    assert order.index("PROOF") < order.index("device read") < order.index("desktop read")
    assert order.index("desktop read") < order.index("OPEN")
    assert companies(store.pipeline) == companies(desktop.pipeline)


def test_a_desktop_pipeline_that_cannot_be_read_ends_the_session_and_the_device_is_told(
    evening: tuple[Desktop, MemoryStore],
) -> None:
    _, store = evening
    saves = store.saves

    def unreadable() -> Pipeline:
        raise PipelineFileError("desk.smp", "checksum mismatch: the file is damaged")

    desk, dev = run(lambda s: s.sync(s.opening(unreadable), save=lambda _: None), store)
    assert isinstance(desk, PipelineFileError) and "checksum mismatch" in str(desk)
    assert isinstance(dev, PeerError) and "checksum mismatch" in str(dev)
    assert store.saves == saves


def test_the_device_collects_what_a_normal_sync_pulls_while_the_pull_crosses_the_line(
    evening: tuple[Desktop, MemoryStore],
) -> None:
    desktop, store = evening
    opened_with = dict(desktop.pipeline.knowledge)
    order: list[str] = []
    device = Collections(order, store.pipeline.replica_id)
    links = watched_pair(order)
    links[0].hold[MessageType.PULL] = device.done  # PULL leaves only once the device collected
    with registered(device):
        desk, dev = sync(desktop, store, links=links)
    assert ok(desk).records_received == 1 and ok(dev).committed
    assert order.index("collected") < order.index("PULL")
    assert device.asked == [opened_with]  # once, and PULL asked just that
    assert companies(store.pipeline) == companies(desktop.pipeline)


def test_a_desktop_file_restored_from_a_backup_becomes_a_new_replica(
    loaded: tuple[Desktop, MemoryStore],
) -> None:
    desktop, store = loaded
    backup = desktop.data
    desktop.edit(lambda p: add(p, "Made after the backup"))
    ok(sync(desktop, store)[0])
    desktop.data = backup
    old_id = desktop.pipeline.replica_id
    result = ok(sync(desktop, store)[0])
    assert "restored" in result.slow
    assert desktop.pipeline.replica_id != old_id  # never mints a dot the device already knows
    assert "Made after the backup" in companies(desktop.pipeline)


def test_a_dry_run_writes_nothing_on_either_side(loaded: tuple[Desktop, MemoryStore]) -> None:
    desktop, store = loaded
    store.edit(lambda p: add(p, "Road lead"))
    desktop.edit(lambda p: add(p, "Desk lead"))
    before = (desktop.data, store.data)
    desk, dev = sync(desktop, store, dry_run=True)
    result = ok(desk)
    assert result.dry_run and not result.committed and not ok(dev).committed
    assert result.report is not None and result.report.to_desktop.added == 1
    assert (desktop.data, store.data) == before and desktop.saves == 0
    assert "dry run: nothing was written on either side" in result.lines()


def test_a_mass_deletion_stops_before_anything_is_written() -> None:
    desktop = Desktop(new_pipeline(30))
    store = MemoryStore()
    ok(load(desktop, store)[0])
    store.edit(lambda p: [p.delete(rid) for rid in sorted(p.records)[:20]])
    device_before = store.data
    desk, dev = sync(desktop, store)
    assert isinstance(desk, MergeError) and "20 of the 30" in str(desk)
    assert isinstance(dev, PeerError) and dev.wire_code == ErrorCode.MASS_CHANGE
    assert desktop.saves == 0 and store.data == device_before
    assert "a real sync would stop" in "\n".join(ok(sync(desktop, store, dry_run=True)[0]).lines())
    ok(sync(desktop, store, allow_mass_change=True)[0])
    assert len(companies(desktop.pipeline)) == 10


@pytest.mark.parametrize("policy", ["field-merge", "device-wins", "keep-both"])
def test_any_policy_decides_a_true_conflict(
    loaded: tuple[Desktop, MemoryStore], policy: str
) -> None:
    desktop, store = loaded
    rid = sorted(desktop.pipeline.records)[0]
    desktop.edit(lambda p: update(p, rid, stage="Won"))
    store.edit(lambda p: update(p, rid, stage="Lost"))
    result = ok(sync(desktop, store, policy=policy)[0])
    assert result.report is not None and len(result.report.conflicts) == 1
    assert user_data(store.pipeline) == user_data(desktop.pipeline)


def test_an_unknown_policy_fails_before_anything_is_sent(
    loaded: tuple[Desktop, MemoryStore],
) -> None:
    desktop, store = loaded
    link, _ = memory_link_pair()
    with pytest.raises(SalesmgrError, match="no merge policy 'nope'"):
        DesktopSession(link, SECRET).sync(desktop.pipeline, save=desktop.save, policy="nope")
    assert store.saves == 1
    assert link.bytes_sent == 0


# --- refusals -----------------------------------------------------------------------------------


def test_a_wrong_secret_is_refused_on_both_ends_and_changes_nothing(
    loaded: tuple[Desktop, MemoryStore],
) -> None:
    desktop, store = loaded
    store.edit(lambda p: add(p, "Road lead"))
    before = store.data
    desk, dev = sync(desktop, store, desktop_secret="guess")
    assert isinstance(desk, SyncError) and "authentication failed" in str(desk)
    assert isinstance(dev, SyncError) and "authentication failed" in str(dev)
    assert desktop.saves == 0 and store.data == before


def test_a_device_holding_another_pipeline_is_refused(loaded: tuple[Desktop, MemoryStore]) -> None:
    _, store = loaded
    stranger = Desktop(new_pipeline(3))
    before = store.data
    desk, dev = sync(stranger, store)
    assert isinstance(desk, PeerError) and desk.wire_code == ErrorCode.PIPELINE
    assert "another pipeline" in str(desk) and "another pipeline" in str(dev)
    assert stranger.saves == 0 and store.data == before


# --- delivery -----------------------------------------------------------------------------------


class TwiceLink(MemoryLink):
    """Delivers every message twice, as a retrying transport might."""

    def send(self, message: bytes) -> None:
        super().send(message)
        super().send(message)


def twice_pair() -> tuple[TwiceLink, TwiceLink]:
    a, b = TwiceLink("desktop link"), TwiceLink("device link")
    a.peer, b.peer = b, a
    return a, b


def test_a_message_delivered_twice_is_applied_once(loaded: tuple[Desktop, MemoryStore]) -> None:
    desktop, store = loaded
    store.edit(lambda p: add(p, "Road lead"))
    desktop.edit(lambda p: add(p, "Desk lead"))
    desk, dev = sync(desktop, store, links=twice_pair(), batch_bytes=200)
    assert ok(desk).committed and ok(dev).committed
    assert companies(store.pipeline) == companies(desktop.pipeline)
    assert len(companies(desktop.pipeline)) == 7


def test_large_deltas_travel_in_many_batches() -> None:
    desktop = Desktop(new_pipeline(60))
    store = MemoryStore()
    events: list[tuple[str, dict[str, Any]]] = []
    with listening(events):
        ok(load(desktop, store, batch_bytes=1000)[0])
    batches = [i for stage, i in events if stage == "batch" and i["side"] == "device"]
    assert len(batches) > 5
    assert batches[-1]["records"] == 60
    assert user_data(store.pipeline) == user_data(desktop.pipeline)


# --- progress events -----------------------------------------------------------------------------


class Recorder:
    def __init__(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        self.events = events
        self.lock = threading.Lock()

    @hookimpl
    def salesmgr_sync_event(self, stage: str, info: dict[str, Any]) -> None:
        with self.lock:
            self.events.append((stage, dict(info)))


class registered:
    """A plugin registered for the time of a with block."""

    def __init__(self, plugin: object) -> None:
        self.plugin = plugin

    def __enter__(self) -> None:
        get_registry().pm.register(self.plugin)

    def __exit__(self, *exc: object) -> None:
        get_registry().pm.unregister(self.plugin)


def listening(events: list[tuple[str, dict[str, Any]]]) -> registered:
    return registered(Recorder(events))


def stages(events: list[tuple[str, dict[str, Any]]], side: str) -> list[str]:
    seen: list[str] = []
    for stage, info in events:
        if info["side"] == side and (not seen or seen[-1] != stage):
            seen.append(stage)
    return seen


def test_both_ends_report_each_stage(loaded: tuple[Desktop, MemoryStore]) -> None:
    desktop, store = loaded
    store.edit(lambda p: add(p, "Road lead"))
    desktop.edit(lambda p: add(p, "Desk lead"))
    events: list[tuple[str, dict[str, Any]]] = []
    with listening(events):
        ok(sync(desktop, store)[0])
    assert stages(events, "desktop") == [
        "hello", "authenticated", "batch", "merged", "batch", "committed"
    ]
    assert stages(events, "device") == ["hello", "authenticated", "batch", "committed"]
    received = [i for s, i in events if s == "batch" and i["direction"] == "received"]
    assert all(i["records"] > 0 and i["bytes"] > 0 for i in received)


def test_a_failed_session_is_reported_by_both_ends(loaded: tuple[Desktop, MemoryStore]) -> None:
    desktop, store = loaded
    events: list[tuple[str, dict[str, Any]]] = []
    with listening(events):
        sync(desktop, store, device_secret="other")
    failed = {i["side"]: i["error"] for s, i in events if s == "failed"}
    assert set(failed) == {"desktop", "device"}
    assert all("authentication failed" in text for text in failed.values())


@pytest.fixture(autouse=True)
def no_leftover_plugins() -> Iterator[None]:
    before = len(get_registry().pm.get_plugins())
    yield
    assert len(get_registry().pm.get_plugins()) == before
