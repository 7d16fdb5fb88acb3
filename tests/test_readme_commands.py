"""Every command README.md shows is run, not only parsed.

- The quick start's first line makes a venv, installs salesmgr editable and runs the demo: here
  the venv is the one running these tests (made the same way, ``pip install -e .``), so its
  ``salesmgr demo`` console script is run as the README says.  The second line is `.ci/run`'s,
  word for word: CI runs it.
- The shell blocks of "What it does" run line by line through the installed console script in a
  new folder, the device in the background as the ``&`` says.
- The benchmarks run with a few hundred records instead of 100,000 (``--records``, one run).
- A block marked ``<!-- README example: runs in tests/X.py -->`` is run by that test.
- Every command in inline code (the command table, the prose) is run in process, with its
  placeholders (FILE, ID, URL...) filled in from a small office: `RUNS` says how, one README text
  each.  A README command with no way to run it here fails `test_every_readme_command_is_run`.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import salesmgr

from salesmgr import storage
from salesmgr.emulator.process import EmulatorProcess
from salesmgr.testing.compare import user_data

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
SCRIPT = Path(sys.executable).parent / "salesmgr"  # the installed console script
SECRET = secrets.token_urlsafe(32)  # as strong as `salesmgr pair` prints
MARKED = re.compile(r"<!-- README example: runs in (\S+) -->\n```sh\n(.*?)```", re.DOTALL)


def shell_lines() -> list[tuple[str | None, str]]:
    """Every command line of README's ``sh`` blocks, with the test file that runs its block
    when the block is marked so (comments and blank lines left out)."""
    marked = {block: runner for runner, block in MARKED.findall(README)}
    found = []
    for block in re.findall(r"```sh\n(.*?)```", README, re.DOTALL):
        for line in block.splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                found.append((marked.get(block), line))
    return found


def inline_commands() -> list[str]:
    return re.findall(r"`(salesmgr [^`]+)`", README)


def words_of(line: str) -> list[str]:
    return shlex.split(line, comments=True)


QUICK_START = [
    "python3 -m venv .venv && .venv/bin/pip install -q -e . && .venv/bin/salesmgr demo",
    "python3 -m venv .venv && .venv/bin/pip install -q tox && .venv/bin/tox",
]


def is_bench(line: str) -> bool:
    return line.startswith("python bench/")


def story_lines() -> list[str]:
    """The unmarked ``salesmgr`` and ``export`` lines of the shell blocks: run literally, in
    order."""
    return [line for runner, line in shell_lines()
            if runner is None and line.startswith(("salesmgr ", "export "))]


# --- the office the inline commands run in ------------------------------------------------------


@dataclass
class Office:
    folder: Path
    values: dict[str, str]
    device: EmulatorProcess

    def fill(self, command: str) -> list[str]:
        return [word.format(**self.values) for word in shlex.split(command)]


def ok(*args: object) -> str:
    result = salesmgr(*args)
    assert result.exit_code == 0, f"salesmgr {' '.join(map(str, args))}:\n{result.output}"
    assert "Traceback" not in result.output
    return result.stdout


@pytest.fixture(scope="module")
def office(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Office]:
    """A desktop file with three deals and an open conflict, its device copy, a CSV export, a
    CRM's export and a mapping for another one, and an emulated device on tcp."""
    folder = tmp_path_factory.mktemp("readme-office")
    desk, device = folder / "desk.smp", folder / "device.smp"
    ok("init", desk, "--name", "EMEA", "--owner", "ana", "--currency", "EUR", "--locale", "en_US")
    acme, beta, cobalt = (
        ok("add", desk, "--company", company, "--title", "Deal", "--value", "1000").strip()
        for company in ("Acme", "Beta", "Cobalt")
    )
    shutil.copyfile(desk, device)  # copied the old way: a replica of its own
    ok("edit", desk, acme, "--stage", "Won")
    ok("edit", device, acme, "--stage", "Lost")
    ok("merge", desk, device, "--policy", "manual")
    [conflict] = json.loads(ok("conflicts", desk, "--json"))
    ok("export", desk, "--output", folder / "pipeline.csv")
    (folder / "salesforce.csv").write_text(
        '"Opportunity Owner","Account Name","Opportunity Name","Stage","Amount","Close Date"\n'
        '"ana","Dyna Ltd","Scanners","Prospecting","$2,000.00","1/15/2027"\n'
    )
    (folder / "altcrm.csv").write_text("Firma,Vorhaben,Betrag,Nr.\nEcho AG,Tische,500,17\n")
    (folder / "altcrm.toml").write_text(
        'name = "altcrm"\n[columns]\n"Firma" = "company"\n"Vorhaben" = "title"\n'
        '"Betrag" = "value"\n"Nr." = "external_id"\n'
    )
    process = EmulatorProcess(
        [str(SCRIPT), "emulator", "serve", str(folder / "handheld.smp"), "--on",
         "tcp://127.0.0.1:0"],
        folder, secret=SECRET,
    )
    values = {
        "desk": str(desk), "device": str(device), "id": acme, "other": beta, "gone": cobalt,
        "conflict": conflict["id"], "csv": str(folder / "pipeline.csv"),
        "salesforce": str(folder / "salesforce.csv"), "alt": str(folder / "altcrm.csv"),
        "mapping": str(folder / "altcrm.toml"), "fresh": str(folder / "fresh.csv"),
        "new": str(folder / "new.smp"),
        "url": process.url, "day_device": str(folder / "day.smp"),
    }
    try:
        yield Office(folder, values, process)
    finally:
        process.stop()


