"""The pipeline file as a store: one pipeline per file, in the device's own format.

Still the default: a plain path (``desk.smp``) or ``file:///home/ana/desk.smp`` is an address of
this store.  Everything it does is `salesmgr.storage`'s file handling (atomic replace, ``.bak``,
the lock beside the user's runtime folder, copy detection)."""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable
from contextlib import AbstractContextManager
from pathlib import Path

from salesmgr import storage
from salesmgr.errors import PipelineFileError
from salesmgr.model.pipeline import Pipeline
from salesmgr.plugin.hookspecs import hookimpl
from salesmgr.plugin.interfaces import Store

PREFIX = "file://"


def path_of(address: str) -> Path:
    """``file:///a/b.smp`` and ``/a/b.smp`` are the same file."""
    if address[: len(PREFIX)].lower() == PREFIX:
        address = address[len(PREFIX):]
    return Path(address)


class PipelineFileStore(Store):
    schemes = ("file",)
    help = "a pipeline file (the device's format): PATH or file:///PATH"

    def canonical(self, address: str) -> str:
        return os.path.realpath(path_of(address))

    def label(self, address: str) -> str:
        return path_of(address).stem

    def local_file(self, address: str) -> Path:
        return path_of(address)

    def exists(self, address: str) -> bool:
        return os.path.lexists(path_of(address))

    def read(self, address: str) -> Pipeline:
        return storage.load(path_of(address))

    def create(self, address: str, pipeline: Pipeline) -> None:
        path = path_of(address)
        with storage.lock_file(path):
            if os.path.lexists(path):
                raise PipelineFileError(path, "already exists; not overwriting it")
            storage.save(pipeline, path)

    def save(self, address: str, pipeline: Pipeline) -> None:
        storage.save(pipeline, path_of(address))

    def exclusive(self, address: str) -> AbstractContextManager[None]:
        return storage.lock_file(path_of(address))

    def version(self, address: str) -> Hashable | None:
        # A save replaces the file (a new inode); an editor writing in place changes its size
        # or time.
        try:
            info = os.stat(path_of(address))
        except OSError:
            return None  # read says what is wrong
        return (info.st_ino, info.st_dev, info.st_size, info.st_mtime_ns)


@hookimpl
def salesmgr_register_stores(register: Callable[[Store], None]) -> None:
    register(PipelineFileStore())
