"""How long a merge of two 100,000-opportunity copies takes, next to the cost of reading them.

Run: ``python bench/merge.py [--records N] [--changed-percent P]``

Two copies of one pipeline (the second made the old way, by copying the file) are edited
independently — P% of the records on each side, a tenth of those on both sides — and merged.
Printed, best of three, measured in this run:

- read both files (the baseline: a merge cannot be cheaper than reading its inputs);
- the merge itself (in memory);
- the whole ``salesmgr merge``: read both, merge, write both atomically;
- the same three for two copies with no change at all.
"""

from __future__ import annotations

import argparse
import copy
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from codec import realistic_pipeline  # noqa: E402

from salesmgr import storage  # noqa: E402
from salesmgr.merge import merge_files, user_data  # noqa: E402
from salesmgr.registry import get_registry  # noqa: E402


def best_of(runs: int, setup: Callable[[], object], work: Callable[[object], object]) -> float:
    best = float("inf")
    for _ in range(runs):
        state = setup()
        start = time.perf_counter()
        work(state)
        best = min(best, time.perf_counter() - start)
    return best


def edit(pipeline, ids: list[str], stamp: str) -> None:
    rtype = get_registry().record_type("opportunity")
    for n, record_id in enumerate(ids):
        pipeline.update(rtype, record_id, {"next_action": f"{stamp} {n}", "probability": "55"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--changed-percent", type=float, default=1.0)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="salesmgr-bench-merge-"))
    try:
        rows = []
        pipeline = realistic_pipeline(args.records)
        desk_path, dev_path = folder / "desktop.smp", folder / "device.smp"
        storage.save(pipeline, desk_path, backup=False)
        shutil.copy(desk_path, dev_path)
        live = sorted(r.id for r in pipeline.live("opportunity"))
        rng = random.Random(7)
        changed = int(len(live) * args.changed_percent / 100)
        picked = rng.sample(live, changed * 2 - changed // 10)
        desk_ids, dev_ids = picked[:changed], picked[changed - changed // 10:]

        for label, edits in (("1% changed on each side", True), ("no change", False)):
            desk, dev = storage.load(desk_path), storage.load(dev_path)
            if edits:
                edit(desk, desk_ids, "office")
                edit(dev, dev_ids, "road")
            a, b = folder / f"a-{edits}.smp", folder / f"b-{edits}.smp"
            storage.save(desk, a, backup=False)
            storage.save(dev, b, backup=False)

            def load_both(a: Path = a, b: Path = b) -> tuple:
                return storage.load(a), storage.load(b)

            read = best_of(3, lambda: None, lambda _: load_both())
            pair = load_both()
            merge = best_of(3, lambda: copy.deepcopy(pair), lambda p: merge_files(*p))  # noqa: B023

            def whole(_: object, a: Path = a, b: Path = b) -> None:
                x, y = storage.load(a), storage.load(b)
                result = merge_files(x, y)
                storage.save(x, a, backup=False)
                storage.save(y, b, backup=False)
                whole.report = result.report  # type: ignore[attr-defined]
                assert user_data(x) == user_data(y)

            # Each round merges fresh copies of the two edited files.
            a0, b0 = a.read_bytes(), b.read_bytes()

            def restore(a: Path = a, b: Path = b, a0: bytes = a0, b0: bytes = b0) -> None:
                a.write_bytes(a0)
                b.write_bytes(b0)

            total = best_of(3, restore, whole)
            report = whole.report  # type: ignore[attr-defined]
            rows.append((label, read, merge, total, report))

        print(f"merge of two copies of {args.records:,} opportunities (best of 3)")
        header = ("case", "read both (baseline)", "merge in memory", "salesmgr merge",
                  "merge / read", "conflicts", "changed each way")
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for label, read, merge, total, report in rows:
            print(
                f"| {label} | {read:.3f} s | {merge:.3f} s | {total:.3f} s | "
                f"{merge / read:.2f} | {len(report.conflicts)} | "
                f"{report.to_desktop.changed} / {report.to_device.changed} |"
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