# README's inline commands -> the command lines that run them here ({names} from the office).
RUNS: dict[str, list[str]] = {
    "salesmgr pair": ["pair"],
    "salesmgr init FILE": ["init {new}"],
    "salesmgr locale FILE [LOCALE]": ["locale {desk}", "locale {desk} en_US"],
    "salesmgr locale": ["locale {desk}"],
    "salesmgr add FILE --company C --title T [...]":
        ["add {desk} --company C --title T --value 250 --stage Proposal"],
    "salesmgr edit FILE ID [...]": ["edit {desk} {other} --phone 555-0100"],
    "salesmgr delete FILE ID": ["delete {desk} {gone}"],
    "salesmgr log FILE OPPORTUNITY_ID --kind call --summary TEXT":
        ["log {desk} {other} --kind call --summary 'Called back'"],
    "salesmgr list FILE [--stage S] [--json]": ["list {desk}", "list {desk} --stage Lead --json"],
    "salesmgr show FILE ID [--json]": ["show {desk} {other}", "show {desk} {other} --json"],
    "salesmgr list FILE [--search TEXT] [--owner O] [--due-before DATE] [--sort FIELD]":
        ["list {desk} --search acme --owner ana --due-before 2030-01-01 --sort value"],
    "salesmgr forecast FILE [--by stage\\|month\\|owner] [--json]":
        ["forecast {desk}", "forecast {desk} --by stage --json", "forecast {desk} --by month",
         "forecast {desk} --by owner"],
    "salesmgr agenda FILE [--days N] [--owner O] [--json]":
        ["agenda {desk}", "agenda {desk} --days 7 --owner ana --json"],
    "salesmgr import FILE CSV [--update] [--dry-run] [--profile P] [--mapping TOML]":
        ["export {desk} --output {fresh}",  # the desktop as it is now, to import back
         "import {desk} {fresh} --update --dry-run", "import {desk} {fresh} --update",
         "import {desk} {salesforce} --profile salesforce --dry-run",
         "import {desk} {alt} --mapping {mapping}"],
    "salesmgr import": ["import {desk} {salesforce}"],
    "salesmgr export FILE [--activities] [--bom] [--raw] [--output CSV]":
        ["export {desk}", "export {desk} --activities --bom --raw --output {csv}"],
    "salesmgr export FILE --ics [--todos]": ["export {desk} --ics", "export {desk} --ics --todos"],
    "salesmgr export FILE --vcf": ["export {desk} --vcf"],
    "salesmgr merge DESKTOP DEVICE": ["merge {desk} {device}"],
    "salesmgr conflicts": ["conflicts {desk}"],
    "salesmgr conflicts FILE": ["conflicts {desk}"],
    "salesmgr resolve FILE ID --take ...": ["resolve {desk} {conflict} --take device"],
    "salesmgr resolve FILE ID --take desktop|device|VALUE":
        ["resolve {desk} {conflict} --take desktop", "resolve {desk} {conflict} --take device",
         "resolve {desk} {conflict} --take Negotiation"],
    "salesmgr load DESKTOP --to URL": ["load {desk} --to {url}"],
    "salesmgr sync DESKTOP --from URL": ["sync {desk} --from {url}"],
    "salesmgr emulator day DEVICE --seed N": ["emulator day {day_device} --seed 3"],
    "salesmgr plugins [--json]": ["plugins", "plugins --json"],
}
# Run by another test, which says so here.
ELSEWHERE: dict[str, str] = {
    "salesmgr emulator serve DEVICE --on URL": "the office fixture (the device load/sync reach)",
    "salesmgr demo [--transport serial\\|folder\\|tcp]":
        "tests/test_demo.py::test_the_demo_plays_the_whole_day_and_leaves_nothing_behind",
    "salesmgr demo --transport folder":
        "tests/test_demo.py::test_the_demo_plays_the_whole_day_and_leaves_nothing_behind",
    "salesmgr demo --keep day": "test_a_kept_day_is_shown_in_a_browser",
    "salesmgr web day/desk.smp --open": "test_a_kept_day_is_shown_in_a_browser",
    "salesmgr web FILE [--on HOST:PORT] [--open]": "test_a_kept_day_is_shown_in_a_browser",
    # The hub needs PostgreSQL and TLS: tests/test_hub.py starts them and runs these.
    "salesmgr hub serve STORE --on tcps://HOST:PORT": "tests/test_hub.py",
    "salesmgr hub serve STORE --on folder:///PATH": "tests/test_hub.py",
    "salesmgr hub pair STORE --device NAME --pipeline P": "tests/test_hub.py",
    "salesmgr hub devices STORE": "tests/test_hub.py",
    "salesmgr hub revoke STORE --device NAME": "tests/test_hub.py",
    "salesmgr copy SRC DST": "tests/test_stores.py",
    "salesmgr emulator hub-sync DEVICE --hub URL --device NAME --pipeline P": "tests/test_hub.py",
}


