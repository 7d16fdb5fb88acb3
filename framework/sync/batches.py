"""A delta on a live link: its records cut into BATCHes of mini pipeline files, then DELTA_END
with the sender's knowledge.

The receiver commits nothing before DELTA_END, so a sender that must save before the receiver
may commit (the desktop: `salesmgr.sync.rules.commit`) hands its first batches to the link, saves
while a slow line carries them, and sends DELTA_END only once saved."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from salesmgr import storage
from salesmgr.errors import PipelineFileError, ProtocolError, SyncError
from salesmgr.merge.engine import Delta
from salesmgr.model.pipeline import Pipeline, Record
from salesmgr.plugin.manager import Registry
from salesmgr.sync.channel import Channel, Events
from salesmgr.sync.wire.protocol import Batch, DeltaEnd, Message

BATCH_BYTES = 256 * 1024  # records per BATCH are cut by estimated size, not count
# Batch bytes handed to the link before the sender's own commit: about what a link queues without
# waiting (the serial link's backlog, a socket's buffer), so a stalled peer never holds back the
# save, while a slow line is busy carrying a typical evening's delta during it.
AHEAD_BYTES = 64 * 1024


def record_size(record: Record) -> int:
    """A rough size of a record in a batch, to cut batches without encoding twice."""
    return 48 + 28 * len(record.field_dots) + sum(len(k) + len(v) for k, v in record.values.items())


def split_batches(records: list[Record], batch_bytes: int) -> Iterator[list[Record]]:
    batch: list[Record] = []
    size = 0
    for record in records:
        cost = record_size(record)
        if batch and size + cost > batch_bytes:
            yield batch
            batch, size = [], 0
        batch.append(record)
        size += cost
    if batch:
        yield batch


def send_delta(
    channel: Channel,
    events: Events,
    delta: Delta,
    registry: Registry,
    batch_bytes: int,
    *,
    commit: Callable[[], None] | None = None,
) -> int:
    """Send ``delta`` as BATCHes, then DELTA_END; the number of records sent.

    ``commit`` (the desktop's save) runs before DELTA_END, after at most `AHEAD_BYTES` of
    batches went to the link.  It runs even when the link fails before it (what was merged is
    kept, as if it had run first), and the failure is raised after it.  The batch events of
    what went ahead are reported after it: "sent" means the receiver may now commit it.
    """
    sent = 0
    batches = 0
    ahead = 0
    unreported: list[int] = []  # records sent so far, at each batch that went ahead of commit

    def report(records: int) -> None:
        events("batch", direction="sent", records=records, bytes=channel.link.bytes_sent)

    def run_commit() -> None:
        nonlocal commit
        if commit is not None:
            done, commit = commit, None
            done()
            for records in unreported:
                report(records)

    try:
        for chunk in split_batches(delta.records, batch_bytes):
            mini = Pipeline(
                pipeline_id=delta.pipeline_id,
                replica_id=delta.replica_id,
                records={r.id: r for r in chunk},
            )
            payload = storage.encode(mini, registry)
            ahead += len(payload)
            if ahead > AHEAD_BYTES:
                run_commit()
            channel.send(Batch(batches, len(chunk), payload))
            batches += 1
            sent += len(chunk)
            if commit is None:
                report(sent)
            else:
                unreported.append(sent)
    except SyncError:
        run_commit()
        raise
    run_commit()
    channel.send(DeltaEnd(delta.replica_id, batches, sent, dict(delta.knowledge)))
    return sent


def receive_delta(
    channel: Channel,
    events: Events,
    pipeline_id: str,
    registry: Registry,
    first: Message | None = None,
) -> Delta:
    records: dict[str, Record] = {}
    batches = 0
    while True:
        message = first or channel.receive_any(Batch, DeltaEnd)
        first = None
        if isinstance(message, DeltaEnd):
            break
        assert isinstance(message, Batch)
        if message.index != batches:
            raise ProtocolError(f"batch {message.index} from the {channel.peer} is out of order")
        source = f"batch {message.index} from the {channel.peer}"
        try:
            mini = storage.decode(message.payload, source, registry)
        except PipelineFileError as problem:
            raise ProtocolError(str(problem)) from None
        if mini.pipeline_id != pipeline_id:
            raise ProtocolError(f"{source} belongs to another pipeline")
        if len(mini.records) != message.records:
            raise ProtocolError(
                f"{source} holds {len(mini.records)} records, not {message.records}"
            )
        for record_id, record in mini.records.items():
            if record_id in records:
                raise ProtocolError(f"{source} repeats record {record_id}")
            records[record_id] = record
        batches += 1
        events("batch", direction="received", records=len(records),
               bytes=channel.link.bytes_received)
    if message.batches != batches or message.records != len(records):
        raise ProtocolError(
            f"the {channel.peer} announced {message.records} records in {message.batches} "
            f"batches but sent {len(records)} in {batches}"
        )
    return Delta(pipeline_id, message.replica, dict(message.knowledge), list(records.values()))
