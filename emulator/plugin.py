"""The emulator's commands, added to the command line lazily: the device, its day on the road
and the demo are imported only by the commands that run them, never by every process."""

from __future__ import annotations

from typing import Any

from salesmgr.plugin.hookspecs import hookimpl


@hookimpl
def salesmgr_register_commands(cli: Any) -> None:
    cli.add_lazy_command("emulator", "salesmgr.emulator.commands:emulator")
    cli.add_lazy_command("demo", "salesmgr.emulator.demo:demo")
