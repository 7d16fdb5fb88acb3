"""The hub: devices paired one by one sync through stateless hub processes against pipelines in
SQLite and PostgreSQL.  Every hub here is ``salesmgr hub serve`` in a subprocess on loopback."""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import one_error_line, salesmgr

from salesmgr import storage
from salesmgr.emulator.process import EmulatorProcess, emulator_command
from salesmgr.errors import SyncError
from salesmgr.plugins.hub import Ask, preamble, sync_with_hub
from salesmgr.plugins.store_sql import DeviceRow
from salesmgr.plugins.transport_folder import FolderMailbox
from salesmgr.sync.device_file import DeviceFile
from salesmgr.sync.mailbox import DeviceDrops
from salesmgr.sync.session import DeviceSession
from salesmgr.sync.transports import live_transport


def ok(*args: object) -> str:
    result = salesmgr(*args)
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


class HubProcess:
    """``salesmgr hub serve STORE --on tcp://127.0.0.1:0`` in a subprocess."""

    def __init__(self, store: str, key: Path, folder: Path, *extra: str,
                 on: str = "tcp://127.0.0.1:0") -> None:
        self.err = folder / f"hub-{time.monotonic_ns()}.err"
        with open(self.err, "wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-c", "from salesmgr.cli.group import main; main()", "hub",
                 "serve", store, "--on", on, "--key-file", str(key), *extra],
                stdout=subprocess.PIPE, stderr=err, text=True,
            )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line.startswith("listening on "), line + self.err.read_text()
        self.url = line.split()[-1]

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=30)
        return out


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/team.db"
    return str(request.getfixturevalue("postgres_uri"))


@pytest.fixture
def hubs(tmp_path: Path) -> Iterator[list[HubProcess]]:
    started: list[HubProcess] = []
    yield started
    for hub in started:
        hub.stop()


def team(database: str, tmp_path: Path) -> dict[str, str]:
    """Two pipelines, emea and apac, and three devices: ana and bob on emea, cho on apac."""
    for name in ("emea", "apac"):
        ok("init", f"{database}#{name}", "--owner", "team")
        ok("add", f"{database}#{name}", "--company", f"{name} lead", "--title", "first")
    key = tmp_path / "hub.key"
    return {
        device: ok("hub", "pair", database, "--device", device, "--pipeline", pipeline,
                   "--key-file", key)
        for device, pipeline in (("ana", "emea"), ("bob", "emea"), ("cho", "apac"))
    }


def companies(address: str | Path) -> set[str]:
    return {r.values["company"] for r in storage.open_pipeline(address).live("opportunity")}


def hub_sync(tmp_path: Path, url: str, device: str, pipeline: str, secret: str,
             **options: str) -> None:
    sync_with_hub(tmp_path / f"{device}.smp", url, device, pipeline, secret, timeout=20,
                  options=options)


def test_devices_reach_the_hub_over_tls(
    database: str, tmp_path: Path, hubs: list[HubProcess]
) -> None:
    from test_sync_tcp_e2e import self_signed_certificate

    cert, key = self_signed_certificate(tmp_path)
    secrets = team(database, tmp_path)
    hubs.append(hub := HubProcess(database, tmp_path / "hub.key", tmp_path, "--tls-cert",
                                  str(cert), "--tls-key", str(key), on="tcps://127.0.0.1:0"))
    assert hub.url.startswith("tcps://")
    hub_sync(tmp_path, hub.url, "cho", "apac", secrets["cho"], tls_ca=str(cert))
    assert companies(tmp_path / "cho.smp") == {"apac lead"}


