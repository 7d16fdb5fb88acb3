"""A command imports what it uses: every plugin is still found and registered through the
``salesmgr`` entry points, but what only other commands need (the hub, sync sessions and
mailboxes, Babel, the protocol's message structs, the other commands' modules) is imported when
one of those commands runs.

Measured by ``python -X importtime``: before, loading the registry and the merge command cost
about 0.25 s of CPU per process, of which the hub's modules, Babel, compiling every wire message's
parser and re-reading each distribution's METADATA were 0.1 s.  Then registering a built-in
command still imported its module, and with it the hub, the protocol's structs, msgspec and
TOML: now `salesmgr.cli.commands` adds them lazily, by name."""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from salesmgr.cli.commands import BUILT_IN
from salesmgr.plugin.discovery import metadata_entries
from salesmgr.plugin.manager import make_plugin_manager

# What `salesmgr merge A B` never needs, yet the plugins used to import whenever they registered.
NOT_FOR_MERGE = (
    "salesmgr.plugins.hub",
    "salesmgr.plugins.hub_folder",
    "salesmgr.sync.session",
    "salesmgr.sync.mailbox",
    "salesmgr.sync.channel",
    "salesmgr.sync.wire.protocol",  # builds every message's construct struct
    "salesmgr.sync.wire.auth",
    "babel",
    "sqlite3",
    "serial",
    "salesmgr.plugins.serial_link",  # the serial link layer (cobs, secrets): for serial:// only
    "ssl",
    "tomllib",
    "msgspec",
    "merge3",
    "salesmgr.exchange.importing",
    "salesmgr.exchange.exporting",
    "importlib.metadata",  # 15-25 ms with email, zipfile, csv: entry points are read directly
    "email",
)
# The modules of the other built-in commands: registering a command imports only its name
# (`salesmgr.cli.commands`), so looking up `merge` imports `salesmgr.cli.merging` alone.
OTHER_COMMANDS = (
    "salesmgr.cli.records",
    "salesmgr.cli.syncing",
    "salesmgr.cli.exchange",
    "salesmgr.cli.reporting",
    "salesmgr.cli.stores",
    "salesmgr.cli.hub",
    "salesmgr.emulator.commands",
    "salesmgr.web.command",
)

PROBE = """
import json, sys
from salesmgr.cli.group import cli
from salesmgr.plugin.manager import get_registry
registry = get_registry()
command = cli.get_command(None, "merge")
loaded = sorted(sys.modules)
from salesmgr.sync.wire import protocol
print(json.dumps({
    "loaded": loaded,
    "compiled": len(protocol.COMPILED[protocol.VERSION]),
    "merge": command is not None,
    "commands": sorted(cli.list_commands(None)),
}))
"""


@pytest.fixture(scope="module")
def after_merge_lookup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    # Run from a folder of its own, as a user runs salesmgr: a checkout's salesmgr.egg-info in
    # the current folder would be on sys.path (python -c puts "" first) and hide the install.
    env = {**os.environ, "SALESMGR_DISABLE_PLUGINS": "1"}
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          env=env, check=True, cwd=tmp_path_factory.mktemp("elsewhere"))
    return json.loads(done.stdout)


def test_finding_the_merge_command_imports_no_hub_session_mailbox_or_babel(
    after_merge_lookup: dict,
) -> None:
    assert after_merge_lookup["merge"]
    loaded = set(after_merge_lookup["loaded"])
    assert loaded.isdisjoint(NOT_FOR_MERGE), sorted(loaded & set(NOT_FOR_MERGE))


def test_finding_the_merge_command_imports_no_other_commands_module(
    after_merge_lookup: dict,
) -> None:
    loaded = set(after_merge_lookup["loaded"])
    assert "salesmgr.cli.merging" in loaded
    assert loaded.isdisjoint(OTHER_COMMANDS), sorted(loaded & set(OTHER_COMMANDS))


def test_every_command_is_still_registered(after_merge_lookup: dict) -> None:
    for name in ("hub", "sync", "import", "export", "merge", "list", "web", "emulator"):
        assert name in after_merge_lookup["commands"]


def test_no_wire_message_parser_is_compiled_until_one_is_used(after_merge_lookup: dict) -> None:
    assert after_merge_lookup["compiled"] == 0


def test_a_parser_is_compiled_on_first_use_and_kept() -> None:
    from salesmgr.sync.wire import protocol

    table = protocol.COMPILED[protocol.VERSION]
    first = table[protocol.MessageType.HELLO]
    assert table[protocol.MessageType.HELLO] is first
    with pytest.raises(KeyError):
        table[object()]  # type: ignore[index]


@pytest.fixture
def metadata_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    reads: list[str] = []
    real = importlib.metadata.PathDistribution.read_text

    def counting(self: importlib.metadata.PathDistribution, filename: str) -> str | None:
        if filename == "METADATA":
            reads.append(str(self._path))  # type: ignore[attr-defined]
        return real(self, filename)

    monkeypatch.setattr(importlib.metadata.PathDistribution, "read_text", counting)
    return reads


def test_no_distributions_metadata_is_parsed_to_find_the_plugins(metadata_reads: list) -> None:
    pm = make_plugin_manager(entry_points=False)
    assert metadata_reads == []
    assert pm.versions  # the built-ins, each with its version (from its .dist-info's name)
    assert set(pm.versions.values()) == {importlib.metadata.version("salesmgr")}


def test_where_importlib_metadata_is_asked_each_metadata_is_read_once(
    metadata_reads: list,
) -> None:
    assert metadata_entries("salesmgr")
    assert len(metadata_reads) == len(set(metadata_reads)), sorted(metadata_reads)


def test_each_built_in_command_is_registered_under_its_own_name() -> None:
    for name, target in BUILT_IN.items():
        module_name, _, attribute = target.partition(":")
        command = getattr(importlib.import_module(module_name), attribute)
        assert isinstance(command, click.Command), target
        assert command.name == name, target


EXIT_PROBE = """
import atexit, gc, sys
from salesmgr.cli.group import main
# Registered before main runs, so it runs after main has returned, at the process's exit.
atexit.register(lambda: print(gc.get_freeze_count(), file=sys.stderr))
main(sys.argv[1:])
"""


@pytest.mark.parametrize("argv", [["--version"], ["list", "missing.smp"]])
def test_a_command_leaves_its_objects_to_the_exit_without_a_last_collection(
    argv: list[str], tmp_path: Path
) -> None:
    """The console script freezes what is alive when a command is done, ended well or not:
    Python's exit then skips its full pass of the cyclic collector (30-60 ms per command)."""
    done = subprocess.run([sys.executable, "-c", EXIT_PROBE, *argv], capture_output=True,
                          text=True, cwd=tmp_path)
    frozen = int(done.stderr.strip().splitlines()[-1])
    assert frozen > 10_000  # every module's functions and classes, at least
