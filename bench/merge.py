"""How long a merge of two 100,000-opportunity copies takes, next to the cost of reading them.

Run: ``python bench/merge.py [--records N] [--changed-percent P] [--repeat R]``

Two copies of one pipeline (the second made the old way, by copying the file) are edited
independently — P% of the records on each side, a tenth of those on both sides — and merged.
Printed, best of R, measured in this run:

- reading both files in this process (the baseline: a merge cannot be cheaper than its inputs);
- the merge itself, in memory (`merge_files`);
- ``salesmgr merge A B`` as a user runs it (a process: read both, merge, write what changed;
  bytecode cached, ``bench/processes.py``);
- ``salesmgr show`` of each file, as processes: what a command reading both files costs.

Goals (issue 13): ``salesmgr merge`` of the 1%-changed copies under 1 s, i.e. a cost that
follows the changes, not the file (a larger merge: the same time per change, `bench/goals.py`);
a merge with nothing to do rewrites neither file.  Exit status 1 when a goal is not met.
"""

from __future__ import annotations

import argparse
import copy
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from codec import realistic_pipeline  # noqa: E402
from goals import merge_goal, merge_goal_text  # noqa: E402
from processes import SCRIPT, run_children_as_a_user  # noqa: E402

from salesmgr import storage  # noqa: E402
from salesmgr.merge.engine import merge_files  # noqa: E402
from salesmgr.model.pipeline import Pipeline  # noqa: E402
from salesmgr.plugin.manager import get_registry  # noqa: E402


def best_of(runs: int, setup: Callable[[], Any], work: Callable[[Any], object]) -> float:
    best = float("inf")
    for _ in range(runs):
        state = setup()
        start = time.perf_counter()
        work(state)
        best = min(best, time.perf_counter() - start)
    return best


def edit(pipeline: Pipeline, ids: list[str], stamp: str) -> None:
    rtype = get_registry().record_type("opportunity")
    for n, record_id in enumerate(ids):
        pipeline.update(rtype, record_id, {"next_action": f"{stamp} {n}", "probability": "55"})


def run(*argv: str) -> None:
    subprocess.run([SCRIPT, *argv], check=True, stdout=subprocess.DEVNULL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--changed-percent", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    repeat = args.repeat

    folder = Path(tempfile.mkdtemp(prefix="salesmgr-bench-merge-"))
    untouched = False
    try:
        run_children_as_a_user(folder)
        rows = []
        pipeline = realistic_pipeline(args.records)
        origin = folder / "origin.smp"
        storage.save(pipeline, origin, backup=False)
        live = sorted(r.id for r in pipeline.live("opportunity"))
        some_id = live[0]
        rng = random.Random(7)
        changed = int(len(live) * args.changed_percent / 100)
        picked = rng.sample(live, changed * 2 - changed // 10)
        desk_ids, dev_ids = picked[:changed], picked[changed - changed // 10:]

        for label, edits in ((f"{args.changed_percent:g}% changed on each side", True),
                             ("no change", False)):
            a, b = folder / f"desk-{edits}.smp", folder / f"dev-{edits}.smp"
            shutil.copy(origin, a)
            shutil.copy(origin, b)
            desk, dev = storage.load(a), storage.load(b)  # b is a copy: it forks
            if edits:
                edit(desk, desk_ids, "office")
                edit(dev, dev_ids, "road")
            storage.save(desk, a, backup=False)
            storage.save(dev, b, backup=False)
            evening = a.read_bytes(), b.read_bytes()

            def restore(a: Path = a, b: Path = b, evening: tuple = evening) -> None:
                a.write_bytes(evening[0])
                b.write_bytes(evening[1])

            read = best_of(repeat, lambda: None, lambda _, a=a, b=b: (storage.load(a),
                                                                      storage.load(b)))
            pair = (storage.load(a), storage.load(b))
            report = merge_files(*copy.deepcopy(pair)).report
            merge = best_of(repeat, lambda p=pair: copy.deepcopy(p), lambda p: merge_files(*p))
            command = best_of(repeat, restore, lambda _, a=a, b=b: run("merge", str(a), str(b)))
            if not edits:  # the last merge left them in step: one more must not write
                stamps = [(p.stat().st_ino, p.stat().st_mtime_ns) for p in (a, b)]
                run("merge", str(a), str(b))
                untouched = stamps == [(p.stat().st_ino, p.stat().st_mtime_ns) for p in (a, b)]
            shows = best_of(repeat, lambda: None, lambda _, a=a, b=b: (
                run("show", str(a), some_id), run("show", str(b), some_id)))
            rows.append((label, read, merge, command, shows, report))

        print(f"merge of two copies of {args.records:,} opportunities (best of {repeat})")
        header = ("case", "read both (in process)", "merge in memory", "salesmgr merge",
                  "salesmgr show of each (processes)", "conflicts", "changed each way")
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for label, read, merge, command, shows, report in rows:
            print(
                f"| {label} | {read:.2f} s | {merge:.2f} s | {command:.2f} s | {shows:.2f} s | "
                f"{len(report.conflicts)} | "
                f"{report.to_desktop.changed} / {report.to_device.changed} |"
            )
        merged, goal = rows[0][3], merge_goal(changed)
        print(f"goal: salesmgr merge with {args.changed_percent:g}% changed on each side "
              f"{merge_goal_text(changed)}: {'met' if merged < goal else 'NOT met'} "
              f"({merged:.2f} s, reading both in process {rows[0][1]:.2f} s)")
        print(f"goal: a merge with nothing to do rewrites neither file: "
              f"{'met' if untouched else 'NOT met'}")
        return 0 if merged < goal and untouched else 1
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