def test_paired_devices_sync_revoked_ones_are_refused_and_see_only_their_pipeline(
    database: str, tmp_path: Path, hubs: list[HubProcess]
) -> None:
    secrets = team(database, tmp_path)
    hubs.append(hub := HubProcess(database, tmp_path / "hub.key", tmp_path))
    hub_sync(tmp_path, hub.url, "ana", "emea", secrets["ana"])  # a new device gets it all
    assert companies(tmp_path / "ana.smp") == {"emea lead"}
    ok("add", tmp_path / "ana.smp", "--company", "road lead", "--title", "met today")
    hub_sync(tmp_path, hub.url, "ana", "emea", secrets["ana"])
    assert companies(f"{database}#emea") == {"emea lead", "road lead"}

    # Paired for emea only: apac is out of reach, whatever the device asks.
    with pytest.raises(SyncError, match="not paired for pipeline 'apac'"):
        hub_sync(tmp_path, hub.url, "ana", "apac", secrets["ana"])
    # Another device's credential does not open ana's pairing.
    with pytest.raises(SyncError, match="authentication failed"):
        hub_sync(tmp_path, hub.url, "bob", "emea", secrets["ana"])

    ok("hub", "revoke", database, "--device", "ana")
    with pytest.raises(SyncError, match="device 'ana' was revoked"):
        hub_sync(tmp_path, hub.url, "ana", "emea", secrets["ana"])
    hub_sync(tmp_path, hub.url, "bob", "emea", secrets["bob"])  # the others are untouched
    hub_sync(tmp_path, hub.url, "cho", "apac", secrets["cho"])
    assert companies(tmp_path / "bob.smp") == {"emea lead", "road lead"}
    assert companies(tmp_path / "cho.smp") == {"apac lead"}

    # The hub records a sync once the device's last word arrived; the device may be done first.
    listed = devices_once_synced(database, {"ana", "bob", "cho"})
    assert listed["ana"]["revoked"] and listed["ana"]["last_sync"]
    assert not listed["bob"]["revoked"] and listed["bob"]["last_sync"]
    assert listed["cho"]["pipelines"] == ["apac"]


def devices_once_synced(database: str, names: set[str], within: float = 10.0) -> dict:
    """`hub devices --json`, as soon as each of ``names`` has a last sync (or at the deadline)."""
    deadline = time.monotonic() + within
    while True:
        listed = {d["device"]: d for d in json.loads(ok("hub", "devices", database, "--json"))}
        if all(listed[n]["last_sync"] for n in names) or time.monotonic() > deadline:
            return listed
        time.sleep(0.05)


def test_the_database_holds_no_credential(database: str, tmp_path: Path) -> None:
    secrets = team(database, tmp_path)
    store = storage.store_for(database)
    location = store.locate(database)  # type: ignore[attr-defined]
    with store.connect(location) as connection:  # type: ignore[attr-defined]
        dump = repr(store.execute(connection, "SELECT * FROM hub_devices").fetchall())  # type: ignore[attr-defined]
    for secret in secrets.values():
        assert secret not in dump
    again = ok("hub", "pair", database, "--device", "ana", "--pipeline", "emea",
               "--key-file", tmp_path / "hub.key")
    assert again != secrets["ana"]  # pairing again gives a new credential


def test_the_emulator_calls_a_hub_as_a_paired_device(
    database: str, tmp_path: Path, hubs: list[HubProcess]
) -> None:
    secrets = team(database, tmp_path)
    hubs.append(hub := HubProcess(database, tmp_path / "hub.key", tmp_path))
    device = tmp_path / "cho.smp"
    said = ok("emulator", "hub-sync", device, "--hub", hub.url, "--device", "cho",
              "--pipeline", "apac", "--secret", secrets["cho"])
    assert said == f"synced with {hub.url}: 1 received, 0 sent"
    assert companies(device) == {"apac lead"}
    refused = salesmgr("emulator", "hub-sync", device, "--hub", hub.url, "--device", "cho",
                       "--pipeline", "emea", "--secret", secrets["cho"])
    assert "not paired for pipeline 'emea'" in one_error_line(refused)


