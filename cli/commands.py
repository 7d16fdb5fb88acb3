"""The built-in commands, added through ``salesmgr_register_commands`` as a third party's plugin
would, but lazily: registering them imports nothing but this table, and a command's module (with
what it needs: the hub, sync sessions, the CSV importer, rich, msgspec...) is imported only when
that command runs or shows its help.  ``salesmgr merge`` so pays for the merge, not for the hub.

A new built-in command is one line here; `tests/test_startup.py` checks that every line names a
command of that name."""

from __future__ import annotations

from typing import Any

from salesmgr.plugin.hookspecs import hookimpl

# command name -> "module:attribute" of its click command
BUILT_IN = {
    "init": "salesmgr.cli.records:init",
    "add": "salesmgr.cli.records:add",
    "edit": "salesmgr.cli.records:edit",
    "delete": "salesmgr.cli.records:delete",
    "log": "salesmgr.cli.records:log",
    "list": "salesmgr.cli.records:list_",
    "show": "salesmgr.cli.records:show",
    "plugins": "salesmgr.cli.records:plugins",
    "merge": "salesmgr.cli.merging:merge_command",
    "conflicts": "salesmgr.cli.merging:conflicts_command",
    "resolve": "salesmgr.cli.merging:resolve_command",
    "load": "salesmgr.cli.syncing:load",
    "sync": "salesmgr.cli.syncing:sync",
    "pair": "salesmgr.cli.syncing:pair",
    "import": "salesmgr.cli.exchange:import_",
    "export": "salesmgr.cli.exchange:export",
    "locale": "salesmgr.cli.exchange:locale_",
    "forecast": "salesmgr.cli.reporting:forecast_",
    "agenda": "salesmgr.cli.reporting:agenda_",
    "copy": "salesmgr.cli.stores:copy_command",
    "hub": "salesmgr.cli.hub:hub",
}


@hookimpl(tryfirst=True)
def salesmgr_register_commands(cli: Any) -> None:
    for name, target in BUILT_IN.items():
        cli.add_lazy_command(name, target)
