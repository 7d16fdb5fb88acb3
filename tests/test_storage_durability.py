"""Saving a pipeline never leaves a torn file: the new version is written to a temporary file,
flushed to the disk, and renamed over the old one, and the rename itself is made durable.

A reader that opened the file before a save keeps reading one whole version; a save that fails
half-way (the disk fills up) leaves the old file as it was; the new bytes reach the disk before
the rename that makes them the file, and the folder after it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from salesmgr import storage
from salesmgr.model.pipeline import Pipeline
from salesmgr.plugin.manager import get_registry
from salesmgr.testing.compare import user_data


def pipeline_of(count: int, company: str) -> Pipeline:
    pipeline = Pipeline.create("Durable", "ana")
    opportunity = get_registry().record_type("opportunity")
    for number in range(count):
        pipeline.add(opportunity, {"company": f"{company} {number}", "title": "Deal",
                                   "notes": "a line of notes to give the file some weight\n" * 4})
    return pipeline


def test_a_reader_that_opened_the_file_before_a_save_reads_the_old_version_whole(
    tmp_path: Path,
) -> None:
    path = tmp_path / "desk.smp"
    storage.save(pipeline_of(50, "Old"), path)
    old_bytes = path.read_bytes()
    with open(path, "rb") as reader:  # e.g. a backup tool or the other side of a sync
        storage.save(pipeline_of(80, "New"), path)
        assert reader.read() == old_bytes
    assert {r.values["company"] for r in storage.load(path).live()} == {
        f"New {n}" for n in range(80)
    }
    assert path.stat().st_ino != os.stat(path.with_name("desk.smp.bak")).st_ino
    assert path.with_name("desk.smp.bak").read_bytes() == old_bytes


# A save in a child process whose files may not grow past a limit: the disk "fills up" part-way
# through writing the new version (RLIMIT_FSIZE; the write fails with EFBIG).
SAVE_WITH_A_FULL_DISK = textwrap.dedent("""
    import resource, signal, sys
    from salesmgr import storage
    from salesmgr.errors import PipelineFileError
    from salesmgr.plugin.manager import get_registry
    pipeline = storage.load(sys.argv[1])
    opportunity = get_registry().record_type("opportunity")
    for number in range(400):
        pipeline.add(opportunity, {"company": f"Grown {number}", "title": "Deal",
                                   "notes": "more notes than the disk can take\\n" * 8})
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    limit = int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    try:
        storage.save(pipeline, sys.argv[1])
    except PipelineFileError as problem:
        print(problem)
        sys.exit(3)
    sys.exit(0)
""")


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
def test_a_save_that_fails_half_way_leaves_the_old_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "desk.smp"
    old = pipeline_of(20, "Old")
    storage.save(old, path)
    old_bytes = path.read_bytes()
    limit = len(old_bytes) + 4096  # the new version is much larger: it cannot be written whole
    run = subprocess.run(
        [sys.executable, "-c", SAVE_WITH_A_FULL_DISK, str(path), str(limit)],
        capture_output=True, text=True, timeout=60,
    )
    assert run.returncode == 3, run.stdout + run.stderr
    assert "cannot write" in run.stdout and "desk.smp" in run.stdout
    assert path.read_bytes() == old_bytes
    assert user_data(storage.load(path)) == user_data(old)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name not in ("desk.smp", "desk.smp.bak")]
    assert leftovers == []


class DiskCalls:
    """What reached the disk, in order: fsyncs (by inode) and renames (by the renamed inode)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.events: list[tuple[str, int, str]] = []
        real_fsync, real_replace, real_rename = os.fsync, os.replace, os.rename

        def fsync(fd: int) -> None:
            info = os.fstat(fd)
            kind = "folder" if os.path.stat.S_ISDIR(info.st_mode) else "file"
            self.events.append(("fsync", info.st_ino, kind))
            real_fsync(fd)

        def renaming(real):  # type: ignore[no-untyped-def]
            def rename(src, dst, *args, **kwargs):  # type: ignore[no-untyped-def]
                self.events.append(("rename", os.stat(src).st_ino, os.fspath(dst)))
                return real(src, dst, *args, **kwargs)
            return rename

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "fdatasync", lambda fd: fsync(fd))
        monkeypatch.setattr(os, "replace", renaming(real_replace))
        monkeypatch.setattr(os, "rename", renaming(real_rename))


def test_the_new_bytes_reach_the_disk_before_the_rename_and_the_rename_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "desk.smp"
    storage.save(pipeline_of(5, "Old"), path)
    calls = DiskCalls(monkeypatch)
    storage.save(pipeline_of(6, "New"), path)
    new_inode = path.stat().st_ino
    folder_inode = tmp_path.stat().st_ino
    events = calls.events
    [made_current] = [i for i, e in enumerate(events) if e[0] == "rename" and e[2] == str(path)]
    assert events[made_current][1] == new_inode
    assert ("fsync", new_inode, "file") in events[:made_current], (
        "the new version must be on the disk before it replaces the old one"
    )
    assert ("fsync", folder_inode, "folder") in events[made_current + 1:], (
        "the rename must be made durable by syncing the folder"
    )