def test_two_stateless_hubs_on_one_database_merge_every_device(
    database: str, tmp_path: Path, hubs: list[HubProcess]
) -> None:
    key = tmp_path / "hub.key"
    ok("init", f"{database}#emea")
    names = [f"d{i}" for i in range(6)]
    secrets = {n: ok("hub", "pair", database, "--device", n, "--pipeline", "emea",
                     "--key-file", key) for n in names}
    hubs.extend([HubProcess(database, key, tmp_path), HubProcess(database, key, tmp_path)])
    for index, name in enumerate(names):
        hub_sync(tmp_path, hubs[index % 2].url, name, "emea", secrets[name])
        ok("add", tmp_path / f"{name}.smp", "--company", f"lead of {name}", "--title", "x")
    errors: list[BaseException] = []

    def evening(index: int, name: str) -> None:
        try:
            hub_sync(tmp_path, hubs[index % 2].url, name, "emea", secrets[name])
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=evening, args=(i, n)) for i, n in enumerate(names)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    everyone = {f"lead of {n}" for n in names}
    assert companies(f"{database}#emea") == everyone  # every device's lead, once
    for index, name in enumerate(names):  # a second round brings everyone's back to each
        hub_sync(tmp_path, hubs[(index + 1) % 2].url, name, "emea", secrets[name])
        assert companies(tmp_path / f"{name}.smp") == everyone


def test_sigterm_lets_the_session_under_way_finish(
    database: str, tmp_path: Path, hubs: list[HubProcess]
) -> None:
    secrets = team(database, tmp_path)
    hubs.append(hub := HubProcess(database, tmp_path / "hub.key", tmp_path))
    link = live_transport(hub.url).connect(hub.url, {"timeout": 20})
    link.send(preamble(Ask("ana", "emea")))
    assert link.receive(20) == b"OK"  # the session has begun...
    hub.process.send_signal(signal.SIGTERM)  # ...when the hub is told to stop
    time.sleep(0.5)
    device = DeviceFile(tmp_path / "ana.smp")
    result = DeviceSession(link, secrets["ana"], device, timeout=20).serve()
    link.close()
    assert result.committed
    assert companies(tmp_path / "ana.smp") == {"emea lead"}
    assert hub.process.wait(30) == 0
    assert "stopped after 1 sessions (0 failed)" in hub.stop()
    with pytest.raises(SyncError):  # and it takes no new one
        hub_sync(tmp_path, hub.url, "bob", "emea", secrets["bob"])


def test_a_hub_needs_a_database(tmp_path: Path) -> None:
    ok("init", tmp_path / "desk.smp")
    result = salesmgr("hub", "pair", tmp_path / "desk.smp", "--device", "ana",
                      "--pipeline", "main", "--key-file", tmp_path / "k")
    assert result.exit_code == 2
    assert "a hub needs a database" in one_error_line(result)
    result = salesmgr("hub", "pair", f"sqlite:///{tmp_path}/t.db", "--device", "ana",
                      "--pipeline", "nope", "--key-file", tmp_path / "k")
    assert result.exit_code == 3 and "no such database file" in one_error_line(result)


def test_a_missing_database_is_named_as_the_user_wrote_it(tmp_path: Path) -> None:
    """A hub's address names a whole database: the error names it without a pipeline the
    user never wrote; a pipeline's address keeps the pipeline it names."""
    database = f"sqlite:///{tmp_path}/none.db"
    result = salesmgr("hub", "devices", database)
    assert result.exit_code == 3
    assert one_error_line(result) == f"salesmgr: {database}: no such database file"
    result = salesmgr("list", f"{database}#emea")
    assert one_error_line(result) == f"salesmgr: {database}#emea: no such database file"


def test_device_rows_round_trip(database: str) -> None:
    store = storage.store_for(database)
    row = DeviceRow("ana", "p1", ("emea", "apac"), 1, None, None)
    store.put_device(database, row)  # type: ignore[attr-defined]
    assert store.device_row(database, "ana") == row  # type: ignore[attr-defined]


# --- the hub over the folder transport: each device's mirrored folder, store and forward ----------


