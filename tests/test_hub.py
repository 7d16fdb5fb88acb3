"""The hub: devices paired one by one sync through stateless hub processes against pipelines in
SQLite and PostgreSQL.  Every hub here is ``salesmgr hub serve`` in a subprocess on loopback."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import one_error_line, salesmgr

from salesmgr import storage
from salesmgr.errors import SyncError
from salesmgr.plugins.hub import Ask, preamble, sync_with_hub
from salesmgr.plugins.store_sql import DeviceRow
from salesmgr.sync.device_file import DeviceFile
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

    listed = {d["device"]: d for d in json.loads(ok("hub", "devices", database, "--json"))}
    assert listed["ana"]["revoked"] and listed["ana"]["last_sync"]
    assert not listed["bob"]["revoked"] and listed["bob"]["last_sync"]
    assert listed["cho"]["pipelines"] == ["apac"]


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


def test_device_rows_round_trip(database: str) -> None:
    store = storage.store_for(database)
    row = DeviceRow("ana", "p1", ("emea", "apac"), 1, None, None)
    store.put_device(database, row)  # type: ignore[attr-defined]
    assert store.device_row(database, "ana") == row  # type: ignore[attr-defined]
