"""One writer process of tests/test_store_concurrency.py (run as a script, never collected).

    python concurrent_writer.py ADDRESS WORKER OPERATIONS SHARED_ID DEVICE_FILE GO_FILE

Waits for GO_FILE so every writer starts at once, then works through its operations on the
pipeline at ADDRESS, each a whole ``salesmgr`` command: office edits (``add``; ``edit`` of its own
latest record; ``edit`` of this writer's own field of the one record every writer shares) and a
device's evening (``add`` on DEVICE_FILE, then ``merge ADDRESS DEVICE_FILE``).  Prints, as JSON,
what it did: the model the test checks the pipeline against.
"""

from __future__ import annotations

import json
import os
import sys
import time

from click.testing import CliRunner

from salesmgr.cli.group import cli

# The field of the shared record each writer owns: concurrent writes to one record, never to
# one field, so every writer's last value must be there at the end.
SHARED_FIELDS = ("value", "probability", "contact", "phone", "next_action")


def salesmgr(*args: object) -> str:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    if result.exit_code != 0:
        raise SystemExit(f"salesmgr {' '.join(map(str, args))}: {result.output.strip()}")
    return result.stdout.strip()


def shared_value(field: str, worker: int, step: int) -> tuple[str, str]:
    """What ``worker`` writes at ``step`` into ``field``, and how the pipeline shows it."""
    if field == "value":
        return f"{worker * 1000 + step}", f"{worker * 1000 + step}.00"
    if field == "probability":
        return str(step), str(step)
    return f"w{worker} step {step}", f"w{worker} step {step}"


def main(address: str, worker: int, operations: int, shared: str, device: str, go: str) -> None:
    deadline = time.monotonic() + 60
    while not os.path.exists(go):
        if time.monotonic() > deadline:
            raise SystemExit("never told to start")
        time.sleep(0.005)
    model: dict[str, object] = {"added": {}, "edited": {}, "shared": {}, "from_device": []}
    mine: list[str] = []
    field = SHARED_FIELDS[worker % len(SHARED_FIELDS)]
    for step in range(operations):
        match step % 4:
            case 0:
                company = f"w{worker}-{step}"
                rid = salesmgr("add", address, "--company", company, "--title", "office")
                mine.append(rid)
                model["added"][company] = rid  # type: ignore[index]
            case 1:
                rid = mine[-1]
                salesmgr("edit", address, rid, "--value", str(step))
                model["edited"][rid] = f"{step}.00"  # type: ignore[index]
            case 2:
                given, shown = shared_value(field, worker, step)
                salesmgr("edit", address, shared, f"--{field.replace('_', '-')}", given)
                model["shared"][field] = shown  # type: ignore[index]
            case _:
                company = f"d{worker}-{step}"
                salesmgr("add", device, "--company", company, "--title", "road")
                salesmgr("merge", address, device)
                model["from_device"].append(company)  # type: ignore[attr-defined]
    print(json.dumps(model))


if __name__ == "__main__":
    address, worker, operations, shared, device, go = sys.argv[1:]
    main(address, int(worker), int(operations), shared, device, go)
