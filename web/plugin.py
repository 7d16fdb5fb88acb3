"""Adds ``salesmgr web`` to the command line lazily, as any plugin could: Starlette, Jinja2 and
uvicorn are imported only when the web command runs or shows its help."""

from __future__ import annotations

from typing import Any

from salesmgr.plugin.hookspecs import hookimpl


@hookimpl
def salesmgr_register_commands(cli: Any) -> None:
    cli.add_lazy_command("web", "salesmgr.web.command:web")
