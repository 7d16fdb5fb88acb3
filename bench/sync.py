"""Bytes on the wire grow with the changes, not with the pipeline: a sync next to a file copy.

Run: ``python bench/sync.py [--records N] [--changed C] [--repeat R]``

Builds a realistic pipeline of N (default 100,000) opportunities (``bench/codec.py``'s generator),
loads it onto an emulated device over loopback TCP (``salesmgr emulator serve`` in a process of
its own, paired, as a device is a machine of its own), then changes C (default 50) records —
half on the desktop, half on the device — and syncs.  The baseline, measured in the same run, is
copying the whole desktop file over a loopback TCP socket into a file on the other end (written
and fsynced, as a sync's save is).  Every sync is timed end to end as ``salesmgr sync`` runs it:
reading the desktop file, the session, the merge and both atomic saves.  Prints a table; the goals
are a sync of C changed records moving less than 5% of the file's bytes, and taking under 0.5 s
on loopback (issue 13: the cost follows the changes, not the file).

Then the same evening over the serial cradle (a pseudo-terminal, both ends paced to 115200 baud,
8N1, the device again a process of its own), timed against the line time of the sync's own
messages and of copying the whole file; the goal is the delta sync within 1.5x of its messages'
line time (the link keeps the line busy).
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from salesmgr import storage
from salesmgr.emulator.process import EmulatorProcess, emulator_command
from salesmgr.model.pipeline import Pipeline
from salesmgr.plugin.manager import get_registry
from salesmgr.sync.device_file import DeviceFile
from salesmgr.sync.results import SessionResult
from salesmgr.sync.session import DesktopSession
from salesmgr.sync.transports import live_transport
from salesmgr.sync.wire import auth

sys.path.insert(0, str(Path(__file__).resolve().parent))
from codec import realistic_pipeline  # noqa: E402  (the shared generator of realistic data)

SECRET = auth.new_secret()  # a pairing secret as `salesmgr pair` makes one
GOAL = 0.05
GOAL_SECONDS = 0.5  # a sync of the changed records, end to end on loopback
SERIAL_BAUD = 115_200  # the cradle of issue 5, for the estimated line-time column


def copy_over_tcp(source: Path, target: Path) -> tuple[int, float]:
    """Send a file through a loopback socket and write it on the other end: (bytes, seconds)."""
    server = socket.create_server(("127.0.0.1", 0))
    received: list[int] = []

    def receive() -> None:
        conn, _ = server.accept()
        with conn, open(target, "wb") as out:
            total = 0
            while chunk := conn.recv(1 << 16):
                out.write(chunk)
                total += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        received.append(total)

    thread = threading.Thread(target=receive)
    started = time.perf_counter()
    thread.start()
    with socket.create_connection(server.getsockname()) as sock, open(source, "rb") as data:
        sock.sendfile(data)
    thread.join()
    elapsed = time.perf_counter() - started
    server.close()
    return received[0], elapsed


class DeviceProcess:
    """The emulator as a process of its own (``salesmgr emulator serve``), as a device is a
    machine of its own: in a thread of this process its reading, merging and saving would
    wait for the desktop's on one interpreter lock, which no real sync does.  A paired device
    seals its file, so its file is edited through a sealing `DeviceFile` too."""

    def __init__(
        self, path: Path, folder: Path, url: str = "tcp://127.0.0.1:0",
        baud: int | None = None, connect: dict[str, Any] | None = None,
    ) -> None:
        self.path = path
        self.emulator = EmulatorProcess(
            emulator_command(path, url, baud=baud), folder, secret=SECRET
        )
        self.transport = live_transport(self.emulator.url)
        self.connect_options = connect or {}

    def file(self) -> DeviceFile:
        return DeviceFile(self.path, secret=auth.secret_bytes(SECRET))

    def session(self, act: Callable[[DesktopSession], SessionResult]) -> SessionResult:
        link = self.transport.connect(self.emulator.url, self.connect_options)
        try:
            return act(DesktopSession(link, SECRET))
        finally:
            link.close()

    def stop(self) -> None:
        self.emulator.stop()


def timed_sync(device: DeviceProcess, desk: Path) -> tuple[SessionResult, float]:
    """A sync as ``salesmgr sync`` runs it: the desktop reads its file once the device proved
    itself (`DesktopSession.opening`), merges, saves and sends back."""
    started = time.perf_counter()
    result = device.session(
        lambda s: s.sync(s.opening(lambda: storage.load(desk)),
                         save=lambda p: storage.save(p, desk))
    )
    return result, time.perf_counter() - started


def change(
    path: Path, ids: list[str], prefix: str, rng: random.Random, store: DeviceFile | None = None
) -> None:
    pipeline = storage.load(path) if store is None else store.load()
    assert pipeline is not None
    rtype = get_registry().record_type("opportunity")
    for i, record_id in enumerate(ids):
        pipeline.update(rtype, record_id, {
            "stage": rng.choice(("Qualified", "Proposal", "Negotiation", "Won")),
            "next_action": f"{prefix} follow-up {i}",
        })
    if store is None:
        storage.save(pipeline, path)
    else:
        store.save(pipeline)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--changed", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each sync; best kept")
    args = parser.parse_args(argv)
    rng = random.Random(7)

    with tempfile.TemporaryDirectory() as folder:
        desk, dev, copy = (Path(folder) / name for name in ("desk.pipe", "dev.pipe", "copy.pipe"))
        pipeline: Pipeline = realistic_pipeline(args.records)
        storage.save(pipeline, desk)
        file_bytes = desk.stat().st_size
        copy_bytes, copy_s = min(
            (copy_over_tcp(desk, copy) for _ in range(args.repeat)), key=lambda r: r[1]
        )

        device = DeviceProcess(dev, Path(folder))
        try:
            started = time.perf_counter()
            loaded = device.session(lambda s: s.load(storage.load(desk)))
            load_s = time.perf_counter() - started

            live = sorted(r.id for r in pipeline.live("opportunity"))
            chosen = rng.sample(live, args.changed)
            half = args.changed // 2
            change(desk, chosen[:half], "office", rng)
            change(dev, chosen[half:], "road", rng, device.file())
            evening = (desk.read_bytes(), dev.read_bytes())

            runs: list[tuple[SessionResult, float]] = []
            for _ in range(args.repeat):
                desk.write_bytes(evening[0])  # same paths: the files stay at home
                dev.write_bytes(evening[1])
                runs.append(timed_sync(device, desk))
            synced, sync_s = min(runs, key=lambda r: r[1])
            again, again_s = timed_sync(device, desk)
            converged = storage.load(desk).records.keys() == storage.load(dev).records.keys()
        finally:
            device.stop()

        # The same evening over the serial cradle: a pseudo-terminal, both ends paced to 115200
        # baud (8N1), so the time is what a real cradle would take.
        desk.write_bytes(evening[0])
        dev.write_bytes(evening[1])
        line = {"baud": SERIAL_BAUD, "timeout": 60, "pace": True}
        cradle = DeviceProcess(dev, Path(folder), "serial-pty", SERIAL_BAUD, line)
        try:
            on_line, line_s = timed_sync(cradle, desk)
        finally:
            cradle.stop()
        cradle_ok = storage.load(desk).records.keys() == storage.load(dev).records.keys()

    def wire(result: SessionResult) -> int:
        return result.bytes_sent + result.bytes_received

    rows: list[tuple[str, int, float, Any]] = [
        ("copy the whole file over TCP (baseline)", copy_bytes, copy_s, ""),
        ("load: whole pipeline via the protocol", wire(loaded), load_s, loaded.records_sent),
        (f"sync: {args.changed} records changed", wire(synced), sync_s,
         synced.records_received + synced.records_sent),
        ("second sync: nothing changed", wire(again), again_s,
         again.records_received + again.records_sent),
    ]
    print(f"pipeline: {args.records:,} opportunities, file {file_bytes:,} bytes; "
          f"best of {args.repeat} runs")
    print(f"{'':42} {'bytes on wire':>14} {'% of file':>10} {'seconds':>9} {'records':>8} "
          f"{'at 115200 baud':>15}")
    for name, size, seconds, records in rows:
        print(f"{name:42} {size:>14,} {100 * size / file_bytes:>9.2f}% {seconds:>9.3f} "
              f"{records!s:>8} {size * 10 / SERIAL_BAUD:>13.1f} s")
    print("(seconds: measured on loopback, dominated by reading and saving both files; "
          "the last column is the line time alone on a serial cradle: 10 bits a byte)")
    share = wire(synced) / file_bytes
    verdict = "met" if share < GOAL else "NOT met"
    print(f"goal: a sync of {args.changed} changed records moves < {GOAL:.0%} of the file's "
          f"bytes: {verdict} ({share:.2%}); both sides hold the same records: {converged}")

    fast = sync_s < GOAL_SECONDS
    print(f"goal: a sync of {args.changed} changed records against a {args.records:,}-record "
          f"desktop under {GOAL_SECONDS} s on loopback: {'met' if fast else 'NOT met'} "
          f"({sync_s:.3f} s; copying the whole file over TCP {copy_s:.3f} s)")

    # Everything on the line, framing and repeats included. The session is a pull, then a
    # push (the desktop merges in between), so the two directions' bytes follow each other.
    needs = (on_line.bytes_sent + on_line.bytes_received) * 10 / SERIAL_BAUD
    whole_file = file_bytes * 10 / SERIAL_BAUD
    print()
    print(f"serial cradle at {SERIAL_BAUD} baud (pseudo-terminal, both ends paced, 8N1)")
    print(f"{'':42} {'bytes sent':>11} {'bytes received':>15} {'seconds':>9}")
    print(f"{'copy the whole file at line speed':42} {file_bytes:>11,} {'':>15} "
          f"{whole_file:>9.1f}")
    print(f"{f'sync: {args.changed} records changed':42} {on_line.bytes_sent:>11,} "
          f"{on_line.bytes_received:>15,} {line_s:>9.2f}")
    print(f"{'  its line bytes alone at line speed':42} {'':>11} {'':>15} {needs:>9.2f}")
    # Stricter: only the session's own messages (what the same sync moved over TCP), without
    # the link's framing, acks and keep-alives.
    payload = wire(synced) * 10 / SERIAL_BAUD
    print(f"{'  its messages alone (as over TCP)':42} {'':>11} {'':>15} {payload:>9.2f}")
    ratio = line_s / payload
    line_verdict = "met" if ratio <= 1.5 else "NOT met"
    print(f"goal: the delta sync within 1.5x of the time its own messages need on the line: "
          f"{line_verdict} ({ratio:.2f}x; the whole file would take {whole_file / line_s:.0f}x "
          f"as long); both sides hold the same records: {cradle_ok}")
    return 0 if share < GOAL and fast and converged and ratio <= 1.5 and cradle_ok else 1


if __name__ == "__main__":
    sys.exit(main())
