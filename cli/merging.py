"""Commands that merge two pipeline files and settle their conflicts: merge, conflicts, resolve."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import click

from salesmgr import storage
from salesmgr.cli.group import PIPELINE, warn
from salesmgr.cli.views import make_console, output_mode, plain_table, rich_table
from salesmgr.gc_paused import cyclic_gc_paused
from salesmgr.merge.resolve import resolve_conflict
from salesmgr.model.pipeline import Pipeline, Record
from salesmgr.plugin.manager import get_registry
from salesmgr.storage import editing_pipeline, open_pipeline, save_pipeline
from salesmgr.sync.rules import merge_local


def policy_option(default: str = "field-merge") -> Callable[[Any], Any]:
    return click.option(
        "--policy",
        default=default,
        show_default=True,
        metavar="NAME",
        help="who wins a true conflict: field-merge, desktop-wins, device-wins, newest-record, "
        "keep-both, manual, or a plugin's policy (salesmgr plugins)",
    )


@click.command("merge")
@click.argument("desktop", type=PIPELINE)
@click.argument("device", type=PIPELINE)
@policy_option()
@click.option("--combine", is_flag=True, help="join two unrelated pipelines (flags duplicates)")
@click.option("--dry-run", is_flag=True, help="print the report and write nothing")
@click.option("--allow-mass-change", is_flag=True,
              help="write even if the merge deletes or overwrites more than half of one "
              "side's records, or deletes every record left on a side")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
def merge_command(
    desktop: str, device: str, policy: str, combine: bool, dry_run: bool,
    allow_mass_change: bool, as_json: bool,
) -> None:
    """Merge DESKTOP and DEVICE so both hold every change and addition made on either side.

    Where both sides changed the same field differently the policy decides and the losing value
    goes to the conflict log (salesmgr conflicts).  Both files are replaced atomically."""
    get_registry().policy(policy)  # an unknown policy is an error before anything is read
    with ExitStack() as locks:
        # Always in the same order, so two merges of the same pair cannot wait for each other.
        held = {storage.canonical(desktop): desktop, storage.canonical(device): device}
        for key in sorted(held):
            locks.enter_context(storage.exclusive(held[key]))
        merge_locked(desktop, device, policy, combine, dry_run, allow_mass_change, as_json)


# Reading both files, merging and saving make a few hundred thousand objects, in no cycle; the
# collector resumes once they are gone, instead of walking them all when the merge is done.
@cyclic_gc_paused()
def merge_locked(
    desktop: str, device: str, policy: str, combine: bool, dry_run: bool,
    allow_mass_change: bool, as_json: bool,
) -> None:
    desk, dev = open_pipeline(desktop), open_pipeline(device)
    # A file whose versions did not move holds nothing new (every change brings a version it
    # lacked), so it is left as it is: merging two files in step costs only reading them.
    done = merge_local(
        desk, dev, policy=policy, combine=combine, dry_run=dry_run,
        allow_mass_change=allow_mass_change,
        save_desktop=lambda merged: save_pipeline(merged, desktop),
        save_device=lambda merged: save_pipeline(merged, device),
    )
    result, reason = done.merged, done.mass_change
    report = result.report
    if as_json:
        click.echo(json.dumps({**report.as_json(), "dry_run": dry_run}, indent=2))
        return
    if dry_run:
        click.echo("dry run: nothing was written")
    for line in report.lines():
        click.echo(line)
    if reason and dry_run:
        warn(reason)


def conflict_rows(pipeline: Pipeline, include_all: bool) -> list[Record]:
    rows = [
        r for r in pipeline.live(get_registry().conflict_log.name)
        if include_all or r.values.get("status") == "open"
    ]
    return sorted(rows, key=lambda r: (r.dot.at, r.id))


def conflict_json(record: Record) -> dict[str, object]:
    values = record.values
    return {
        "id": record.id,
        "record_id": values.get("record_id"),
        "record_kind": values.get("record_kind"),
        "label": values.get("label", ""),
        "field": values.get("field"),
        "desktop_value": values.get("desktop_value"),
        "device_value": values.get("device_value"),
        "winner": values.get("winner"),
        "value": values.get("value"),
        "policy": values.get("policy"),
        "status": values.get("status"),
        "resolution": values.get("resolution"),
        "when": record.dot.when(),
    }


@click.command("conflicts")
@click.argument("file", type=PIPELINE)
@click.option("--all", "include_all", is_flag=True, help="also decided and resolved conflicts")
@click.option("--json", "as_json", is_flag=True)
def conflicts_command(file: str, include_all: bool, as_json: bool) -> None:
    """List open conflicts (with --all, every conflict a merge decided too)."""
    rows = [conflict_json(r) for r in conflict_rows(open_pipeline(file), include_all)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    columns = ["id", "label", "field", "desktop_value", "device_value", "winner", "policy",
               "status"]
    cells = [[short(row.get(c)) for c in columns] for row in rows]
    if output_mode(False) == "table":
        make_console().print(rich_table(columns, cells, title="conflicts", limit=None))
    else:
        click.echo(plain_table(columns, cells), nl=False)


def short(value: object) -> str:
    text = "" if value is None else str(value)
    text = text.replace("\n", "⏎")
    return text if len(text) <= 40 else text[:37] + "..."


@click.command("resolve")
@click.argument("file", type=PIPELINE)
@click.argument("conflict_id")
@click.option("--take", required=True, metavar="desktop|device|VALUE",
              help="keep the desktop's value, the device's, or give the value to use")
def resolve_command(file: str, conflict_id: str, take: str) -> None:
    """Settle or reverse a conflict's decision; the choice travels on the next merge."""
    with editing_pipeline(file) as pipeline:
        resolution = resolve_conflict(pipeline, conflict_id, take)
    for warning in resolution.warnings:
        warn(warning)
    click.echo(resolution.summary())
