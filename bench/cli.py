"""How long ``salesmgr list`` takes on a 100,000-opportunity file, next to what it cannot avoid.

Run: ``python bench/cli.py [--records N] [--repeat R]``

Each command runs as a user runs it (the installed ``salesmgr`` script in a subprocess, output
piped), best of R.  The baselines, measured in the same run: starting the program at all
(``salesmgr --version``) and reading the file without listing it (``salesmgr show FILE ID``).
Goal: ``salesmgr list`` of 100,000 opportunities in under 2 seconds.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from codec import realistic_pipeline  # noqa: E402

from salesmgr import storage  # noqa: E402

GOAL = 2.0


def best_of(repeat: int, argv: list[str]) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - started)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    script = str(Path(sys.executable).parent / "salesmgr")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "big.smp"
        pipeline = realistic_pipeline(args.records)
        storage.save(pipeline, path)
        some_id = next(iter(pipeline.live("opportunity"))).id
        rows = [
            ("salesmgr --version (start-up)", [script, "--version"]),
            ("salesmgr show FILE ID (read the file)", [script, "show", str(path), some_id]),
            ("salesmgr list FILE", [script, "list", str(path)]),
            ("salesmgr list FILE --stage won", [script, "list", str(path), "--stage", "won"]),
            ("salesmgr list FILE --json", [script, "list", str(path), "--json"]),
        ]
        times = [(name, best_of(args.repeat, argv)) for name, argv in rows]
        size = path.stat().st_size
    print(f"{args.records:,} opportunities, file {size:,} bytes, best of {args.repeat}, "
          f"output piped")
    print("| command | seconds |\n|---|---|")
    for name, seconds in times:
        print(f"| {name} | {seconds:.2f} |")
    listed = times[2][1]
    print(f"goal: salesmgr list under {GOAL:.0f} s: {'met' if listed < GOAL else 'NOT met'} "
          f"({listed:.2f} s)")
    return 0 if listed < GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
