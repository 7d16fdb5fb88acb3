"""The documentation is tested like code: every hook is in docs/plugins.md, its two worked
examples install and run, the integrators' example test passes under pytest, and every
``salesmgr`` command line in README.md names real commands and options."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import inspect
import json
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import click
import pytest
from helpers import salesmgr

from salesmgr import storage
from salesmgr.cli.group import cli
from salesmgr.emulator.day import starting_pipeline
from salesmgr.emulator.device import DeviceEmulator
from salesmgr.plugin import hookspecs
from salesmgr.plugin.manager import Registry, make_plugin_manager, use_registry
from salesmgr.sync.device_file import DeviceFile
from salesmgr.sync.wire import auth
from salesmgr.testing.compare import user_data
from salesmgr.testing.pytest_plugin import DeviceFactory

ROOT = Path(__file__).resolve().parent.parent
PLUGINS_MD = (ROOT / "docs" / "plugins.md").read_text()
INTEGRATORS_MD = (ROOT / "docs" / "integrators.md").read_text()
README = (ROOT / "README.md").read_text()
HOOKS = sorted(name for name in vars(hookspecs) if name.startswith("salesmgr_"))


def marked_blocks(markdown: str, marker: str) -> dict[str, str]:
    """The code blocks right after ``<!-- MARKER: NAME -->``, by NAME."""
    pattern = rf"<!-- {marker}: (\S+) -->\n```python\n(.*?)\n```"
    return {name: code + "\n" for name, code in re.findall(pattern, markdown, re.DOTALL)}


# --- docs/plugins.md: every hook -----------------------------------------------------------------


def documented_hooks() -> dict[str, str]:
    """Hook headings of docs/plugins.md: name -> the signature written there."""
    return dict(re.findall(r"^#### `(salesmgr_\w+)\(([^)]*)\)`", PLUGINS_MD, re.MULTILINE))


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented_with_its_arguments(hook: str) -> None:
    documented = documented_hooks()
    assert hook in documented, f"{hook} is missing from docs/plugins.md"
    parameters = list(inspect.signature(getattr(hookspecs, hook)).parameters)
    assert [p.strip() for p in documented[hook].split(",")] == parameters
    spec = getattr(hookspecs, hook).salesmgr_spec
    first_result = "first result wins" in PLUGINS_MD.split(f"#### `{hook}(")[1].split("\n")[0]
    assert first_result == spec["firstresult"], f"{hook}: say whether the first result wins"


def test_docs_name_no_hook_that_does_not_exist() -> None:
    assert set(documented_hooks()) <= set(HOOKS)


# --- docs/plugins.md: the two worked examples ----------------------------------------------------


def load_example(name: str, folder: Path) -> ModuleType:
    code = marked_blocks(PLUGINS_MD, "worked example")[name]
    path = folder / name
    path.write_text(code)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def registry_with_example(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Registry]:
    """The process registry with the built-ins and the example named by the test's parameter."""
    module = load_example(request.param, tmp_path)
    registry = Registry(make_plugin_manager(entry_points=False, extra=[module]))
    previous = use_registry(registry)
    try:
        yield registry
    finally:
        use_registry(previous)


def test_the_docs_hold_both_worked_examples() -> None:
    assert set(marked_blocks(PLUGINS_MD, "worked example")) == {
        "salesmgr_territory.py", "salesmgr_unix.py"
    }


@pytest.mark.parametrize("registry_with_example", ["salesmgr_territory.py"], indirect=True)
def test_the_policy_example_decides_a_real_merge(
    registry_with_example: Registry, tmp_path: Path
) -> None:
    listed = json.loads(salesmgr("plugins", "--json").stdout)
    territory = next(p for p in listed if p["name"] == "salesmgr_territory")
    assert territory["provides"] == {"policy": ["territory"]}

    desk, device = tmp_path / "desk.smp", tmp_path / "device.smp"
    storage.save(starting_pipeline(2, opportunities=5), desk)
    shutil.copyfile(desk, device)  # copied the old way: it becomes a replica of its own
    deal = sorted(storage.load(desk).live("opportunity"), key=lambda r: r.id)[0].id
    # Both sides change the deal's stage and the contact's phone, differently.
    assert salesmgr("edit", desk, deal, "--stage", "Lost", "--phone", "+44 20 1").exit_code == 0
    assert salesmgr("edit", device, deal, "--stage", "Won", "--phone", "+44 20 2").exit_code == 0

    merged = salesmgr("merge", desk, device, "--policy", "territory", "--json")
    assert merged.exit_code == 0, merged.output
    winners = {c["field"]: c["winner"] for c in json.loads(merged.stdout)["conflicts"]}
    assert winners == {"stage": "device", "phone": "desktop"}
    result = storage.load(desk).records[deal].values
    assert (result["stage"], result["phone"]) == ("Won", "+44 20 1")
    assert user_data(storage.load(desk)) == user_data(storage.load(device))


def short_socket_folder(tmp_path: Path) -> Path:
    """A Unix socket's path must stay under about 100 bytes."""
    if len(str(tmp_path)) < 80:
        return tmp_path
    return Path(tempfile.mkdtemp(prefix="smu-"))


