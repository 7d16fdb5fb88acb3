"""Every command that takes a pipeline takes a store address: the audit of ``salesmgr --help``.

`USES` runs each command that names a pipeline once per store (a pipeline file, a slot of a SQLite
file, a slot of a PostgreSQL database) and checks what it did; a test walks the command line and
fails when a command takes a pipeline but has no entry here, or takes a file argument nobody
said why it is a file only.  Bad addresses get one line naming what is wrong, on every command.
One PostgreSQL database serves the whole module (one slot per test), so the PostgreSQL runs cost
no more than the SQLite ones.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from conftest import STORES
from helpers import one_error_line, salesmgr

from salesmgr.cli.group import PipelineAddress, cli
from salesmgr.plugins.transport_folder import FolderMailbox
from salesmgr.sync.device_file import DeviceFile
from salesmgr.sync.mailbox import DeviceDrops
from salesmgr.sync.wire import auth
from salesmgr.testing.postgres import TemporaryPostgres

SECRET = auth.new_secret()
NOT_AUDITED: dict[str, str] = {}  # a command left out of the audit, and why
# Arguments that are files and only files, and why.
FILE_ONLY = {
    ("import", "csv_file"): "the CSV to read, not a pipeline",
    ("emulator serve", "device_file"): "a device keeps its pipeline in a file (docs/team.md)",
    ("emulator hub-sync", "device_file"): "a device keeps its pipeline in a file (docs/team.md)",
    ("emulator day", "device_file"): "a device keeps its pipeline in a file (docs/team.md)",
}
# Commands whose STORE is a whole database, not one pipeline: tests/test_hub.py runs them.
DATABASE = ("hub serve", "hub pair", "hub devices", "hub revoke")


def ok(*args: object) -> str:
    result = salesmgr(*args, env={"SALESMGR_SECRET": SECRET})
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def companies(address: str) -> dict[str, dict[str, str]]:
    return {row["company"]: row for row in json.loads(ok("list", address, "--json"))}


# --- where the pipelines of a test live ---------------------------------------------------------


@pytest.fixture(scope="module")
def module_database(postgres: TemporaryPostgres) -> Iterator[str]:
    uri = postgres.new_database("addresses")
    yield uri
    postgres.drop_database(uri)


SLOTS = itertools.count(1)


@dataclass
class Office:
    """A pipeline ``desk`` holding Acme, in the store under test; ``at(name)`` is where another
    pipeline of the same store lives."""

    at: Callable[[str], str]
    desk: str
    acme: str
    folder: Path


@pytest.fixture(params=STORES)
def office(request: pytest.FixtureRequest, tmp_path: Path) -> Office:
    kind = request.param
    if kind == "file":
        def at(name: str) -> str:
            return str(tmp_path / f"{name}.smp")
    elif kind == "sqlite":
        def at(name: str) -> str:
            return f"sqlite:///{tmp_path}/office.db#{name}"
    else:
        uri, test = request.getfixturevalue("module_database"), next(SLOTS)

        def at(name: str) -> str:
            return f"{uri}#t{test}-{name}"
    desk = at("desk")
    ok("init", desk, "--owner", "ana", "--currency", "EUR")
    acme = ok("add", desk, "--company", "Acme", "--title", "Fleet", "--value", "1200",
              "--next-action", "call back", "--next-action-date", "2020-01-02")
    return Office(at, desk, acme, tmp_path)


def with_a_conflict(office: Office) -> str:
    """Acme's stage changed on the desktop and on a device copied from it, then merged: the id
    of the conflict logged."""
    device = office.at("device")
    ok("copy", office.desk, device)
    ok("edit", office.desk, office.acme, "--stage", "Won")
    ok("edit", device, office.acme, "--stage", "Lost")
    ok("merge", office.desk, device)
    logged = json.loads(ok("conflicts", office.desk, "--all", "--json"))
    assert len(logged) == 1
    return str(logged[0]["id"])


def loaded_device(office: Office) -> DeviceDrops:
    """A device behind a mirrored folder, loaded with ``desk`` (``salesmgr load --to``)."""
    box = office.folder / "box"
    box.mkdir()
    device = DeviceDrops(FolderMailbox(str(box)), SECRET, DeviceFile(office.folder / "dev.smp"))
    ok("load", office.desk, "--to", f"folder://{box}")
    assert [e.kind for e in device.step() if e.kind == "loaded"] == ["loaded"]
    return device


# --- what each command does at an address -------------------------------------------------------


def use_init(office: Office) -> None:
    fresh = office.at("fresh")
    ok("init", fresh, "--name", "Fresh", "--currency", "CHF")
    assert companies(fresh) == {}


def use_add(office: Office) -> None:
    ok("add", office.desk, "--company", "Globex", "--title", "Chairs")
    assert set(companies(office.desk)) == {"Acme", "Globex"}


def use_edit(office: Office) -> None:
    ok("edit", office.desk, office.acme, "--stage", "Proposal")
    assert companies(office.desk)["Acme"]["stage"] == "Proposal"


def use_delete(office: Office) -> None:
    ok("delete", office.desk, office.acme)
    assert companies(office.desk) == {}


def use_list(office: Office) -> None:
    assert companies(office.desk)["Acme"]["value"] == "1200.00"


def use_show(office: Office) -> None:
    assert json.loads(ok("show", office.desk, office.acme, "--json"))["company"] == "Acme"


def use_log(office: Office) -> None:
    ok("log", office.desk, office.acme, "--kind", "call", "--summary", "asked for a discount")
    shown = json.loads(ok("show", office.desk, office.acme, "--json"))
    assert [a["summary"] for a in shown["activities"]] == ["asked for a discount"]


def use_conflicts(office: Office) -> None:
    with_a_conflict(office)
    assert "stage" in ok("conflicts", office.desk, "--all")


def use_resolve(office: Office) -> None:
    ok("resolve", office.desk, with_a_conflict(office), "--take", "device")
    assert companies(office.desk)["Acme"]["stage"] == "Lost"


def use_merge(office: Office) -> None:
    device = office.at("device")  # both sides at an address of the store
    ok("copy", office.desk, device)
    ok("add", device, "--company", "Road", "--title", "met today")
    ok("edit", office.desk, office.acme, "--stage", "Won")
    ok("merge", office.desk, device)
    for side in (office.desk, device):
        assert set(companies(side)) == {"Acme", "Road"}
        assert companies(side)["Acme"]["stage"] == "Won"


def use_copy(office: Office) -> None:
    ok("copy", office.desk, office.at("copied"))
    assert companies(office.at("copied")) == companies(office.desk)


def use_export(office: Office) -> None:
    exported = ok("export", office.desk)
    assert exported.splitlines()[0].startswith("id,company,title") and "Acme" in exported


def use_import(office: Office) -> None:
    leads = office.folder / "leads.csv"
    leads.write_text("company,title\nInitech,Desks\n")
    ok("import", office.desk, leads)
    assert set(companies(office.desk)) == {"Acme", "Initech"}


def use_forecast(office: Office) -> None:
    forecast = json.loads(ok("forecast", office.desk, "--json"))
    assert "1200" in json.dumps(forecast)


def use_agenda(office: Office) -> None:
    assert "call back" in ok("agenda", office.desk, "--today", "2020-01-05")


def use_locale(office: Office) -> None:
    ok("locale", office.desk, "de_DE")
    assert ok("locale", office.desk) == "de_DE"


def use_load(office: Office) -> None:
    loaded_device(office)
    assert set(companies(str(office.folder / "dev.smp"))) == {"Acme"}


def use_sync(office: Office) -> None:
    device = loaded_device(office)
    ok("add", office.folder / "dev.smp", "--company", "Road", "--title", "met today")
    device.step()  # the device's offer
    ok("sync", office.desk, "--from", f"folder://{office.folder / 'box'}")
    assert set(companies(office.desk)) == {"Acme", "Road"}


def use_web(office: Office) -> None:
    """``salesmgr web`` as a user runs it; tests/test_web.py covers its pages and changes."""
    script = Path(sys.executable).with_name("salesmgr")
    server = subprocess.Popen([str(script), "web", office.desk, "--on", "127.0.0.1:0"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        found = re.search(r" on (http://127\.0\.0\.1:\d+)/ ", server.stdout.readline())
        assert found is not None
        with urllib.request.urlopen(found.group(1) + "/list", timeout=30) as page:
            assert office.acme in page.read().decode()
    finally:
        server.terminate()
        server.wait(20)


USES: dict[str, Callable[[Office], None]] = {
    "init": use_init, "add": use_add, "edit": use_edit, "delete": use_delete,
    "list": use_list, "show": use_show, "log": use_log, "conflicts": use_conflicts,
    "resolve": use_resolve, "merge": use_merge, "copy": use_copy, "export": use_export,
    "import": use_import, "forecast": use_forecast, "agenda": use_agenda,
    "locale": use_locale, "load": use_load, "sync": use_sync, "web": use_web,
}


@pytest.mark.parametrize("command", list(USES))
def test_the_command_works_at_every_kind_of_address(command: str, office: Office) -> None:
    USES[command](office)


# --- the audit itself ----------------------------------------------------------------------------


def every_command() -> Iterator[tuple[str, click.Command]]:
    """Each command of ``salesmgr --help`` and of its groups, by its full name."""
    context = click.Context(cli)

    def walk(group: click.Group, prefix: str) -> Iterator[tuple[str, click.Command]]:
        for name in group.list_commands(context):
            full = f"{prefix}{name}"
            if full in NOT_AUDITED:
                continue
            command = group.get_command(context, name)
            assert command is not None
            if isinstance(command, click.Group):
                yield from walk(command, f"{full} ")
            else:
                yield full, command

    yield from walk(cli, "")


def test_every_command_that_takes_a_pipeline_takes_an_address_and_is_run_here() -> None:
    takes_a_pipeline = set()
    for name, command in every_command():
        for param in command.params:
            if isinstance(param.type, PipelineAddress):
                takes_a_pipeline.add(name)
            elif isinstance(param, click.Argument) and (
                    isinstance(param.type, click.Path) or "file" in (param.name or "")):
                assert (name, param.name) in FILE_ONLY, (
                    f"salesmgr {name}: its {param.name} is a file only; make it a PIPELINE "
                    "(cli.group.PIPELINE) or say in FILE_ONLY why not")
    assert takes_a_pipeline == set(USES), "every command taking a pipeline is run in USES"
    assert {name for name, _ in every_command()} >= set(DATABASE)


BAD = {
    "sqlite://office.db": "is not sqlite:///PATH",
    "nosuch://x#emea": "no store for nosuch:// addresses",
    "postgresql://ana:hunter2@127.0.0.1:1/sales#emea": "cannot connect",
}
# How each command is called with a bad address {a}; X stands for an id.
CALLS = {
    "init": "init {a}", "add": "add {a} --company A --title B", "edit": "edit {a} X --stage Won",
    "delete": "delete {a} X", "list": "list {a}", "show": "show {a} X",
    "log": "log {a} X --kind call --summary s", "conflicts": "conflicts {a}",
    "resolve": "resolve {a} X --take device", "merge": "merge {a} {a}",
    "copy": "copy {a} {a}",  # the same address twice: refused, the password still hidden
    "export": "export {a}", "import": "import {a} {csv}", "forecast": "forecast {a}",
    "agenda": "agenda {a}", "locale": "locale {a}", "load": "load {a} --to folder://{box}",
    "sync": "sync {a} --from folder://{box}", "web": "web {a} --on 127.0.0.1:0",
    "hub serve": "hub serve {db} --on tcp://127.0.0.1:0 --key-file {key}",
    "hub pair": "hub pair {db} --device d --pipeline emea --key-file {key}",
    "hub devices": "hub devices {db}", "hub revoke": "hub revoke {db} --device d",
}


def test_every_command_is_called_with_a_bad_address_here() -> None:
    assert set(CALLS) == set(USES) | set(DATABASE)


@pytest.mark.parametrize("bad", list(BAD))
@pytest.mark.parametrize("command", list(CALLS))
def test_a_bad_address_gets_one_line_naming_it(command: str, bad: str, tmp_path: Path) -> None:
    (tmp_path / "leads.csv").write_text("company,title\nInitech,Desks\n")
    (tmp_path / "box").mkdir()
    words = CALLS[command].split()
    filled = [w.format(a=bad, db=bad.split("#")[0], csv=tmp_path / "leads.csv",
                       box=tmp_path / "box", key=tmp_path / "hub.key") for w in words]
    result = salesmgr(*filled, env={"SALESMGR_SECRET": SECRET})
    assert result.exit_code != 0
    line = one_error_line(result)
    assert BAD[bad] in line or (command == "copy" and "is SRC itself" in line), line
    assert "hunter2" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["box", "leads.csv"]  # nothing made


@pytest.mark.parametrize("command", ["serve --on tcp://127.0.0.1:0", "day",
                                     "hub-sync --hub tcp://127.0.0.1:1 --device d --pipeline p"])
def test_a_device_file_is_a_file_and_an_address_there_is_one_line(
    command: str, tmp_path: Path
) -> None:
    name, *options = command.split()
    result = salesmgr("emulator", name, f"sqlite:///{tmp_path}/office.db#emea", *options,
                      env={"SALESMGR_SECRET": SECRET})
    assert result.exit_code == 2
    assert "a device keeps its pipeline in a file" in one_error_line(result)
    assert list(tmp_path.iterdir()) == []
