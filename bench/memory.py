"""How much memory and time reading a pipeline file or a drop costs, and refusing a huge one.

Run: ``python bench/memory.py [--records N] [--huge GIB]``

Every figure is measured in a fresh child process, as the growth of its peak resident size
(``resource.getrusage(...).ru_maxrss``) over what it held once everything was imported, and the
wall time; each is printed beside a baseline measured in the same run:

* a file of N tiny records (two one-to-three-character fields), and one of N usual
  opportunities (``bench/codec.py``'s), opened (`salesmgr.storage.load`) and with every record
  made, beside reading the same file's bytes whole (``Path.read_bytes``: what holding the file
  once costs);
* the same records as a LOAD drop read from a folder (`salesmgr.sync.wire.drops.unseal_file`);
* refusing huge sparse files (they take no disk): a pipeline file whose size is not what its
  envelope declares, one over the 4 GiB cap, one whose envelope agrees with its size (every
  byte is read, in pieces, before its checksum fails), a drop of 1 GiB, and a folder sync that
  finds such a drop beside a real offer — beside opening a one-record file and such a sync
  without the huge entry.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from uuid import UUID

sys.path.insert(0, str(Path(__file__).resolve().parent))

SECRET = "bench-memory-secret-Xq3vT9kLp2Zr"
MIB = 1 << 20


def status(field: str) -> int:
    """A size from /proc/self/status, in bytes."""
    for text in Path("/proc/self/status").read_text().splitlines():
        if text.startswith(field + ":"):
            return int(text.split()[1]) * 1024
    raise LookupError(field)


def reset_peak() -> int:
    """Start measuring the peak resident size from now; the resident size now.  Linux resets
    the peak (VmHWM) when 5 is written to clear_refs; elsewhere ru_maxrss, which cannot be reset,
    is the fallback."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return status("VmRSS")
    except OSError:
        return peak()


def peak() -> int:
    try:
        return status("VmHWM")
    except (OSError, LookupError):  # not Linux: the peak since the process started (KiB)
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# --- what a child does ---------------------------------------------------------------------------


def child(case: str, path: str) -> dict[str, Any]:
    from salesmgr import storage
    from salesmgr.errors import SalesmgrError
    from salesmgr.plugin.manager import get_registry
    from salesmgr.plugins.transport_folder import FolderMailbox
    from salesmgr.sync.mailbox import DesktopDrops
    from salesmgr.sync.wire import auth, drops

    def make_all() -> None:
        pipeline = storage.load(path)
        for record in pipeline.records.values():
            record.values  # noqa: B018  # made, values decoded

    def sync() -> None:
        desk = Path(path) / "desk.pipe"
        box = DesktopDrops(FolderMailbox(str(Path(path) / "box")), SECRET, timeout=5.0, settle=0.0)
        box.sync(storage.load(desk), save=lambda p: None, dry_run=True)

    actions = {
        "bytes": lambda: Path(path).read_bytes(),
        "open": lambda: storage.load(path),
        "every": make_all,
        "drop": lambda: drops.unseal_file(path, auth.secret_bytes(SECRET), path),
        "sync": sync,
    }
    action = actions[case]
    get_registry()  # the plugins are loaded (imported) before the measure
    before = reset_peak()
    started = time.perf_counter()
    refused = ""
    try:
        action()
    except SalesmgrError as error:
        refused = str(error)
    return {"peak": peak() - before, "seconds": time.perf_counter() - started, "refused": refused}


def measure(case: str, path: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", case, str(path)],
        check=True, capture_output=True, text=True,
    )
    return dict(json.loads(out.stdout))


# --- the files -----------------------------------------------------------------------------------


def tiny_pipeline(count: int) -> Any:
    import random

    from salesmgr.model.pipeline import Dot, Pipeline, Record

    rng = random.Random(7)
    replica = str(UUID(int=rng.getrandbits(128), version=4))
    pipeline = Pipeline(str(UUID(int=rng.getrandbits(128), version=4)), replica_id=replica)
    for n in range(count):
        record = Record("opportunity", str(UUID(int=rng.getrandbits(128), version=4)),
                        {"company": f"C{n % 100}", "title": "T"}, Dot(n + 1, replica, 1))
        pipeline.records[record.id] = record
    pipeline.knowledge = {replica: count}
    return pipeline


def load_drop(pipeline: Any) -> bytes:
    from salesmgr.sync.wire import auth, drops

    load = drops.Load(drops.new_drop_id(), 1, pipeline.pipeline_id, pipeline.replica_id,
                      pipeline.name, pipeline.owner, pipeline.currency, {},
                      dict(pipeline.knowledge), list(pipeline.records.values()))
    return drops.seal(load, auth.secret_bytes(SECRET))


def sparse(path: Path, head: bytes, size: int) -> Path:
    path.write_bytes(head)
    os.truncate(path, size)
    past = time.time() - 60
    os.utime(path, (past, past))  # not still being copied in
    return path