def wait_until(done: Callable[[], object], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


class FolderDevice:
    """A device whose mailbox is ``devices/NAME/PIPELINE``: the device half of a folder sync,
    run in the test, one look at a time."""

    def __init__(self, devices: Path, tmp_path: Path, name: str, pipeline: str,
                 secret: str) -> None:
        self.folder = devices / name / pipeline
        self.folder.mkdir(parents=True, exist_ok=True)
        self.file = tmp_path / f"{name}-{pipeline}.smp"
        self.drops = DeviceDrops(FolderMailbox(str(self.folder)), secret, DeviceFile(self.file))

    def entries(self, kind: str) -> list[str]:
        return sorted(p.name for p in self.folder.glob(f"{kind}-*"))

    def offer(self) -> None:
        self.drops.step()
        assert self.entries("offer"), "the device left no offer"

    def sync(self) -> None:
        """Offer, then wait for the hub's answer and take it."""
        self.offer()
        wait_until(lambda: any(e.kind in ("committed", "loaded") for e in self.drops.step()),
                   f"the hub's answer in {self.folder}")


def hub_said(hub: HubProcess, text: str) -> Callable[[], bool]:
    return lambda: text in hub.err.read_text()


def folder_hub(database: str, tmp_path: Path, hubs: list[HubProcess]) -> tuple[HubProcess, Path]:
    devices = tmp_path / "devices"
    devices.mkdir()
    hubs.append(hub := HubProcess(database, tmp_path / "hub.key", tmp_path, "--interval", "0.1",
                                  on=f"folder://{devices}"))
    assert hub.url == f"folder://{devices.resolve()}"
    return hub, devices


@dataclass
class FolderTeam:
    """`team` served by a folder hub, and ana's device, synced once."""

    secrets: dict[str, str]
    hub: HubProcess
    devices: Path
    ana: FolderDevice


@pytest.fixture
def folder_team(database: str, tmp_path: Path, hubs: list[HubProcess]) -> FolderTeam:
    secrets = team(database, tmp_path)
    hub, devices = folder_hub(database, tmp_path, hubs)
    ana = FolderDevice(devices, tmp_path, "ana", "emea", secrets["ana"])
    ana.sync()  # a new device gets the whole pipeline in its first answer
    assert companies(ana.file) == {"emea lead"}
    return FolderTeam(secrets, hub, devices, ana)


def test_a_hub_serves_paired_devices_through_their_mirrored_folders(
    database: str, folder_team: FolderTeam
) -> None:
    hub, ana = folder_team.hub, folder_team.ana
    ok("add", ana.file, "--company", "road lead", "--title", "met today")
    ana.sync()
    assert companies(f"{database}#emea") == {"emea lead", "road lead"}
    # An office edit reaches the device while its offer stands: the hub answers it again.  (The
    # pause lets the hub see the device's fresh offer first and find it in step, so that only
    # the pipeline's change can make it answer.)
    time.sleep(1.0)
    ok("add", f"{database}#emea", "--company", "office lead", "--title", "called in")
    wait_until(lambda: any(e.kind == "committed" for e in ana.drops.step()), "the office edit")
    assert companies(ana.file) == {"emea lead", "road lead", "office lead"}

    listed = {d["device"]: d for d in json.loads(ok("hub", "devices", database, "--json"))}
    assert listed["ana"]["last_sync"] and not listed["bob"]["last_sync"]
    out = hub.stop()
    assert "ana emea: 1 received, 0 sent" in out
    assert "stopped after 3 sessions (0 failed)" in out


def test_through_folders_a_revoked_device_is_refused_and_none_reads_another_pipeline(
    database: str, tmp_path: Path, folder_team: FolderTeam
) -> None:
    secrets, hub, devices, ana = (folder_team.secrets, folder_team.hub, folder_team.devices,
                                  folder_team.ana)
    # ana is paired for emea only: an offer under apac is never read, nothing of apac written.
    astray = FolderDevice(devices, tmp_path, "ana", "apac", secrets["ana"])
    astray.offer()
    # bob's folder, written with ana's credential: refused, nothing merged.
    forger = FolderDevice(devices, tmp_path, "bob", "emea", secrets["ana"])
    ok("add", ana.file, "--company", "forged lead", "--title", "x")
    forger.drops = DeviceDrops(FolderMailbox(str(forger.folder)), secrets["ana"],
                               DeviceFile(ana.file))
    forger.offer()
    wait_until(hub_said(hub, "failed its authentication check"), "the forged offer's refusal")
    cho = FolderDevice(devices, tmp_path, "cho", "apac", secrets["cho"])
    cho.sync()  # the hub has looked everywhere since ana's stray offer was left
    assert companies(cho.file) == {"apac lead"}
    assert astray.entries("answer") == astray.entries("load") == []
    assert companies(f"{database}#emea") == {"emea lead"}

    ok("hub", "revoke", database, "--device", "ana")
    ok("add", ana.file, "--company", "after revoke", "--title", "x")
    ana.offer()
    wait_until(hub_said(hub, "refused ana: device 'ana' was revoked"), "the refusal")
    assert ana.entries("answer") == []
    bob = FolderDevice(devices, tmp_path, "bob", "emea", secrets["bob"])
    for stale in forger.entries("offer"):
        (bob.folder / stale).unlink()
    bob.sync()  # the others go on as before
    assert companies(bob.file) == {"emea lead"}
    assert companies(f"{database}#emea") == {"emea lead"}


def doc_lines(name: str) -> list[list[str]]:
    """The command lines of the ``<!-- name -->`` block of docs/team.md, as words."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "team.md").read_text()
    found = re.search(rf"<!-- {name} -->\n```sh\n(.*?)```", text, re.DOTALL)
    assert found is not None, f"docs/team.md has no {name} block"
    return [shlex.split(re.sub(r"\s+#\s.*$", "", line).rstrip(" &"))
            for line in found.group(1).splitlines() if line.strip()]


def test_the_folder_hub_setup_of_docs_team_md_works_with_the_emulator(
    database: str, tmp_path: Path, hubs: list[HubProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    ok("init", f"{database}#emea")
    ok("add", f"{database}#emea", "--company", "emea lead", "--title", "first")

    def real(word: str) -> str:
        return word.replace("sqlite:///office.db", database).replace("/srv/sales", str(tmp_path))

    pair, mkdir, serve, device = ([real(w) for w in line] for line in
                                  doc_lines("folder hub setup"))
    secret = ok(*pair[1:])
    assert mkdir[:2] == ["mkdir", "-p"]
    Path(mkdir[2]).mkdir(parents=True)
    on = f"folder://{tmp_path}/devices"
    assert serve == ["salesmgr", "hub", "serve", database, "--on", on, "--key-file", "hub.key"]
    hubs.append(HubProcess(database, Path("hub.key"), tmp_path, "--interval", "0.1", on=on))
    assert device[:3] == ["salesmgr", "emulator", "serve"]
    emulator = EmulatorProcess(emulator_command(Path(device[3]), device[5], extra=device[6:]),
                               tmp_path, secret=secret)
    try:
        wait_until(lambda: Path("ana.smp").exists() and companies("ana.smp") == {"emea lead"},
                   "the emulator's first answer")
        ok("add", "ana.smp", "--company", "road lead", "--title", "met")
        wait_until(lambda: companies(f"{database}#emea") == {"emea lead", "road lead"},
                   "the emulator's lead in the database")
    finally:
        emulator.stop()
    assert "committed" in emulator.stdout


def test_a_folder_hub_needs_its_folder(database: str, tmp_path: Path) -> None:
    team(database, tmp_path)
    result = salesmgr("hub", "serve", database, "--on", f"folder://{tmp_path}/none",
                      "--key-file", tmp_path / "hub.key")
    assert result.exit_code != 0
    assert "no such folder" in one_error_line(result)
