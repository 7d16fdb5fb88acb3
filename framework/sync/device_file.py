"""Where a device keeps its pipeline between sessions: the `DeviceStore` interface and the
file the emulator uses."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from salesmgr import storage
from salesmgr.errors import PipelineFileError
from salesmgr.model.pipeline import Pipeline
from salesmgr.plugin.manager import Registry
from salesmgr.sync.wire import auth


class DeviceStore(Protocol):
    """Where the device keeps its pipeline (the emulator: a file)."""

    # True when the last load() gave the pipeline a new replica id (the file was a copy): the
    # session then saves at its commit even if nothing else changed, so the identity sticks.
    renamed: bool

    def load(self) -> Pipeline | None:
        """The device's pipeline, or None for a new or reset device."""

    def save(self, pipeline: Pipeline) -> None:
        """Replace the stored pipeline atomically."""


@dataclass
class DeviceFile:
    """A device pipeline in a file; a missing or empty file is a device with nothing loaded.

    With the pairing ``secret`` every save seals the file, so that a copy of it put in a shared
    folder proves it comes from a paired replica (docs/file-format.md, "Seal")."""

    path: Path
    registry: Registry | None = None
    renamed: bool = False
    secret: bytes | None = field(default=None, repr=False)

    def load(self) -> Pipeline | None:
        self.renamed = False
        try:
            if self.path.stat().st_size == 0:
                return None
        except FileNotFoundError:
            return None
        except OSError as problem:
            raise PipelineFileError(self.path, f"cannot read ({problem.strerror})") from None
        pipeline = storage.read_file(self.path, self.registry)
        self.renamed = storage.settle_home(pipeline, storage.home_of(self.path))
        return pipeline

    def save(self, pipeline: Pipeline) -> None:
        signed = None if self.secret is None else auth.sealing(self.secret)
        storage.save(pipeline, self.path, self.registry, signed=signed)