# Known gaps, named so that they stay visible: no test runs these yet.
NOT_RUN_YET: dict[str, str] = {}


def test_every_readme_command_is_run() -> None:
    covered = set(RUNS) | set(ELSEWHERE) | set(NOT_RUN_YET)
    missing = [c for c in inline_commands() if c not in covered]
    assert not missing, f"add these README commands to RUNS in {Path(__file__).name}: {missing}"
    for runner, line in shell_lines():
        assert (
            line in QUICK_START or is_bench(line) or runner is not None
            or line.startswith(("salesmgr ", "export "))
        ), f"README shell line nobody runs: {line}"
        if runner is not None:
            assert MARKED.pattern and (ROOT / runner).is_file(), f"{runner} does not exist"
    # What ELSEWHERE promises: test_demo plays every transport the README names.
    demo = (ROOT / "tests" / "test_demo.py").read_text()
    assert '@pytest.mark.parametrize("transport", ["serial", "tcp", "folder"])' in demo


@pytest.mark.parametrize("text", list(RUNS))
def test_the_inline_command_runs(text: str, office: Office) -> None:
    if text not in inline_commands():
        pytest.fail(f"{text!r} is no longer in README.md: take it out of RUNS")
    day = Path(office.values["day_device"])
    if not day.exists():
        shutil.copyfile(office.values["desk"], day)
    env = {"SALESMGR_SECRET": SECRET}
    for command in RUNS[text]:
        result = salesmgr(*office.fill(command), env=env)
        assert result.exit_code == 0, f"salesmgr {command}:\n{result.output}"
        assert "Traceback" not in result.output


# --- the quick start, the story, the benchmarks ---------------------------------------------------


def script(*words: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    run = subprocess.run([str(SCRIPT), *words], cwd=cwd, capture_output=True, text=True,
                         timeout=120, stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})
    assert run.returncode == 0, f"salesmgr {shlex.join(words)}:\n{run.stdout}{run.stderr}"
    assert "Traceback" not in run.stderr
    return run.stdout


def test_the_quick_start_runs_as_written(tmp_path: Path) -> None:
    assert [line for _, line in shell_lines()][:2] == QUICK_START
    # The second line is what CI runs, word for word.
    assert QUICK_START[1] in (ROOT / ".ci" / "run").read_text().splitlines()
    # The first: this venv was made by `pip install -e .`; its console script plays the demo.
    command = words_of(QUICK_START[0].rsplit("&& ", 1)[1])
    assert command == [".venv/bin/salesmgr", "demo"]
    out = script(*command[1:], cwd=tmp_path,
                 env={"TMPDIR": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path)})
    assert "The desktop and the device hold the same" in out
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith("salesmgr-locks")] == []


