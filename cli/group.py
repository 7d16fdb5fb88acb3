"""The ``salesmgr`` command line: the top-level group and its error reporting.

Every command, built-in or not, comes from a plugin's ``salesmgr_register_commands``; the group
calls that hook on first look-up, so ``import salesmgr.cli.group`` stays cheap and a broken plugin
cannot stop ``--version``.  A plugin may add a command lazily (`SalesmgrGroup.add_lazy_command`) so
its module is imported only when that command runs or shows its help.
"""

from __future__ import annotations

import gc
import importlib
import os
import sys
from typing import Any, NoReturn

import click

from salesmgr import __version__
from salesmgr.errors import PluginError, SalesmgrError

PROG = "salesmgr"


def one_line(text: str) -> str:
    """``text`` folded onto one line (a plugin's error may span several)."""
    return "; ".join(part.strip() for part in text.splitlines() if part.strip())


def warn(message: str) -> None:
    """Tell the user something odd that did not stop the command."""
    click.echo(f"{PROG}: warning: {one_line(message)}", err=True)


def report_error(error: SalesmgrError) -> NoReturn:
    click.echo(f"{PROG}: {one_line(str(error))}", err=True)
    sys.exit(error.exit_code)


class PipelineAddress(click.ParamType):
    """Where a pipeline lives: a file path, or a store's address (``sqlite:///office.db#emea``,
    ``postgresql://HOST/DB#emea``); `salesmgr.storage` picks the store by the scheme."""

    name = "pipeline"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        return os.fspath(value) if isinstance(value, os.PathLike) else str(value)


PIPELINE = PipelineAddress()


# -- the group ------------------------------------------------------------------------------


class SalesmgrGroup(click.Group):
    """Asks the plugins for their commands on first look-up, once per registry.

    Built-in commands come first (their hook implementations are ``tryfirst``); a third-party
    plugin whose hook fails is reported when a command it might have added is looked up, so it
    cannot stop ``salesmgr list``.  Plugin commands belong to the registry that added them: a new
    registry (tests) gets its own."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.plugin_registry: object | None = None
        self.plugin_commands: set[str] = set()
        self.plugin_failure: PluginError | None = None
        self.lazy: dict[str, str] = {}  # command name -> "module:attribute"

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        """Add a command; a second plugin adding the same name is reported, not obeyed."""
        name = name or cmd.name
        if name is None:
            raise PluginError("a plugin added a command without a name")
        if name in self.commands or name in self.lazy:
            if self.commands.get(name) is not cmd:
                self.plugin_failure = PluginError(
                    f"a plugin tried to replace the built-in command {name!r}"
                )
            return
        super().add_command(cmd, name)

    def add_lazy_command(self, name: str, target: str) -> None:
        """Add command ``name``, imported from ``target`` ("package.module:attribute") only when
        it is looked up by name (to run it or show its help)."""
        if name in self.commands or name in self.lazy:
            self.plugin_failure = PluginError(f"a plugin tried to replace the command {name!r}")
            return
        self.lazy[name] = target

    def load_plugin_commands(self) -> None:
        """Call ``salesmgr_register_commands(cli=...)`` once per registry; a plugin that tries to
        replace another's command is a `PluginError`."""
        from salesmgr.plugin.manager import get_registry

        registry = get_registry()
        if registry is self.plugin_registry:
            return
        for name in self.plugin_commands:
            self.commands.pop(name, None)
            self.lazy.pop(name, None)
        self.plugin_commands = set()
        self.plugin_failure = None
        before = set(self.commands) | set(self.lazy)
        try:
            registry.hook.salesmgr_register_commands(cli=self)
        except PluginError as problem:
            self.plugin_failure = problem
        except SalesmgrError:
            raise
        except Exception as problem:  # third-party code: one line, not a traceback
            self.plugin_failure = PluginError(
                f"a plugin failed while adding its commands: {type(problem).__name__}: "
                f"{problem} (set SALESMGR_DISABLE_PLUGINS=1 to run without third-party plugins)"
            )
        finally:
            self.plugin_commands = (set(self.commands) | set(self.lazy)) - before
        self.plugin_registry = registry
        credit_plugin_commands(registry, self.plugin_commands, self)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        self.load_plugin_commands()
        if cmd_name in self.lazy and cmd_name not in self.commands:
            module_name, _, attribute = self.lazy[cmd_name].partition(":")
            self.commands[cmd_name] = getattr(importlib.import_module(module_name), attribute)
        command = super().get_command(ctx, cmd_name)
        if command is None and self.plugin_failure is not None:
            raise self.plugin_failure
        return command

    def list_commands(self, ctx: click.Context) -> list[str]:
        self.load_plugin_commands()
        if self.plugin_failure is not None:
            raise self.plugin_failure
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

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


def credit_plugin_commands(registry: Any, names: set[str], group: SalesmgrGroup) -> None:
    """Record in `Registry.plugins` which plugin added which command (for ``salesmgr plugins``).

    The hook is called once for all plugins, so a command is credited to the plugin whose
    module defines its callback."""
    owners: dict[str, str] = {}
    for plugin_name, plugin in registry.pm.list_name_plugin():
        module = getattr(plugin, "__name__", None) or type(plugin).__module__
        if plugin_name in registry.plugins and isinstance(module, str):
            owners.setdefault(module, plugin_name)
    for name in sorted(names):
        if name in group.lazy:
            module = group.lazy[name].partition(":")[0]
        else:
            module = getattr(group.commands[name].callback, "__module__", "") or ""
        owner = owners.get(module) or next(
            (owners[m] for m in owners if module.startswith(m.rpartition(".")[0] + ".")), None
        )
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
    try:
        cli.main(args=argv, prog_name=PROG)
    finally:
        # The process ends here, and Python's exit makes one more full pass of the cyclic
        # collector over every object still alive (every module, a command's caches), finding
        # nothing: 30-60 ms of each command.  Frozen, they are only torn down.
        gc.freeze()
