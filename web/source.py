"""The pipeline a web server shows: read once, read again only when its store says it changed.

Reading a 100,000-record pipeline takes about a second, so pages work on the copy in memory; a
change by anyone else (a ``salesmgr edit``, a sync, a hub, another browser tab) changes the
store's mark of it (`salesmgr.storage.version_of`: a file's inode, size and time, a database's
revision), and the next page reads it again.  The pipeline may live in any store
(`salesmgr_register_stores`: a file, ``sqlite:///office.db#emea``,
``postgresql://host/db#emea``); changes go through `salesmgr.storage.editing_pipeline`, the
same hold and transaction (or lock and atomic save) the command line uses."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Hashable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

from salesmgr.model.pipeline import Pipeline
from salesmgr.storage import editing_pipeline, exclusive, label, open_pipeline, version_of

T = TypeVar("T")
DERIVED_LIMIT = 32  # results remembered for one version of the pipeline


class PipelineSource:
    """One pipeline (at a store's address), its last reading, and the way to change it."""

    def __init__(
        self, address: str | os.PathLike[str],
        prepare: Mapping[Hashable, Callable[[Pipeline], Any]] | None = None,
    ) -> None:
        self.address = os.fspath(address)
        self.label = label(self.address)  # a short name for the page's title
        # What every version of the pipeline gets as it is loaded (or saved from here), by key
        # for `derived`: the list's index and the board, so the first page after a change
        # does not wait for them.  In order; each may use those before it.
        self.prepare = dict(prepare or {})
        self._guard = threading.RLock()  # re-entered by what `prepare` computes
        self._pipeline: Pipeline | None = None
        self._stamp: Hashable | None = None
        self._derived: dict[Hashable, Any] = {}

    def read(self) -> Pipeline:
        """The pipeline as its store holds it now; callers must not change the object."""
        with self._guard:
            stamp = version_of(self.address)  # before reading: a change meanwhile reads again
            current = self._pipeline
            if current is None or stamp is None or stamp != self._stamp:
                current = pipeline = open_pipeline(self.address)
                # Pages read it from several threads at once; the records of a file are made
                # (and their values decoded) when first used, so that happens here, once,
                # under the lock, as part of loading the file.
                for record in pipeline.records.values():
                    record.values  # noqa: B018 - decoded now, not by the first page
                self._use(pipeline, stamp)
            return current

    @contextmanager
    def editing(self) -> Iterator[Pipeline]:
        """Change the pipeline while holding it against every other writer, as a command does;
        saved (one transaction) when the block ends without error.

        The saved pipeline becomes the one pages show, stamped while it is still held, so no
        other writer's change can be mistaken for it."""
        with exclusive(self.address):
            with editing_pipeline(self.address) as pipeline:
                yield pipeline
            with self._guard:
                self._use(pipeline, version_of(self.address))

    def _use(self, pipeline: Pipeline, stamp: Hashable | None) -> None:
        self._pipeline, self._stamp = pipeline, stamp
        self._derived = {}
        for key, compute in self.prepare.items():
            self._derived[key] = compute(pipeline)

    def derived(
        self, key: Hashable, compute: Callable[[Pipeline], T], pipeline: Pipeline | None = None
    ) -> T:
        """``compute(pipeline)`` for the pipeline as it is now (or for ``pipeline``, one that
        `read` gave), remembered until the pipeline changes: the board's columns, the list's
        index and a query's answer.  Paging through a list of 100,000 deals sorts them once,
        not once per page."""
        if pipeline is None:
            pipeline = self.read()
        with self._guard:
            if self._pipeline is pipeline and key in self._derived:
                found: T = self._derived[key]
                return found
        value = compute(pipeline)
        with self._guard:
            if self._pipeline is pipeline:
                if len(self._derived) >= DERIVED_LIMIT:  # forget the queries, not the index
                    self._derived = {k: self._derived[k] for k in self.prepare}
                self._derived[key] = value
        return value
