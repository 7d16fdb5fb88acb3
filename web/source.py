"""The pipeline file a web server shows: read once, read again only when the file changes.

Reading a 100,000-record file takes about a second, so pages work on the copy in memory; a
change by anyone else (a ``salesmgr edit``, a sync, another browser tab) replaces the file, which
changes its inode, size or time, and the next page reads it again.  Changes go through
`salesmgr.storage.editing_pipeline`, the same lock and atomic save the command line uses."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from salesmgr.model.pipeline import Pipeline
from salesmgr.storage import editing_pipeline, exclusive, open_pipeline

Stamp = tuple[int, int, int, int]
T = TypeVar("T")
DERIVED_LIMIT = 32  # results remembered for one version of the file


def file_stamp(path: Path) -> Stamp | None:
    try:
        info = os.stat(path)
    except OSError:
        return None  # open_pipeline says what is wrong
    return (info.st_ino, info.st_dev, info.st_size, info.st_mtime_ns)


class PipelineSource:
    """One pipeline file, its last reading, and the way to change it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._guard = threading.Lock()
        self._pipeline: Pipeline | None = None
        self._stamp: Stamp | None = None
        self._derived: dict[Hashable, Any] = {}

    def read(self) -> Pipeline:
        """The pipeline as the file holds it now; callers must not change the object."""
        with self._guard:
            stamp = file_stamp(self.path)
            current = self._pipeline
            if current is None or stamp is None or stamp != self._stamp:
                current = pipeline = open_pipeline(self.path)
                # Pages read it from several threads at once; the records of a file are made
                # (and their values decoded) when first used, so that happens here, once,
                # under the lock, as part of loading the file.
                for record in pipeline.records.values():
                    record.values  # noqa: B018 - decoded now, not by the first page
                self._use(pipeline, stamp)
            return current

    @contextmanager
    def editing(self) -> Iterator[Pipeline]:
        """Change the pipeline under the file's lock; saved when the block ends without error.

        The saved pipeline becomes the one pages show, stamped while the lock is still held, so
        no other writer's change can be mistaken for it."""
        with exclusive(self.path):
            with editing_pipeline(self.path) as pipeline:
                yield pipeline
            with self._guard:
                self._use(pipeline, file_stamp(self.path))

    def _use(self, pipeline: Pipeline, stamp: Stamp | None) -> None:
        self._pipeline, self._stamp = pipeline, stamp
        self._derived = {}

    def derived(self, key: Hashable, compute: Callable[[Pipeline], T]) -> T:
        """``compute(pipeline)`` for the pipeline as it is now, remembered until the file
        changes: the board's columns, a list query's sorted records.  Paging through a list
        of 100,000 deals sorts them once, not once per page."""
        pipeline = self.read()
        with self._guard:
            if self._pipeline is pipeline and key in self._derived:
                found: T = self._derived[key]
                return found
        value = compute(pipeline)
        with self._guard:
            if self._pipeline is pipeline:
                if len(self._derived) >= DERIVED_LIMIT:
                    self._derived.clear()
                self._derived[key] = value
        return value
