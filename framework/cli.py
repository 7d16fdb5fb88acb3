"""The ``salesmgr`` command line: the top-level group, error reporting, and helpers for commands.

Commands live in the modules named in `COMMAND_MODULES` (each has a ``commands`` list) and in
plugins (the ``salesmgr_register_commands`` hook).  Both are loaded only when a command is looked
up, so ``import salesmgr.cli`` stays cheap and a broken plugin cannot stop ``--version``.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn

import click

from salesmgr import __version__
from salesmgr.errors import PluginError, SalesmgrError

if TYPE_CHECKING:
    from salesmgr.model import Pipeline

PROG = "salesmgr"

# The lead adds "salesmgr.merge_commands" and "salesmgr.sync_commands" here.
COMMAND_MODULES: tuple[str, ...] = (
    "salesmgr.record_commands",
    "salesmgr.merge_commands",
    "salesmgr.sync_commands",
)


def one_line(text: str) -> str:
    """``text`` folded onto one line (a plugin's error may span several)."""
    return "; ".join(part.strip() for part in text.splitlines() if part.strip())


def warn(message: str) -> None:
    """Tell the user something odd that did not stop the command."""
    click.echo(f"{PROG}: warning: {one_line(message)}", err=True)


def report_error(error: SalesmgrError) -> NoReturn:
    click.echo(f"{PROG}: {one_line(str(error))}", err=True)
    sys.exit(error.exit_code)


# -- pipeline files -------------------------------------------------------------------------


def open_pipeline(path: str | os.PathLike[str]) -> Pipeline:
    """Read a pipeline file; raises PipelineFileError naming the file and the problem."""
    from salesmgr import storage

    return storage.load(path)


def save_pipeline(pipeline: Pipeline, path: str | os.PathLike[str]) -> None:
    """Replace the file atomically (the previous version is kept as ``.bak``)."""
    from salesmgr import storage

    storage.save(pipeline, path)


@contextmanager
def editing_pipeline(path: str | os.PathLike[str]) -> Iterator[Pipeline]:
    """Open a pipeline for changes and save it when the block ends without an error.

    Nothing is written when the block raises, or when it wrote nothing (no new version).  The
    file is locked meanwhile, so a sync or another edit cannot interleave and lose this one."""
    from salesmgr import storage

    with storage.exclusive(path):
        pipeline = open_pipeline(path)
        before = pipeline.counter
        yield pipeline
        if pipeline.counter != before:
            save_pipeline(pipeline, path)


# -- the group ------------------------------------------------------------------------------


class SalesmgrGroup(click.Group):
    """Loads the built-in command modules, then plugin commands, on first look-up.

    A built-in command is found without calling the plugins' hook, so a broken plugin command
    cannot stop ``salesmgr list``; ``--help`` and unknown names load the plugins too.  Plugin
    commands belong to the registry that added them: a new registry (tests) gets its own."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.builtin_names: set[str] = set()
        self.builtins_loaded = False
        self.plugin_registry: object | None = None
        self.plugin_commands: set[str] = set()

    def load_builtin_commands(self) -> None:
        if self.builtins_loaded:
            return
        for module_name in COMMAND_MODULES:
            module = importlib.import_module(module_name)
            for command in module.commands:
                self.add_command(command)
        self.builtin_names = set(self.commands)
        self.builtins_loaded = True

    def load_plugin_commands(self) -> None:
        """Call ``salesmgr_register_commands(cli=...)`` once per registry; a plugin that fails
        or tries to replace a built-in command is a `PluginError` (built-ins stay as they were)."""
        self.load_builtin_commands()
        from salesmgr.registry import get_registry

        registry = get_registry()
        if registry is self.plugin_registry:
            return
        for name in self.plugin_commands:
            self.commands.pop(name, None)
        self.plugin_commands = set()
        before = dict(self.commands)
        try:
            registry.hook.salesmgr_register_commands(cli=self)
        except SalesmgrError:
            raise
        except Exception as problem:  # third-party code: one line, not a traceback
            raise PluginError(
                f"a plugin failed while adding its commands: {type(problem).__name__}: "
                f"{problem} (set SALESMGR_DISABLE_PLUGINS=1 to run without third-party plugins)"
            ) from problem
        finally:
            self.plugin_commands = set(self.commands) - set(before)
            replaced = [n for n, c in before.items() if self.commands.get(n) is not c]
            self.commands.update(before)
        if replaced:
            raise PluginError(f"a plugin tried to replace the built-in command {replaced[0]!r}")
        self.plugin_registry = registry  # only now: a failure is reported at every look-up
        credit_plugin_commands(registry, self.plugin_commands, self)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        self.load_builtin_commands()
        if cmd_name not in self.builtin_names:
            self.load_plugin_commands()
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self.load_plugin_commands()
        return super().list_commands(ctx)

    def main(self, *args: Any, **kwargs: Any) -> Any:
        """Run the command line; a `SalesmgrError` becomes one line on stderr and its exit code.

        With ``standalone_mode=False`` the error is raised to the caller instead, as click does
        with its own exceptions."""
        if not kwargs.get("standalone_mode", True):
            return super().main(*args, **kwargs)
        try:
            return super().main(*args, **kwargs)
        except SalesmgrError as error:
            report_error(error)


def credit_plugin_commands(registry: Any, names: set[str], group: click.Group) -> None:
    """Record in `Registry.plugins` which plugin added which command (for ``salesmgr plugins``).

    The hook is called once for all plugins, so a command is credited to the plugin whose
    module defines its callback."""
    owners: dict[str, str] = {}
    for plugin_name, plugin in registry.pm.list_name_plugin():
        module = getattr(plugin, "__name__", None) or type(plugin).__module__
        if plugin_name in registry.plugins and isinstance(module, str):
            owners.setdefault(module, plugin_name)
    for name in sorted(names):
        callback = group.commands[name].callback
        module = getattr(callback, "__module__", "") or ""
        owner = owners.get(module)
        if owner is not None:
            registry.plugins[owner].provides.append(("command", name))


@click.group(cls=SalesmgrGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name=PROG, message="%(prog)s %(version)s")
def cli() -> None:
    """Keep a sales pipeline in step between a mobile device and a desktop, record by record.

    Every command takes the pipeline FILE first.  Output is a table on a terminal, tab-separated
    text when piped (one header line, then one line per record), and JSON with --json."""


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``salesmgr`` console script."""
    cli.main(args=argv, prog_name=PROG)
