"""A progress bar for the desktop end of a sync, built on the ``salesmgr_sync_event`` hook.

`showing_progress` registers a `SyncProgress` for one session (``salesmgr load``, ``salesmgr
sync``, the demo) and only when stdout is a terminal: piped output and ``--json`` stay quiet.
The session's events say which phase it is in and how many records have crossed; the bytes are
read from the `Link`'s own counters a few times a second, so the bar moves during a long batch
on a slow line too.  Nothing here knows the transport.

Phases: *receiving* from ``authenticated`` (sync) to ``merged``; *sending* from
``authenticated`` (load) or ``merged`` (sync) to ``committed``.  The size of what is sent is
estimated from the pipeline file (bytes per record), which gives the time left; what the device
will send is not known in advance, so that phase shows records, bytes and rate.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from salesmgr.plugin.hookspecs import hookimpl

if TYPE_CHECKING:
    from rich.console import RenderableType
    from rich.progress import Progress, TaskID

    from salesmgr.plugin.interfaces import Link
    from salesmgr.plugin.manager import Registry

RECEIVING, SENDING = "received", "sent"  # the ``direction`` of a batch event
REFRESH_PER_SECOND = 8


class SyncProgress:
    """Follows the desktop end of one session on a rich progress display."""

    def __init__(
        self,
        link: Link,
        *,
        bytes_per_record: float,
        load_bytes: int,
        stream: IO[str] | None = None,
    ) -> None:
        self.link = link
        self.bytes_per_record = bytes_per_record
        self.load_bytes = load_bytes  # what a load sends: about the pipeline file's size
        self.phases: dict[str, _Phase] = {}
        self.lock = threading.Lock()  # the display's thread polls while events arrive
        self.progress = _progress(stream or sys.stdout, self.poll)
        self.status = self.progress.add_task("reaching the device", total=None, meter=False)

    def counter(self, direction: str) -> int:
        return int(self.link.bytes_received if direction == RECEIVING else self.link.bytes_sent)

    def poll(self) -> None:
        """Bring the byte count of the running phases up to date (the display calls it before
        every refresh, from its own thread)."""
        with self.lock:
            for direction, phase in self.phases.items():
                if phase.finished:
                    continue
                done = self.counter(direction) - phase.start
                if phase.total is not None and done > phase.total:  # the estimate was short
                    phase.total = done
                self.progress.update(phase.task, total=phase.total, completed=done)

    def begin(self, direction: str, description: str, total: float | None) -> None:
        if direction in self.phases:
            return
        start = self.counter(direction)
        # add_task redraws, which polls: it must not run under the lock.
        task = self.progress.add_task(description, total=total, records=0, meter=True)
        with self.lock:
            self.phases[direction] = _Phase(task, start, total)

    def end(self, direction: str) -> None:
        with self.lock:
            phase = self.phases.get(direction)
            if phase is not None and not phase.finished:
                phase.finished = True
                done = self.counter(direction) - phase.start
                self.progress.update(phase.task, total=done, completed=done)

    @hookimpl
    def salesmgr_sync_event(self, stage: str, info: Mapping[str, Any]) -> None:
        if info.get("side") != "desktop":
            return  # both ends may run in one process (tests): only ours is shown
        mode = info.get("mode")
        if stage == "hello":
            self.progress.update(self.status, description="authenticating")
        elif stage == "authenticated":
            self.progress.update(self.status, visible=False)
            if mode == "load":
                self.begin(SENDING, "loading the device", self.load_bytes or None)
            else:
                self.begin(RECEIVING, "receiving changes", None)
        elif stage == "batch":
            phase = self.phases.get(info.get("direction", RECEIVING))
            if phase is not None:
                self.progress.update(phase.task, records=info.get("records", 0))
        elif stage == "merged":
            self.end(RECEIVING)
            to_device = info.get("to_device", {})
            records = sum(to_device.values()) + int(info.get("conflicts", 0))
            estimate = records * self.bytes_per_record
            self.begin(SENDING, "sending the merge", estimate or None)
        elif stage in ("committed", "failed"):
            for direction in list(self.phases):
                self.end(direction)


@dataclass
class _Phase:
    task: TaskID
    start: int  # the link's byte counter when the phase began
    total: float | None  # the bytes expected, when they can be estimated
    finished: bool = False


def _progress(stream: IO[str], poll: Callable[[], None]) -> Progress:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        ProgressColumn,
        SpinnerColumn,
        Task,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )
    from rich.table import Column
    from rich.text import Text

    class PolledProgress(Progress):
        def get_renderables(self) -> Iterable[RenderableType]:
            poll()
            yield from super().get_renderables()

    class MeterColumn(ProgressColumn):
        """A column shown only on the tasks that measure a transfer."""

        def __init__(self, column: ProgressColumn) -> None:
            super().__init__(table_column=Column(no_wrap=True))
            self.column = column

        def render(self, task: Task) -> RenderableType:
            return self.column.render(task) if task.fields.get("meter") else Text("")

    return PolledProgress(
        SpinnerColumn(),
        TextColumn("{task.description}", table_column=Column(no_wrap=True)),
        MeterColumn(BarColumn(bar_width=10)),
        MeterColumn(TextColumn("{task.fields[records]:,} records")),
        MeterColumn(DownloadColumn()),
        MeterColumn(TransferSpeedColumn()),
        MeterColumn(TimeRemainingColumn()),
        console=Console(file=stream, highlight=False),
        transient=True,
        refresh_per_second=REFRESH_PER_SECOND,
    )


@contextmanager
def showing_progress(
    link: Link,
    *,
    pipeline_bytes: int,
    records: int,
    registry: Registry | None = None,
    enabled: bool = True,
    stream: IO[str] | None = None,
) -> Iterator[SyncProgress | None]:
    """Show the progress of the session run in the block, on a terminal only.

    ``pipeline_bytes`` and ``records`` describe the desktop pipeline (its file size and record
    count): they estimate how much a load or a merge sends back."""
    stream = stream or sys.stdout
    isatty = getattr(stream, "isatty", None)
    if not enabled or isatty is None or not isatty():
        yield None
        return
    from salesmgr.plugin.manager import get_registry

    pm = (registry or get_registry()).pm
    shown = SyncProgress(
        link,
        bytes_per_record=pipeline_bytes / max(records, 1),
        load_bytes=pipeline_bytes,
        stream=stream,
    )
    pm.register(shown)
    shown.progress.start()
    try:
        yield shown
    finally:
        shown.progress.stop()
        pm.unregister(shown)
