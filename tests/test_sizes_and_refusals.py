"""Files are read in bounded pieces after their size is checked, and a folder sync that refuses
an entry says so in its exit status (issue 9, item 6).

Memory is measured with tracemalloc (every bytes object a reader makes is traced); the files
are a few MiB, or sparse (they take no disk), never gigabytes of real data."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from helpers import desktop_file, peak_memory_of, salesmgr

from salesmgr import storage
from salesmgr.errors import SalesmgrError
from salesmgr.model.pipeline import Dot, Pipeline, Record
from salesmgr.plugin.manager import get_registry
from salesmgr.plugins.pipeline_codec import ENVELOPE_SIZE, Envelope
from salesmgr.plugins.transport_folder import FolderMailbox
from salesmgr.sync.device_file import DeviceFile
from salesmgr.sync.mailbox import DeviceDrops, DropReader
from salesmgr.sync.wire import auth, drops, protocol
from salesmgr.sync.wire.drops import DropKind

SECRET = "sizes-and-refusals-secret-Pq82Lm"
BIG_VALUE = 8 << 20  # one value this large makes the file about this large
REPLICA = "00000000-0000-4000-8000-00000000000a"


def one_big_record() -> Pipeline:
    pipeline = Pipeline("11111111-2222-4333-8444-555555555555", replica_id=REPLICA)
    record = Record("opportunity", "99999999-0000-4000-8000-000000000001",
                    {"company": "Acme", "notes": "n" * BIG_VALUE}, Dot(1, REPLICA, 1))
    pipeline.records[record.id] = record
    pipeline.knowledge = {REPLICA: 1}
    return pipeline


def make_old(path: Path) -> None:
    past = time.time() - 60  # not still being copied in
    os.utime(path, (past, past))


# --- bounded reading ----------------------------------------------------------------------------


def test_a_pipeline_file_costs_its_fields_once_not_the_file_and_then_its_fields(
    tmp_path: Path,
) -> None:
    path = tmp_path / "big.pipe"
    storage.save(one_big_record(), path)
    size = path.stat().st_size
    get_registry()
    peak = peak_memory_of(lambda: storage.load(path))
    assert peak < 1.3 * size, f"{peak} bytes held at once reading a {size}-byte file"
    assert storage.load(path).records.get("99999999-0000-4000-8000-000000000001") is not None


def test_a_file_whose_envelope_agrees_with_its_size_is_checked_in_pieces(tmp_path: Path) -> None:
    """Valid-looking up to its checksum, under the cap: read piece by piece, never whole."""
    size = 64 << 20
    path = tmp_path / "forged.pipe"
    path.write_bytes(Envelope.build({"major": 1, "minor": 0, "flags": 0,
                                     "body_length": size - ENVELOPE_SIZE, "crc32": 0}))
    os.truncate(path, size)
    get_registry()
    peak = peak_memory_of(lambda: storage.load(path))
    assert peak < 4 << 20, f"{peak} bytes held at once checking a {size}-byte file"
    with pytest.raises(SalesmgrError, match="checksum mismatch"):
        storage.load(path)


def test_a_file_over_the_cap_is_refused_by_its_size_alone(tmp_path: Path) -> None:
    path = tmp_path / "huge.pipe"
    path.write_bytes(b"not even looked at")
    os.truncate(path, storage.MAX_FILE + 1)
    started = time.monotonic()
    assert peak_memory_of(lambda: storage.load(path)) < 1 << 20
    assert time.monotonic() - started < 2
    with pytest.raises(SalesmgrError, match="too large for a pipeline file"):
        storage.load(path)


def test_a_drop_in_the_folder_is_not_copied_whole_on_its_way_in(tmp_path: Path) -> None:
    pipeline = one_big_record()
    load = drops.Load(drops.new_drop_id(), 1, pipeline.pipeline_id, REPLICA, "", "", "EUR", {},
                      dict(pipeline.knowledge), list(pipeline.records.values()))
    box = tmp_path / "box"
    box.mkdir()
    (box / load.entry).write_bytes(drops.seal(load, auth.secret_bytes(SECRET)))
    size = (box / load.entry).stat().st_size
    reader = DropReader(FolderMailbox(str(box)), auth.secret_bytes(SECRET), get_registry(), 0.0)
    looks = []
    peak = peak_memory_of(lambda: looks.append(reader.look({DropKind.LOAD})))
    assert [f.entry for f in looks[0].drops] == [load.entry]
    # The records travel as a pipeline file inside the drop: that file's bytes, then its fields.
    assert peak < 2.3 * size, f"{peak} bytes held at once reading a {size}-byte drop"


def test_a_sealed_file_in_the_folder_is_not_copied_whole_on_its_way_in(tmp_path: Path) -> None:
    box = tmp_path / "box"
    box.mkdir()
    DeviceFile(box / "handheld.pipe", secret=auth.secret_bytes(SECRET)).save(one_big_record())
    make_old(box / "handheld.pipe")
    size = (box / "handheld.pipe").stat().st_size
    reader = DropReader(FolderMailbox(str(box)), auth.secret_bytes(SECRET), get_registry(), 0.0)
    looks = []
    peak = peak_memory_of(lambda: looks.append(reader.look((), files=True)))
    assert [f.entry for f in looks[0].files] == ["handheld.pipe"]
    # Its fields, and the file encoded again to verify its seal.
    assert peak < 2.3 * size, f"{peak} bytes held at once reading a {size}-byte file"


# --- a folder sync that refuses something says so -------------------------------------------------


@pytest.fixture
def offered(tmp_path: Path) -> tuple[Path, Path]:
    """A desktop file, and a folder holding a real offer from its device with a new deal."""
    desk = desktop_file(tmp_path)
    box = tmp_path / "Mirror"
    box.mkdir()
    device = tmp_path / "device.pipe"
    shutil.copyfile(desk, device)
    pipeline = storage.load(device)
    pipeline.add(get_registry().record_type("opportunity"), {"company": "Road", "title": "x"})
    storage.save(pipeline, device)
    DeviceDrops(FolderMailbox(str(box)), SECRET, DeviceFile(device), settle=0.0).step()
    return desk, box


def refusing_entries(desk: Path, box: Path) -> dict[str, str]:
    """An entry of each kind a folder sync refuses, and what it says of it."""
    unsealed = box / "unsealed.pipe"
    shutil.copyfile(desk, unsealed)
    lying = box / "lying.pipe"
    lying.write_bytes(desk.read_bytes())
    os.truncate(lying, 256 << 20)  # sparse: far more than its envelope declares
    huge = box / drops.drop_name(DropKind.OFFER, drops.new_drop_id())
    huge.write_bytes(drops.HEADER.pack(drops.MAGIC, drops.VERSION, int(DropKind.OFFER), 0,
                                       bytes(16), drops.MAX_BODY + 1, 0))
    os.truncate(huge, 256 << 20)
    for entry in (unsealed, lying, huge):
        make_old(entry)
    return {
        "unsealed.pipe": "not merged: it carries no seal of a paired device",
        "lying.pipe": "but its envelope declares",
        huge.name: "is impossible",
    }


def test_a_sync_that_refused_entries_names_them_and_exits_8(
    offered: tuple[Path, Path],
) -> None:
    desk, box = offered
    says = refusing_entries(desk, box)
    kept = {name: (box / name).stat() for name in says}
    result = salesmgr("sync", desk, "--from", f"folder://{box}", "--secret", SECRET)
    assert result.exit_code == 8, result.output
    # What could be synced was: the offer is merged and saved, its answer left.
    assert "Road" in [r.values.get("company") for r in storage.load(desk).records.values()]
    assert list(box.glob("answer-*.smdrop"))
    for name, why in says.items():
        refused = [line for line in result.stdout.splitlines() if line.startswith("refused ")]
        assert any(name in line and why in line and "left in place" in line
                   for line in refused), (name, result.stdout)
        assert (box / name).stat().st_size == kept[name].st_size  # untouched
    (error,) = result.stderr.strip().splitlines()
    assert error.startswith("salesmgr: done for the rest, but refused 3 entries of the folder: ")


def test_the_json_of_a_partial_sync_lists_what_it_refused(offered: tuple[Path, Path]) -> None:
    desk, box = offered
    says = refusing_entries(desk, box)
    result = salesmgr("sync", desk, "--from", f"folder://{box}", "--secret", SECRET, "--json")
    assert result.exit_code == 8
    (report,) = json.loads(result.stdout) if result.stdout.lstrip().startswith("[") else [
        json.loads(result.stdout)]
    assert sorted(n for n in says if any(n in r for r in report["refused"])) == sorted(says)


def test_a_sync_that_refused_nothing_exits_0(offered: tuple[Path, Path]) -> None:
    desk, box = offered
    result = salesmgr("sync", desk, "--from", f"folder://{box}", "--secret", SECRET)
    assert result.exit_code == 0, result.output
    assert "refused" not in result.stdout


def test_a_sync_that_refused_everything_changed_nothing_and_exits_7(tmp_path: Path) -> None:
    desk = desktop_file(tmp_path)
    box = tmp_path / "Mirror"
    box.mkdir()
    refusing_entries(desk, box)
    before = desk.read_bytes()
    result = salesmgr("sync", desk, "--from", f"folder://{box}", "--secret", SECRET)
    assert result.exit_code == 7
    assert "nothing was changed" in result.stderr
    assert desk.read_bytes() == before


def test_a_sealed_message_is_checked_and_parsed_without_copies_of_itself() -> None:
    """A message's length is checked against the protocol's cap before it is read (by the
    link); checking its CRC and tag and parsing it then cost its parsed fields, not the message
    again, and again with its envelope in front."""
    key = bytes(32)
    data = protocol.build(protocol.Batch(0, 1, bytes(BIG_VALUE)), seq=3, key=key)
    received: list[protocol.Received] = []
    peak = peak_memory_of(lambda: received.append(protocol.parse(data, key)))
    assert isinstance(received[0].message, protocol.Batch)
    assert len(received[0].message.payload) == BIG_VALUE
    assert peak < 1.3 * len(data), f"{peak} bytes held at once parsing a {len(data)}-byte message"
