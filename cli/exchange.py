"""Commands that move a pipeline in and out of other programs: import, export (CSV, iCalendar,
vCard) and the pipeline's locale.

The work is done by the core (`salesmgr.exchange`); these commands read options, pick the
locale (``--locale``, else the import profile's, else the pipeline's) and say what happened.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from salesmgr import storage
from salesmgr.cli.group import PIPELINE, warn
from salesmgr.cli.records import locale_option, locale_value
from salesmgr.errors import ValidationError
from salesmgr.exchange.profiles import ImportProfile, choose_profile, load_mapping_file
from salesmgr.exchange.tables import Table, csv_text, read_table
from salesmgr.model.fields import RecordType
from salesmgr.model.pipeline import Pipeline
from salesmgr.plugin.manager import get_registry
from salesmgr.storage import editing_pipeline, exclusive, open_pipeline, save_pipeline

if TYPE_CHECKING:
    from salesmgr.exchange.importing import ImportResult

# Importing and exporting are imported by the commands that run them, not by every command.

PATH = click.Path(path_type=Path, readable=False)
file_argument = click.argument("file", type=PIPELINE)


def record_types() -> dict[str, RecordType]:
    registry = get_registry()
    return {name: registry.record_type(name) for name in ("opportunity", "activity")}


def the_profile(
    header: list[str], wanted: str | None, mapping: Path | None
) -> ImportProfile | None:
    registry = get_registry()
    if mapping is not None:
        if wanted is not None:
            raise click.UsageError("give --profile or --mapping, not both")
        opportunity = registry.record_type("opportunity")
        stage = opportunity.by_name.get("stage")
        stages = getattr(stage.kind, "choices", ()) if stage is not None else ()
        return load_mapping_file(mapping, opportunity.by_name, stages)
    return choose_profile(header, registry.import_profiles, wanted)


def report(result: ImportResult, csv_file: Path, dry_run: bool) -> None:
    """Per row on a dry run; otherwise only refusals and warnings, then one summary line."""
    for outcome in result.outcomes:
        if outcome.action == "refused":
            click.echo(f"salesmgr: {csv_file} {outcome.describe()}", err=True)
        elif dry_run:
            click.echo(outcome.describe())
        for warning in outcome.warnings:
            warn(f"{csv_file} {outcome.row.where()}: {warning}")
    if result.ignored_columns:
        warn(f"{csv_file}: columns not imported ({result.profile} profile): "
             + ", ".join(repr(c) for c in result.ignored_columns))


def summary(result: ImportResult) -> str:
    parts = [f"{result.count('add')} added", f"{result.count('update')} updated",
             f"{result.count('unchanged')} unchanged"]
    return ", ".join(parts)


@click.command("import")
@file_argument
@click.argument("csv_file", metavar="CSV", type=PATH)
@click.option("--update", is_flag=True,
              help="Change records the CSV names by id or by the CRM's id (only the fields that "
              "differ, as ordinary edits); without it such rows are refused.")
@click.option("--dry-run", is_flag=True, help="Say row by row what would be added, updated, "
              "left alone and refused; change nothing.")
@click.option("--profile", metavar="NAME",
              help="Read the CSV as this CRM's export (salesforce, hubspot, pipedrive, zoho); "
              "default: found from the header.")
@click.option("--mapping", type=PATH, metavar="TOML",
              help="A mapping file for any other source's columns (docs/import.md).")
@click.option("--encoding", metavar="NAME",
              help="The CSV's text encoding when it is not UTF-8 (e.g. cp1252).")
@locale_option
def import_(
    file: str,
    csv_file: Path,
    update: bool,
    dry_run: bool,
    profile: str | None,
    mapping: Path | None,
    encoding: str | None,
    locale: str | None,
) -> None:
    """Add (or with --update, change) the records in CSV: salesmgr's own export, or a CRM's.

    Every row is checked first; if any is refused, each refusal is reported and nothing is
    imported."""
    table = read_table(csv_file, encoding)
    chosen = the_profile(table.header, profile, mapping)
    if dry_run:
        pipeline = open_pipeline(file)
        result = run_import(pipeline, table, chosen, locale, update)
        report(result, csv_file, dry_run=True)
        click.echo(f"dry run: {summary(result)}, {len(result.refused)} refused; nothing changed")
        if result.refused:
            raise ValidationError(f"{csv_file}: {len(result.refused)} row"
                                  f"{'s' if len(result.refused) > 1 else ''} would be refused")
        return
    with editing_pipeline(file) as pipeline:
        result = run_import(pipeline, table, chosen, locale, update)
        report(result, csv_file, dry_run=False)
        all_or_nothing(result, csv_file)
    click.echo(f"imported {csv_file} into {file}: {summary(result)}")


def all_or_nothing(result: ImportResult, csv_file: Path | str) -> None:
    """Raise when any row was refused, so nothing is saved (``salesmgr import``, the web's)."""
    bad = len(result.refused)
    if bad:
        raise ValidationError(f"{csv_file}: {bad} bad row{'s' if bad > 1 else ''}; "
                              "nothing imported")


def run_import(
    pipeline: Pipeline,
    table: Table,
    profile: ImportProfile | None,
    locale: str | None,
    update: bool,
) -> ImportResult:
    from salesmgr.exchange.importing import import_table

    locale = locale or (profile.locale if profile else None) or pipeline.locale
    return import_table(pipeline, table, record_types(), profile=profile, locale=locale,
                        update=update)


@click.command("export")
@file_argument
@click.option("--output", "-o", type=PATH,
              help="Write to this file (atomically), not stdout.")
@click.option("--activities", is_flag=True,
              help="Include activities: a 'record' column, each deal followed by its activities.")
@click.option("--bom", is_flag=True,
              help="Start with a UTF-8 byte-order mark, so Excel on Windows reads the accents.")
@click.option("--raw", is_flag=True,
              help="Write cells that begin with = + - @ as they are (by default they are "
              "prefixed with ' so a spreadsheet cannot run them as formulas).")
@click.option("--ics", is_flag=True, help="Write next actions as an iCalendar file instead.")
@click.option("--todos", is_flag=True, help="With --ics: to-dos instead of all-day events.")
@click.option("--vcf", is_flag=True, help="Write the contacts as vCards instead.")
def export(
    file: str,
    output: Path | None,
    activities: bool,
    bom: bool,
    raw: bool,
    ics: bool,
    todos: bool,
    vcf: bool,
) -> None:
    """Write the live opportunities as CSV (canonical values: re-importing gives the same
    pipeline), or the next actions as iCalendar (--ics), or the contacts as vCards (--vcf)."""
    if ics and vcf:
        raise click.UsageError("give --ics or --vcf, not both")
    if (ics or vcf) and (activities or bom or raw):
        raise click.UsageError("--activities, --bom and --raw are for CSV, not --ics or --vcf")
    if todos and not ics:
        raise click.UsageError("--todos goes with --ics")
    home = storage.local_file(file)
    if output is not None and home is not None and os.path.realpath(output) == os.path.realpath(
        home
    ):
        raise ValidationError(f"{output}: is the pipeline file itself; choose another --output")
    pipeline = open_pipeline(file)
    if ics:
        from salesmgr.exchange.phone import next_actions_calendar

        data = next_actions_calendar(pipeline, todos=todos)
    elif vcf:
        from salesmgr.exchange.phone import contact_cards

        data = contact_cards(pipeline).encode("utf-8")
    else:
        from salesmgr.exchange.exporting import export_table

        header, rows = export_table(pipeline, record_types(), activities=activities)
        data = csv_text(header, rows, raw=raw, bom=bom).encode("utf-8")
    if output is None:
        click.echo(data, nl=False)
    else:
        from salesmgr.storage import write_atomic

        write_atomic(output, data, backup=False)


@click.command("locale")
@file_argument
@click.argument("locale", required=False, callback=locale_value)
@click.option("--none", "clear", is_flag=True, help="Take the locale away: only forms that "
              "cannot be misread are accepted.")
def locale_(file: str, locale: str | None, clear: bool) -> None:
    """Show the pipeline's locale, or set it to LOCALE (en_US, de_DE, fr_FR...): how amounts,
    dates and percentages typed or imported are read."""
    if locale is not None and clear:
        raise click.UsageError("give a LOCALE or --none, not both")
    if locale is None and not clear:
        click.echo(open_pipeline(file).locale or "(none)")
        return
    with exclusive(file):  # a header entry, not a record: no new version, so save it here
        pipeline = open_pipeline(file)
        if pipeline.locale != locale:
            pipeline.locale = locale
            save_pipeline(pipeline, file)
    click.echo(locale or "(none)")
