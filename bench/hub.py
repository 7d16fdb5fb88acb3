"""Many devices through the hub: sessions per second with 1 and 2 hub processes on one PostgreSQL.

Run: ``python bench/hub.py [--devices N] [--pipelines P] [--rounds R] [--parallel C]``

Starts a throwaway PostgreSQL (``salesmgr.testing.postgres``, the pgserver binaries), makes P
(default 20) pipelines of 50 opportunities, pairs N (default 200) emulated devices, each with a
pipeline of its own team, and loads every device through the hub.  Then, for 1 and then 2
``salesmgr hub serve`` processes, and for N/4, N/2 and N devices, every device makes its own
edit (a new lead, an edit of a lead every device of its team shares) and syncs, R (default 2)
rounds, C (default 24) devices calling at once.  Prints per configuration: sessions per second,
p50/p95 session time as the device sees it, and the database's share of the hub's session time
(lock, read, save, as the hub logs it).  The baseline, measured in the same run, is one hub
process: the figure to beat is the second hub's gain.

At the end every pipeline is checked against a model of what every device did: every device's
leads there exactly once (zero lost, zero duplicated), every device holding all of its team's.
The devices run as threads of this process, on the same machine as the hubs and the database,
so the figures are for everything sharing its cores.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from salesmgr import storage
from salesmgr.model.pipeline import Pipeline
from salesmgr.plugin.manager import get_registry
from salesmgr.plugins import hub as hubs
from salesmgr.testing.postgres import TemporaryPostgres

LEADS = 50  # opportunities per pipeline at the start


@dataclass
class Device:
    name: str
    pipeline: str
    secret: str
    file: Path
    leads: list[str] = field(default_factory=list)


@contextmanager
def hub_processes(database: str, key: Path, count: int, log: Path) -> Iterator[list[str]]:
    """``salesmgr hub serve`` x count on loopback; their URLs.  SIGTERM (drain) afterwards."""
    started = []
    try:
        for index in range(count):
            out = open(log / f"hub-{count}-{index}.log", "w")  # noqa: SIM115 - kept open
            process = subprocess.Popen(
                [sys.executable, "-c", "from salesmgr.cli.group import main; main()", "hub",
                 "serve", database, "--on", "tcp://127.0.0.1:0", "--key-file", str(key),
                 "--workers", "64"],
                stdout=subprocess.PIPE, stderr=out, text=True,
            )
            assert process.stdout is not None
            line = process.stdout.readline()
            if not line.startswith("listening on"):
                raise SystemExit(f"the hub did not start: {line}")
            started.append((process, out, line.split()[-1]))
        yield [url for _, _, url in started]
    finally:
        for process, _, _ in started:
            process.send_signal(signal.SIGTERM)
        for process, out, _ in started:
            rest, _ = process.communicate(timeout=60)
            out.write(rest)
            out.close()


def database_seconds(log: Path, count: int) -> tuple[float, float, int]:
    """(session seconds, database seconds, sessions) the hubs of one configuration logged."""
    total = database = 0.0
    sessions = 0
    for index in range(count):
        for line in (log / f"hub-{count}-{index}.log").read_text().splitlines():
            if " sent in " in line and "(database " in line:
                total += float(line.split(" sent in ")[1].split()[0])
                database += float(line.split("(database ")[1].split()[0])
                sessions += 1
    return total, database, sessions


def connect_ms(database: str, times: int = 50) -> float:
    """What opening one connection to ``database`` costs now (psycopg, as the stores connect),
    in milliseconds: the figure a connection pool would save per connection."""
    import psycopg

    started = time.perf_counter()
    for _ in range(times):
        with psycopg.connect(database, autocommit=True) as connection:
            connection.execute("SELECT 1")
    return (time.perf_counter() - started) / times * 1000


def connections_made(server: TemporaryPostgres, database: str) -> int:
    """Connections ever opened to ``database`` (pg_stat_database.sessions)."""
    name = database.split("?")[0].rsplit("/", 1)[1]
    return int(server.sql(f"SELECT sessions FROM pg_stat_database WHERE datname = '{name}'")[0][0])


def sync(device: Device, url: str) -> float:
    started = time.monotonic()
    hubs.sync_with_hub(device.file, url, device.name, device.pipeline, device.secret,
                       timeout=60)
    return time.monotonic() - started


def evening(device: Device, url: str, step: str, shared: dict[str, str]) -> float:
    """The device's own edit (a new lead; its team's shared lead), then its sync."""
    registry = get_registry()
    opportunity = registry.record_type("opportunity")
    company = f"{device.name} lead {step}"
    with storage.editing_pipeline(device.file) as pipeline:
        pipeline.add(opportunity, {"company": company, "title": "met on the road"})
        pipeline.update(opportunity, shared[device.pipeline], {"next_action": company})
    device.leads.append(company)
    return sync(device, url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--pipelines", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--parallel", type=int, default=24)
    args = parser.parse_args()
    os.environ.setdefault("SALESMGR_DISABLE_PLUGINS", "1")
    folder = Path(tempfile.mkdtemp(prefix="salesmgr-bench-hub-"))
    server = TemporaryPostgres.start()
    try:
        run(args, folder, server)
    finally:
        server.stop()


def run(args: argparse.Namespace, folder: Path, server: TemporaryPostgres) -> None:
    database = server.new_database("bench")
    key = folder / "hub.key"
    hubs.read_key(key, create=True)
    registry = get_registry()
    opportunity = registry.record_type("opportunity")
    names = [f"team{p:03d}" for p in range(args.pipelines)]
    shared: dict[str, str] = {}
    for name in names:
        pipeline = Pipeline.create(name, "bench")
        for i in range(LEADS):
            record, _ = pipeline.add(opportunity, {"company": f"{name} customer {i}",
                                                   "title": "renewal", "value": "1000"})
        shared[name] = record.id
        storage.create_pipeline(pipeline, f"{database}#{name}")
    devices = []
    for index in range(args.devices):
        device = Device(f"dev{index:05d}", names[index % len(names)], "", folder / f"d{index}.smp")
        device.secret = hubs.pair(database, device.name, (device.pipeline,), hubs.read_key(key))
        devices.append(device)
    print(f"{args.devices} devices on {args.pipelines} pipelines of {LEADS} opportunities, "
          f"PostgreSQL {server.sql('SHOW server_version')[0][0]}, {os.cpu_count()} cores, "
          f"{args.parallel} devices calling at once")
    print(f"{'hubs':>4} {'devices':>7} {'sessions':>8} {'sessions/s':>10} {'p50 ms':>7} "
          f"{'p95 ms':>7}  vs 1 hub")
    baseline: dict[int, float] = {}
    rounds = 0
    per_session: list[float] = []
    for hub_count in (1, 2):
        log = folder / f"hubs{hub_count}"
        log.mkdir()
        per_session.clear()
        with hub_processes(database, key, hub_count, log) as urls:
            if not any(d.file.exists() for d in devices):  # the morning: load every device
                with ThreadPoolExecutor(args.parallel) as pool:
                    list(pool.map(lambda d: sync(d[1], urls[d[0] % len(urls)]),
                                  enumerate(devices)))
            for count in sorted({max(1, args.devices // 4), max(1, args.devices // 2),
                                 args.devices}):
                times: list[float] = []
                opened = connections_made(server, database)
                started = time.monotonic()
                for _ in range(args.rounds):
                    rounds += 1
                    with ThreadPoolExecutor(args.parallel) as pool:
                        times += pool.map(
                            lambda d, step=str(rounds): evening(  # type: ignore[misc]
                                d[1], urls[d[0] % len(urls)], step, shared),
                            enumerate(devices[:count]),
                        )
                elapsed = time.monotonic() - started
                per_session.append((connections_made(server, database) - opened) / len(times))
                rate = len(times) / elapsed
                p50 = statistics.median(times) * 1000
                p95 = statistics.quantiles(times, n=20)[18] * 1000 if len(times) > 1 else p50
                gain = f"{rate / baseline[count]:.2f}x" if count in baseline else "(baseline)"
                baseline.setdefault(count, rate)
                print(f"{hub_count:>4} {count:>7} {len(times):>8} {rate:>10.1f} {p50:>7.0f} "
                      f"{p95:>7.0f}  {gain}")
        total, in_database, sessions = database_seconds(log, hub_count)
        print(f"     {hub_count} hub(s): the database took {in_database / max(total, 1e-9):.0%} "
              f"of the hubs' session time ({sessions} sessions logged)")
        # What a connection pool could save: connections opened per session, each at what
        # opening one costs right now, against the hubs' mean session time.
        cost, each = connect_ms(database), statistics.mean(per_session)
        mean = total / max(sessions, 1) * 1000
        print(f"     {hub_count} hub(s): {each:.1f} connections opened per session at "
              f"{cost:.1f} ms each = {each * cost:.0f} ms, {each * cost / mean:.1%} of the "
              f"hubs' mean session ({mean:.0f} ms)")
        if hub_count == 2:  # a last round brings every device all of its team's leads
            (folder / "last").mkdir()
            with hub_processes(database, key, 1, folder / "last") as urls:
                with ThreadPoolExecutor(args.parallel) as pool:
                    list(pool.map(lambda d: sync(d, urls[0]), devices))
    check(database, devices, names)


def check(database: str, devices: list[Device], names: list[str]) -> None:
    """Every device's leads in its pipeline exactly once; every device holding its team's."""
    lost = duplicated = missing_on_devices = 0
    for name in names:
        pipeline = storage.open_pipeline(f"{database}#{name}")
        counts = Counter(r.values["company"] for r in pipeline.live("opportunity"))
        team = [d for d in devices if d.pipeline == name]
        expected = {lead for d in team for lead in d.leads}
        lost += len(expected - set(counts))
        duplicated += sum(n - 1 for n in counts.values() if n > 1)
        for device in team:
            held = {r.values["company"] for r in storage.load(device.file).live("opportunity")}
            missing_on_devices += len(set(counts) - held)
    print(f"checked against the model: {lost} leads lost, {duplicated} duplicated, "
          f"{missing_on_devices} missing on a device after the last sync")
    if lost or duplicated or missing_on_devices:
        raise SystemExit(1)


if __name__ == "__main__":
    threading.stack_size(1 << 20)
    main()
