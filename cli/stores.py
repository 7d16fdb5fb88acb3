"""Commands about where pipelines live: ``salesmgr copy SRC DST`` between any two stores."""

from __future__ import annotations

import click

from salesmgr import storage
from salesmgr.cli.group import PIPELINE
from salesmgr.errors import PipelineFileError


@click.command("copy")
@click.argument("source", metavar="SRC", type=PIPELINE)
@click.argument("target", metavar="DST", type=PIPELINE)
def copy_command(source: str, target: str) -> None:
    """Copy the pipeline at SRC to DST (a file, sqlite:///..., postgresql://...), every version
    kept; DST must not hold a pipeline yet.

    The copy is a replica of its own (as a copied file is): it keeps every record, tombstone,
    conflict and version SRC has, so the two can still be merged or synced with the same
    devices."""
    if storage.canonical(source) == storage.canonical(target):
        raise PipelineFileError(storage.canonical(target), "is SRC itself; copy it somewhere else")
    with storage.exclusive(source):
        pipeline = storage.open_pipeline(source)
    # A new replica: writes made at SRC and at DST from now on get versions of their own, and
    # DST knows everything SRC knew, so nothing is sent twice or lost when they meet.
    pipeline.fork("")
    storage.create_pipeline(pipeline, target)
    live = sum(1 for _ in pipeline.live())
    click.echo(f"copied {pipeline.name or storage.label(source)!r}: {live} live records, "
               f"{len(pipeline.records)} in all, to {storage.canonical(target)}")