@pytest.mark.parametrize("registry_with_example", ["salesmgr_unix.py"], indirect=True)
def test_the_transport_example_carries_a_real_sync(
    registry_with_example: Registry, tmp_path: Path
) -> None:
    folder = short_socket_folder(tmp_path)
    url = f"unix://{folder}/device.sock"
    desk, device = tmp_path / "desk.smp", tmp_path / "device.smp"
    storage.save(starting_pipeline(4, opportunities=8), desk)
    secret = "a-shared-secret-Xk93mPq2vL"
    listener = registry_with_example.transport("unix").listen(url, {"timeout": 10})
    emulator = DeviceEmulator(
        DeviceFile(device), secret, timeout=10, log=lambda _: None, complain=print
    )
    serving = threading.Thread(target=emulator.serve, args=(listener,))
    serving.start()
    try:
        loaded = salesmgr("load", desk, "--to", url, "--secret", secret)
        assert loaded.exit_code == 0, loaded.output
        assert user_data(storage.load(device)) == user_data(storage.load(desk))
        assert salesmgr("add", device, "--company", "Road", "--title", "Desks").exit_code == 0
        assert salesmgr("add", desk, "--company", "Office", "--title", "Chairs").exit_code == 0
        evening = salesmgr("sync", desk, "--from", url, "--secret", secret, "--json")
        assert evening.exit_code == 0, evening.output
        outcome = json.loads(evening.stdout)
        assert (outcome["records_received"], outcome["records_sent"]) == (1, 1)
        assert user_data(storage.load(device)) == user_data(storage.load(desk))
    finally:
        emulator.stop()
        serving.join(10)
        listener.close()
    assert emulator.sessions == 2 and emulator.failures == 0
    refused = salesmgr("sync", desk, "--from", url, "--secret", secret)
    assert refused.exit_code == 7
    assert refused.stderr.startswith(f"salesmgr: cannot connect to {url}")


@pytest.mark.parametrize("registry_with_example", ["salesmgr_unix.py"], indirect=True)
def test_the_emulated_device_fixture_runs_a_transport_registered_in_the_test(
    registry_with_example: Registry, emulated_device: DeviceFactory, tmp_path: Path
) -> None:
    """docs/plugins.md sends a transport's author to the pytest plugin: the example transport,
    registered only in this test's registry (not installed), carries a load to an emulated
    device in a subprocess."""
    with pytest.raises(ValueError, match="say where the emulated device listens"):
        emulated_device("unix")
    folder = short_socket_folder(tmp_path)
    device = emulated_device("unix", on=f"unix://{folder}/device.sock")
    assert device.url == f"unix://{folder}/device.sock"
    desk = tmp_path / "desk.smp"
    storage.save(starting_pipeline(5, opportunities=6), desk)
    loaded = salesmgr("load", desk, "--to", device.url, env=device.env)
    assert loaded.exit_code == 0, loaded.output
    on_device = device.pipeline()
    assert on_device is not None and user_data(on_device) == user_data(storage.load(desk))
    # A desktop with another secret gets nothing, and the device says why on stderr.
    another = auth.new_secret()  # strong, so the desktop sends it and the device refuses it
    refused = salesmgr("sync", desk, "--from", device.url, env={"SALESMGR_SECRET": another})
    assert refused.exit_code != 0
    assert "session failed" in device.expect("session failed")
    assert "session failed" not in device.stdout


def test_the_testing_extra_brings_pytest_and_the_plugin_loads_from_the_installed_package() -> None:
    assert "pip install 'salesmgr[testing]'" in INTEGRATORS_MD
    salesmgr_dist = importlib.metadata.distribution("salesmgr")
    assert "testing" in (salesmgr_dist.metadata.get_all("Provides-Extra") or [])
    wanted = [r.replace(" ", "") for r in salesmgr_dist.requires or []
              if r.replace(" ", "").endswith('extra=="testing"')]
    assert any(r.startswith("pytest>=") for r in wanted), wanted
    [entry] = [ep for ep in salesmgr_dist.entry_points if ep.group == "pytest11"]
    assert entry.name == "salesmgr"  # what `pytest -p no:salesmgr` names
    plugin = entry.load()
    assert plugin.__name__ == "salesmgr.testing.pytest_plugin"
    assert {"emulated_device", "salesmgr_transport"} <= set(vars(plugin))


# --- docs/integrators.md: the example test runs under pytest -------------------------------------


def test_the_integrators_example_test_passes_with_the_installed_pytest_plugin(
    tmp_path: Path,
) -> None:
    [(name, code)] = marked_blocks(INTEGRATORS_MD, "example test").items()
    (tmp_path / name).write_text(code)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", name],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert re.search(r"\b[1-9]\d* passed", run.stdout), run.stdout


# --- README.md: every command line is a real command -----------------------------------------


def readme_command_lines() -> list[str]:
    """What follows ``salesmgr`` in the README's shell blocks and inline code."""
    found = []
    for block in re.findall(r"```sh\n(.*?)```", README, re.DOTALL):
        for line in block.splitlines():
            found.extend(m.group(1) for m in re.finditer(r"(?:^|[\s/])salesmgr (.+?)(?:&&|$)",
                                                         line))
    found.extend(re.findall(r"`salesmgr ([^`]+)`", README))
    return found


README_COMMANDS = readme_command_lines()


def test_the_readme_has_command_lines_to_check() -> None:
    assert "demo" in README_COMMANDS  # the quick start's first command
    assert len(README_COMMANDS) > 15


@pytest.mark.parametrize("line", README_COMMANDS)
def test_every_readme_command_line_names_a_real_command_and_real_options(line: str) -> None:
    words = [w.strip("[]") for w in shlex.split(line, comments=True) if w not in ("&", "...")]
    command: click.Command = cli
    path: list[str] = []
    context = click.Context(cli)
    while isinstance(command, click.Group):
        name = words[len(path)]
        found = command.get_command(context, name)
        assert found is not None, f"salesmgr {' '.join(path + [name])}: no such command"
        path.append(name)
        command = found
        context = click.Context(command, parent=context, info_name=name)
    assert salesmgr(*path, "--help").exit_code == 0
    known = {opt for param in command.get_params(context) for opt in param.opts}
    for word in words[len(path):]:
        if word.startswith("--"):
            assert word.split("=")[0] in known, f"salesmgr {' '.join(path)}: no option {word}"