def test_the_story_runs_line_by_line_in_a_new_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the device started in the background works here too
    lines = story_lines()
    assert any(" &" in line for line in lines) and any("PORT" in line for line in lines)
    device: EmulatorProcess | None = None
    port = None
    outputs: dict[str, str] = {}
    env: dict[str, str] = {}
    try:
        for line in lines:
            if line.startswith("export "):  # export NAME=SECRET: the secret pair printed
                name, _, value = words_of(line)[1].partition("=")
                env[name] = outputs["pair"].strip() if value == "SECRET" else value
                continue
            words = words_of(line.replace("PORT", str(port)) if port else line)
            if words[-1] == "&":  # the device, in the background
                words = [w.strip("[]") for w in words[1:-1]]
                device = EmulatorProcess(
                    [str(SCRIPT), *words], tmp_path, secret=env["SALESMGR_SECRET"]
                )
                port = device.url.rsplit(":", 1)[1]
                continue
            words = [w.strip("[]") for w in words[1:]]
            outputs[words[0]] = script(*words, cwd=tmp_path, env=env)
            if words[0] == "load":  # "... a day of edits on both sides ..." (in process)
                deal = json.loads(ok("list", "desk.smp", "--json"))[0]["id"]
                ok("edit", "device.smp", deal, "--stage", "negotiation")
                ok("log", "device.smp", deal, "--kind", "call", "--summary", "Agreed")
                ok("edit", "desk.smp", deal, "--stage", "won")
                ok("add", "desk.smp", "--company", "Beta", "--title", "Desks")
    finally:
        if device is not None:
            device.stop()
    assert {"init", "add", "pair", "load", "sync", "conflicts", "merge"} <= set(outputs)
    assert "conflicts: 1" in outputs["sync"]
    assert user_data(storage.load(tmp_path / "desk.smp")) == user_data(
        storage.load(tmp_path / "device.smp"))


def test_a_kept_day_is_shown_in_a_browser(tmp_path: Path) -> None:
    """``salesmgr demo --keep day``, then ``salesmgr web day/desk.smp --open``: on a port the
    system picks (``--on 127.0.0.1:0``, a test never takes a fixed one), the "browser" being a
    command that notes the address it was given (``BROWSER``, as Python's webbrowser reads it)."""
    env = {"TMPDIR": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path)}
    script(*words_of("salesmgr demo --keep day")[1:], cwd=tmp_path, env=env)
    opened = tmp_path / "opened.txt"
    browser = (f"{sys.executable} -c \"import sys; open(sys.argv[2], 'w').write(sys.argv[1])\" "
               f"%s {opened}")
    out = tmp_path / "web.out"
    with open(out, "wb") as sink:
        server = subprocess.Popen(
            [str(SCRIPT), *words_of("salesmgr web day/desk.smp --open")[1:],
             "--on", "127.0.0.1:0"],
            cwd=tmp_path, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **env, "BROWSER": browser},
        )
    try:
        deadline = time.monotonic() + 30
        while not (opened.exists() and opened.read_text()) and time.monotonic() < deadline:
            assert server.poll() is None, out.read_text()
            time.sleep(0.1)
        url = opened.read_text()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", url), out.read_text()
        assert f"serving day/desk.smp on {url}" in out.read_text()
        with urllib.request.urlopen(url, timeout=10) as page:
            assert page.status == 200
            assert "<html" in page.read().decode().lower()
    finally:
        server.send_signal(signal.SIGINT)  # Ctrl-C stops it
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(5)
    assert "Traceback" not in out.read_text()


# A benchmark's small size, when it is not counted in records.
SMALL = {"bench/hub.py": ["--devices", "4", "--pipelines", "2", "--rounds", "1",
                          "--parallel", "2"],
         "bench/memory.py": ["--records", "100", "--huge", "0.0625"]}


@pytest.mark.parametrize("line", [line for _, line in shell_lines() if is_bench(line)])
def test_the_benchmarks_run_on_a_hundred_records(line: str) -> None:
    """Each runs to the end and prints its figures beside its baseline; whether a goal is met
    at this size (its exit status) is for the real run to say."""
    words = words_of(line)
    small = SMALL.get(words[1], ["--records", "100", "--repeat", "1"])
    run = subprocess.run(
        [sys.executable, *words[1:], *small],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert "Traceback" not in run.stderr, run.stderr
    assert run.returncode == 0 or (run.returncode == 1 and "NOT met" in run.stdout), (
        run.stdout + run.stderr)
    assert run.stdout.strip(), run.stderr
