"""One suite, three stores: the pipeline file, SQLite and PostgreSQL hold a pipeline the same way,
and merging, syncing, the mass-change brake and the conflict log behave the same on each.

Every test here runs once per store (the ``address`` fixture of conftest.py); the PostgreSQL runs
use a real server the suite starts itself, one database per test.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Addresses
from helpers import one_error_line, salesmgr

from salesmgr import storage
from salesmgr.emulator.process import EmulatorProcess, emulator_command
from salesmgr.merge.engine import merge_files
from salesmgr.model.pipeline import Pipeline, new_id
from salesmgr.plugin.manager import get_registry
from salesmgr.plugins import store_sql
from salesmgr.sync.wire import auth
from salesmgr.testing.compare import user_data
from salesmgr.testing.postgres import TemporaryPostgres

SECRET = auth.new_secret()  # what `salesmgr pair` prints


def ok(*args: object) -> str:
    result = salesmgr(*args)
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def companies(address: str) -> dict[str, dict[str, str]]:
    """The live opportunities at ``address`` as ``salesmgr list --json`` shows them."""
    rows = json.loads(ok("list", address, "--json"))
    return {row["company"]: row for row in rows}


def versions(pipeline: Pipeline) -> dict[str, Any]:
    """Everything a store must keep, versions included (the replica id aside: a copy forks)."""
    return {
        "pipeline_id": pipeline.pipeline_id,
        "header": (pipeline.name, pipeline.owner, pipeline.currency, pipeline.extra),
        "knowledge": pipeline.knowledge,
        "records": pipeline.records,
    }


def rich_pipeline() -> Pipeline:
    """A pipeline with every kind of thing a file keeps: live records and tombstones, a field
    edited after creation, a merged notes base, a conflict-log entry, a field and a header entry
    this version does not know, and what a peer knew."""
    registry = get_registry()
    opportunity = registry.record_type("opportunity")
    desk = Pipeline.create("EMEA", "ana", "EUR")
    first, _ = desk.add(opportunity, {"company": "Acme", "title": "Fleet", "notes": "met"})
    second, _ = desk.add(opportunity, {"company": "Globex", "title": "Chairs"})
    third, _ = desk.add(opportunity, {"company": "Initech", "title": "Desks"})
    device = copy.deepcopy(desk)
    device.replica_id = new_id()
    desk.update(opportunity, first.id, {"stage": "Won", "notes": "met\ncalled"})
    device.update(opportunity, first.id, {"stage": "Lost"})
    desk.delete(third.id)
    merge_files(desk, device)
    desk.records[second.id].values["territory"] = "north"  # a plugin's field, kept as it is
    desk.extra["x-region"] = "EU"
    assert any(r.kind == "conflict" for r in desk.records.values())
    return desk


# --- what a store keeps ------------------------------------------------------------------------


def test_a_store_keeps_everything_a_file_keeps(address: Addresses) -> None:
    pipeline = rich_pipeline()
    storage.create_pipeline(pipeline, address("emea"))
    back = storage.open_pipeline(address("emea"))
    assert versions(back) == versions(pipeline)
    assert back.replica_id == pipeline.replica_id and back.peers == pipeline.peers
    # Saved again after a change, it is still all there (only the changed rows are written).
    with storage.editing_pipeline(address("emea")) as editing:
        editing.update(get_registry().record_type("opportunity"),
                       sorted(r.id for r in editing.live("opportunity"))[0], {"value": "99"})
        expected = versions(editing)
    assert versions(storage.open_pipeline(address("emea"))) == expected


def test_copy_moves_a_pipeline_between_stores_without_losing_a_version(
    address: Addresses, tmp_path: Path
) -> None:
    original = tmp_path / "original.smp"
    storage.save(rich_pipeline(), original)
    ok("copy", original, address("copied"))
    ok("copy", address("copied"), tmp_path / "back.smp")
    there, back = storage.open_pipeline(address("copied")), storage.load(tmp_path / "back.smp")
    source = storage.load(original)
    assert versions(there) == versions(source) == versions(back)
    # Each copy is a replica of its own, so none can mint a version another already has.
    assert len({source.replica_id, there.replica_id, back.replica_id}) == 3
    refused = salesmgr("copy", original, address("copied"))
    assert refused.exit_code == 3
    assert "already exists" in one_error_line(refused)


def test_every_record_command_takes_the_address(address: Addresses, tmp_path: Path) -> None:
    desk = address("emea")
    ok("init", desk, "--owner", "ana", "--currency", "EUR")
    acme = ok("add", desk, "--company", "Acme", "--title", "Fleet", "--value", "1200")
    ok("edit", desk, acme, "--stage", "Proposal")
    ok("log", desk, acme, "--kind", "call", "--summary", "asked for a discount")
    globex = ok("add", desk, "--company", "Globex", "--title", "Chairs")
    ok("delete", desk, globex)
    csv_file = tmp_path / "leads.csv"
    csv_file.write_text("company,title,value\nInitech,Desks,300\n")
    ok("import", desk, csv_file)
    listed = companies(desk)
    assert sorted(listed) == ["Acme", "Initech"]
    assert listed["Acme"]["stage"] == "Proposal" and listed["Acme"]["currency"] == "EUR"
    shown = json.loads(ok("show", desk, acme, "--json"))
    assert shown["activities"][0]["summary"] == "asked for a discount"
    exported = ok("export", desk)
    assert exported.splitlines()[0].startswith("id,company,title")
    assert "Initech" in exported and "Globex" not in exported
    forecast = json.loads(ok("forecast", desk, "--json"))
    assert forecast, "forecast reads the pipeline at the address"
    ok("agenda", desk)
    ok("locale", desk, "de_DE")
    assert ok("locale", desk) == "de_DE"
    ok("edit", desk, acme, "--value", "1.500,50")  # read in the pipeline's locale
    assert companies(desk)["Acme"]["value"] == "1500.50"
    again = salesmgr("init", desk)
    assert again.exit_code == 3 and "already exists" in one_error_line(again)


# --- merge, conflicts, the brake ---------------------------------------------------------------


def new_office(desk: str, folder: Path, count: int) -> list[str]:
    """A pipeline of ``count`` opportunities at ``desk`` (one import); their ids in order."""
    ok("init", desk, "--owner", "ana")
    leads = folder / "leads.csv"
    leads.write_text("company,title,notes\n" + "".join(
        f"Company {i},Deal {i},met\n" for i in range(count)))
    ok("import", desk, leads)
    by_company = {row["company"]: row["id"] for row in json.loads(ok("list", desk, "--json"))}
    return [by_company[f"Company {i}"] for i in range(count)]


@pytest.fixture
def office(address: Addresses, tmp_path: Path) -> tuple[str, Path, list[str]]:
    """An office pipeline of twelve opportunities in the store under test, and a device file
    copied from it (the way a device was loaded by hand)."""
    desk = address("office")
    ids = new_office(desk, tmp_path, 12)
    device = tmp_path / "device.smp"
    ok("copy", desk, device)
    return desk, device, ids


def test_merge_keeps_every_change_and_logs_a_true_conflict(
    office: tuple[str, Path, list[str]],
) -> None:
    desk, device, ids = office
    ok("edit", desk, ids[0], "--stage", "Won")
    ok("edit", device, ids[0], "--stage", "Lost")  # the same field, differently: a conflict
    ok("edit", desk, ids[1], "--value", "500")
    ok("edit", device, ids[2], "--probability", "40")
    ok("delete", device, ids[3])
    ok("edit", desk, ids[4], "--notes", "met\ncalled back")
    ok("edit", device, ids[4], "--notes", "visited\nmet")  # lines merged, not a conflict
    ok("add", device, "--company", "Road lead", "--title", "Desks")
    ok("merge", desk, device)
    assert user_data(storage.open_pipeline(desk)) == user_data(storage.load(device))
    merged = companies(desk)
    assert merged["Company 1"]["value"] == "500.00"
    assert merged["Company 2"]["probability"] == 40
    assert "Company 3" not in merged and "Road lead" in merged
    shown = json.loads(ok("show", desk, ids[4], "--json"))
    assert shown["notes"] == "visited\nmet\ncalled back"
    conflicts = json.loads(ok("conflicts", desk, "--all", "--json"))
    assert [(c["field"], c["desktop_value"], c["device_value"]) for c in conflicts] == [
        ("stage", "Won", "Lost")
    ]
    ok("resolve", desk, conflicts[0]["id"], "--take", "device")
    assert companies(desk)["Company 0"]["stage"] == "Lost"
    ok("merge", desk, device)  # the choice travels
    assert companies(str(device))["Company 0"]["stage"] == "Lost"


def test_the_brake_stops_a_mass_change_before_anything_is_written(
    office: tuple[str, Path, list[str]],
) -> None:
    desk, device, ids = office
    for rid in ids[:10]:
        ok("delete", device, rid)
    before = versions(storage.open_pipeline(desk))
    stopped = salesmgr("merge", desk, device)
    assert stopped.exit_code == 6
    assert "10 of the 12 records on the desktop" in one_error_line(stopped)
    assert versions(storage.open_pipeline(desk)) == before
    ok("merge", desk, device, "--allow-mass-change")
    assert sorted(companies(desk)) == ["Company 10", "Company 11"]


# --- the evening sync over the network ---------------------------------------------------------


@pytest.fixture
def emulators() -> Iterator[list[EmulatorProcess]]:
    started: list[EmulatorProcess] = []
    yield started
    for emulator in started:
        emulator.stop()


def serve_device(
    device: Path, folder: Path, emulators: list[EmulatorProcess], secret: str = SECRET
) -> str:
    """``salesmgr emulator serve DEVICE`` over tcp in a subprocess; its URL."""
    emulator = EmulatorProcess(emulator_command(device, "tcp://127.0.0.1:0"), folder,
                               secret=secret)
    emulators.append(emulator)
    return emulator.url


def loaded_device(
    desk: str, count: int, folder: Path, emulators: list[EmulatorProcess]
) -> tuple[list[str], Path, str]:
    """An office pipeline of ``count`` opportunities, loaded onto an emulated device."""
    ids = new_office(desk, folder, count)
    device = folder / "device.smp"
    url = serve_device(device, folder, emulators)
    ok("load", desk, "--to", url, "--secret", SECRET)
    return ids, device, url


def test_load_and_sync_a_device_over_tcp(
    address: Addresses, tmp_path: Path, emulators: list[EmulatorProcess]
) -> None:
    desk = address("office")
    ids, device, url = loaded_device(desk, 4, tmp_path, emulators)
    ok("edit", desk, ids[0], "--stage", "Won")
    ok("edit", device, ids[0], "--stage", "Lost")
    ok("edit", device, ids[1], "--value", "75")
    ok("add", desk, "--company", "Office lead", "--title", "Chairs")
    ok("delete", device, ids[2])
    preview = json.loads(ok("sync", desk, "--from", url, "--secret", SECRET,
                            "--dry-run", "--json"))
    assert preview["dry_run"] is True
    assert "Company 2" in companies(desk)  # a dry run writes nothing
    ok("sync", desk, "--from", url, "--secret", SECRET)
    assert user_data(storage.open_pipeline(desk)) == user_data(storage.load(device))
    after = companies(desk)
    assert after["Company 1"]["value"] == "75.00" and "Company 2" not in after
    assert "Office lead" in companies(str(device))
    logged = json.loads(ok("conflicts", desk, "--all", "--json"))
    assert [(c["field"], c["desktop_value"], c["device_value"], c["status"]) for c in logged] == [
        ("stage", "Won", "Lost", "decided")
    ]
    assert after["Company 0"]["stage"] == logged[0]["value"]  # field-merge decided; logged
    assert json.loads(ok("conflicts", desk, "--json")) == []  # nothing left open


def test_a_mass_deletion_on_the_device_stops_the_sync(
    address: Addresses, tmp_path: Path, emulators: list[EmulatorProcess]
) -> None:
    desk = address("office")
    ids, device, url = loaded_device(desk, 12, tmp_path, emulators)
    for rid in ids[:10]:
        ok("delete", device, rid)
    before = versions(storage.open_pipeline(desk))
    stopped = salesmgr("sync", desk, "--from", url, "--secret", SECRET)
    assert stopped.exit_code == 6, stopped.output
    assert "10 of the 12 records on the desktop" in one_error_line(stopped)
    assert versions(storage.open_pipeline(desk)) == before
    ok("sync", desk, "--from", url, "--secret", SECRET, "--allow-mass-change")
    assert sorted(companies(desk)) == ["Company 10", "Company 11"]


# --- the database stores -----------------------------------------------------------------------


def test_one_database_holds_many_pipelines_apart(tmp_path: Path, postgres_uri: str) -> None:
    for base in (f"sqlite:///{tmp_path}/office.db", postgres_uri):
        ok("init", f"{base}#emea", "--name", "EMEA")
        ok("init", f"{base}#apac", "--name", "APAC")
        ok("add", f"{base}#emea", "--company", "Acme", "--title", "Fleet")
        assert list(companies(f"{base}#emea")) == ["Acme"]
        assert companies(f"{base}#apac") == {}
        missing = salesmgr("list", f"{base}#na")
        assert missing.exit_code == 3
        assert "no pipeline 'na' here (it holds: apac, emea)" in one_error_line(missing)
        ok("init", base)  # no '#NAME': the pipeline called main
        assert storage.open_pipeline(f"{base}#main").name == "main"


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    ok("init", f"sqlite:///{tmp_path}/office.db")
    with sqlite3.connect(tmp_path / "office.db") as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_relative_sqlite_path_is_relative_to_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    ok("init", "sqlite:///office.db#emea")
    assert (tmp_path / "office.db").exists()
    assert storage.local_file("sqlite:///office.db#emea") == Path(tmp_path / "office.db")


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("sqlite://office.db", "is not sqlite:///PATH"),
        ("sqlite:///{tmp}/none.db#emea", "no such database file"),
        ("sqlite:///{tmp}/office.db#", "names no pipeline after '#'"),
        ("sqlite:///{tmp}/not-a-db.db", "not a usable database"),
        ("sqlite:///{tmp}", "is a directory"),
        ("mongodb://host/db", "no store for mongodb:// addresses"),
    ],
)
def test_a_bad_address_gets_one_line(tmp_path: Path, address: str, problem: str) -> None:
    (tmp_path / "not-a-db.db").write_bytes(b"SMP1 this is no database" * 50)
    result = salesmgr("list", address.format(tmp=tmp_path))
    assert result.exit_code != 0
    assert problem in one_error_line(result)


def test_an_unreachable_postgresql_gets_one_line_and_hides_the_password(
    postgres: TemporaryPostgres,
) -> None:
    uri = postgres.uri("nosuchdb").replace("postgres:@", "postgres:hunter2@")
    result = salesmgr("list", f"{uri}#emea")
    line = one_error_line(result)
    assert result.exit_code == 3 and "cannot connect" in line and "nosuchdb" in line
    assert "hunter2" not in result.output


# --- the schema and its migrations -------------------------------------------------------------


def database_at(version: int, kind: str, tmp_path: Path, postgres_uri: str) -> str:
    """A database whose schema was left at ``version`` (0: empty) by an earlier salesmgr."""
    base = f"sqlite:///{tmp_path}/old.db" if kind == "sqlite" else postgres_uri
    store = storage.store_for(base)
    assert isinstance(store, store_sql.SqlStore)
    location = store.locate(base)
    with store.connect(location, create=True) as connection:
        store.migrate(connection, location, upto=version)
        assert store.schema_version(connection) == version
    return base


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
@pytest.mark.parametrize("version", range(store_sql.LATEST))
def test_a_database_from_every_earlier_schema_is_brought_forward(
    kind: str, version: int, tmp_path: Path, postgres_uri: str
) -> None:
    base = database_at(version, kind, tmp_path, postgres_uri)
    ok("init", f"{base}#emea")
    ok("add", f"{base}#emea", "--company", "Acme", "--title", "Fleet")
    store = storage.store_for(base)
    assert isinstance(store, store_sql.SqlStore)
    with store.connect(store.locate(base)) as connection:
        assert store.schema_version(connection) == store_sql.LATEST


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_database_from_a_newer_salesmgr_is_refused(
    kind: str, tmp_path: Path, postgres_uri: str
) -> None:
    base = database_at(store_sql.LATEST, kind, tmp_path, postgres_uri)
    store = storage.store_for(base)
    assert isinstance(store, store_sql.SqlStore)
    with store.connect(store.locate(base)) as connection:
        store.execute(connection, "UPDATE salesmgr_schema SET version = ?",
                      (store_sql.LATEST + 1,))
    store._migrated.clear()
    result = salesmgr("list", f"{base}#emea")
    assert result.exit_code == 3
    assert f"schema version {store_sql.LATEST + 1}" in one_error_line(result)
    assert "upgrade salesmgr" in one_error_line(result)


def test_the_address_of_a_file_is_still_a_plain_path(tmp_path: Path) -> None:
    path = tmp_path / "desk.smp"
    ok("init", path)
    assert companies(f"file://{path}") == {}
    assert storage.canonical(f"file://{path}") == os.path.realpath(path)


# --- docs/team.md: its setups run as written ---------------------------------------------------

TEAM_MD = (Path(__file__).parent.parent / "docs" / "team.md").read_text()


def setup_lines(name: str) -> list[list[str]]:
    """The salesmgr command lines of the shell block marked ``<!-- NAME -->``."""
    found = re.search(rf"<!-- {name} -->\n```sh\n(.*?)```", TEAM_MD, re.DOTALL)
    assert found is not None, f"docs/team.md has no {name} block"
    # A comment starts at " # " ("#emea" inside an address is not one).
    lines = [shlex.split(re.sub(r"\s+#\s.*$", "", line)) for line in found.group(1).splitlines()]
    return [words[1:] for words in lines if words and words[0] == "salesmgr"]


@pytest.mark.parametrize("setup", ["office setup", "team setup"])
def test_the_setups_in_docs_team_md_work_as_written(
    setup: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postgres_uri: str,
    emulators: list[EmulatorProcess],
) -> None:
    monkeypatch.chdir(tmp_path)
    ids = new_office(str(tmp_path / "desk.smp"), tmp_path, 3)
    (tmp_path / "leads.csv").write_text("company,title\nInitech,Desks\n")
    device = tmp_path / "device.smp"
    if setup == "office setup":  # the salesperson's device already holds the pipeline
        ok("copy", tmp_path / "desk.smp", device)
        ok("edit", device, ids[0], "--stage", "Won")
    secret = auth.new_secret()  # what `salesmgr pair` prints, in SALESMGR_SECRET at both ends
    monkeypatch.setenv("SALESMGR_SECRET", secret)
    url = serve_device(device, tmp_path, emulators, secret)
    where = {"tcp://127.0.0.1:PORT": url, "tcp://ana-phone:7070": url,
             "postgresql://db.example.com/sales": postgres_uri}

    def real(word: str) -> str:
        for written, actual in where.items():
            word = word.replace(written, actual)
        return word

    lines = setup_lines(setup)
    assert len(lines) >= 3
    for words in lines:
        ok(*map(real, words))
    pipeline_at = real(next(w for w in lines[0] if "://" in w and "#" in w))
    assert user_data(storage.open_pipeline(pipeline_at)) == user_data(storage.load(device))
    if setup == "office setup":
        assert companies(pipeline_at)["Company 0"]["stage"] == "Won"  # the device's edit came
        assert "Acme" in companies(str(device))  # and the office's went out
    else:
        assert sorted(companies(str(device))) == ["Initech"]