def forged_envelope(size: int) -> bytes:
    """A pipeline file's envelope that agrees with ``size``: every byte of the body must be read
    before its checksum can fail."""
    from salesmgr.plugins.pipeline_codec import ENVELOPE_SIZE, Envelope

    return bytes(Envelope.build({"major": 1, "minor": 0, "flags": 0,
                                 "body_length": size - ENVELOPE_SIZE, "crc32": 0}))


def forged_drop_envelope(size: int) -> bytes:
    from salesmgr.sync.wire import drops

    body = size - drops.ENVELOPE_SIZE - drops.TAG_SIZE
    return drops.HEADER.pack(drops.MAGIC, drops.VERSION, int(drops.DropKind.OFFER), 0,
                             bytes(16), body, 0)


def folder_site(root: Path, huge: int | None) -> Path:
    """A desktop file and a folder holding the device's offer (and a huge sparse drop)."""
    from salesmgr import storage
    from salesmgr.plugins.transport_folder import FolderMailbox
    from salesmgr.sync.device_file import DeviceFile
    from salesmgr.sync.mailbox import DeviceDrops
    from salesmgr.sync.wire import drops

    root.mkdir()
    (root / "box").mkdir()
    pipeline = tiny_pipeline(1000)
    storage.save(pipeline, root / "desk.pipe")
    shutil.copy(root / "desk.pipe", root / "device.pipe")  # a copy: it becomes the device
    device = DeviceFile(root / "device.pipe")
    DeviceDrops(FolderMailbox(str(root / "box")), SECRET, device, settle=0.0).step()
    if huge is not None:
        name = drops.drop_name(drops.DropKind.OFFER, drops.new_drop_id())
        sparse(root / "box" / name, forged_drop_envelope(huge), huge)
    return root


# --- the report ----------------------------------------------------------------------------------


def mib(n: float) -> str:
    return f"{n / MIB:8.1f} MiB"


def line(what: str, got: dict[str, Any], base: dict[str, Any], size: int | None = None) -> None:
    ratio = f"  ({got['peak'] / size:5.2f}x the file)" if size else ""
    print(f"  {what:<44} {mib(got['peak'])} {got['seconds']:7.2f} s{ratio}"
          f"   | baseline {mib(base['peak'])} {base['seconds']:7.2f} s")
    if got["refused"]:
        print(f"    refused: {got['refused'][:150]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--huge", type=float, default=3.0, help="GiB of the huge sparse files")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    from codec import realistic_pipeline

    from salesmgr import storage
    n = args.records
    huge = int(args.huge * (1 << 30))
    with tempfile.TemporaryDirectory(prefix="salesmgr-bench-memory-") as tmp:
        root = Path(tmp)
        print("peak memory growth (ru_maxrss of a child) and time; baseline beside each")
        for label, pipeline in (("tiny", tiny_pipeline(n)), ("usual", realistic_pipeline(n))):
            path = root / f"{label}.pipe"
            storage.save(pipeline, path, backup=False)
            drop = root / f"{label}.smdrop"
            drop.write_bytes(load_drop(pipeline))
            del pipeline
            size = path.stat().st_size
            print(f"{n:,} {label} records: file {size:,} bytes ({size / n:.0f} per record), "
                  f"drop {drop.stat().st_size:,}; baseline: reading the file's bytes whole")
            whole = measure("bytes", path)
            line("opened (storage.load)", measure("open", path), whole, size)
            line("every record made", measure("every", path), whole, size)
            line("as a LOAD drop (drops.unseal_file)", measure("drop", drop), whole, size)
        print("refusing huge sparse files; baseline: opening a one-record file")
        small = root / "one.pipe"
        storage.save(tiny_pipeline(1), small, backup=False)
        base = measure("open", small)
        good = small.read_bytes()
        lie = sparse(root / "lie.pipe", good, huge)
        line(f"{args.huge:g} GiB, envelope says {len(good)} bytes", measure("open", lie), base)
        over = sparse(root / "over.pipe", good, (1 << 32) + 2 * MIB)
        line("4 GiB + 2 MiB (over the cap)", measure("open", over), base)
        agree = sparse(root / "agree.pipe", forged_envelope(huge), huge)
        line(f"{args.huge:g} GiB, envelope agrees (read to its CRC)", measure("open", agree),
             base)
        drop_size = min(huge, 1 << 30)  # a drop's body is at most 1 GiB
        gib = f"{drop_size / (1 << 30):g} GiB"
        drop = sparse(root / "huge.smdrop", forged_drop_envelope(drop_size), drop_size)
        line(f"{gib} drop, envelope agrees (read to its CRC)", measure("drop", drop), base)
        print("a folder sync (dry run) of a real offer; baseline: the same without the huge drop")
        plain = measure("sync", folder_site(root / "plain", None))
        line(f"beside a {gib} sparse drop",
             measure("sync", folder_site(root / "huge", drop_size)), plain)


if __name__ == "__main__":
    main()
