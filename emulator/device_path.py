"""The DEVICE_FILE argument of the emulator's commands."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from salesmgr import storage
from salesmgr.errors import ConfigError


class DevicePath(click.Path):
    """A device's pipeline file: a path or a ``file://`` address.  A device keeps its pipeline
    in a file (docs/team.md: only the desktop side moves into a database), so any other store's
    address is refused with one line, never taken for a strangely named file."""

    def __init__(self) -> None:
        super().__init__(dir_okay=False, path_type=Path)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        text = os.fspath(value)
        if storage.scheme_of(text) != storage.FILE_SCHEME:
            raise ConfigError(
                f"{text}: a device keeps its pipeline in a file, not at a store's address "
                f"(salesmgr copy {text} DEVICE.smp makes one)"
            )
        return super().convert(storage.local_file(text) or text, param, ctx)


DEVICE_FILE = DevicePath()
