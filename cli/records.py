"""Commands that read and change records: init, add, edit, delete, log, list, show, plugins.

``add``, ``edit`` and ``log`` get one option per field of their record type, read from the
registry when the command line is parsed, so a field a plugin adds is an option too; any field can
also be set with ``--field NAME=VALUE``.
"""

from __future__ import annotations

import sys
from collections.abc import Collection
from pathlib import Path
from typing import Any

import click

from salesmgr import storage
from salesmgr.cli.group import PIPELINE, SalesmgrGroup, warn
from salesmgr.cli.views import (
    ACTIVITY_COLUMNS,
    LIST_COLUMNS,
    TABLE_ROW_LIMIT,
    RecordJson,
    field_table,
    json_document,
    make_console,
    output_mode,
    plain_columns,
    plain_line,
    plain_table,
    plugin_rows,
    record_json,
    record_rows,
    rich_table,
    write_json_array,
)
from salesmgr.errors import PipelineFileError, ValidationError
from salesmgr.model.fields import Currency, RecordType
from salesmgr.model.localized import canonical_locale, environment_locale, parse_day
from salesmgr.model.pipeline import Pipeline, Record
from salesmgr.plugin.manager import get_registry
from salesmgr.reports import SORT_KEYS, Filters, select, select_columns, value_totals
from salesmgr.storage import create_pipeline, editing_pipeline, open_pipeline

OPPORTUNITY = "opportunity"
ACTIVITY = "activity"
# Set by salesmgr itself when a record is made; a CSV import may carry it over.
AUTOMATIC_FIELDS = ("created",)

# No checks here: a missing or unreadable file is reported by the storage layer in one line.
PATH = click.Path(path_type=Path, readable=False)


def record_type(name: str) -> RecordType:
    rtype: RecordType = get_registry().record_type(name)
    return rtype


# -- field options --------------------------------------------------------------------------


def parse_assignments(
    ctx: click.Context, param: click.Parameter, items: tuple[str, ...]
) -> list[tuple[str, str]]:
    pairs = []
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", ctx, param)
        pairs.append((name, value))
    return pairs


field_option = click.option(
    "--field",
    "assignments",
    multiple=True,
    metavar="NAME=VALUE",
    callback=parse_assignments,
    help="Set any field, including one a plugin adds (repeatable); NAME= clears it.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def locale_value(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--locale`` checked and made canonical (``de-de`` -> ``de_DE``)."""
    if value is None:
        return None
    try:
        return canonical_locale(value)
    except ValueError as problem:
        raise click.BadParameter(str(problem), ctx, param) from None


locale_option = click.option(
    "--locale",
    callback=locale_value,
    metavar="LOCALE",
    help="Read amounts, dates and percentages as written in LOCALE (en_US, de_DE...) instead "
    "of the pipeline's locale.",
)
file_argument = click.argument("file", type=PIPELINE)


class RecordFieldsCommand(click.Command):
    """A command with an option per field of a record type (``close_date`` -> ``--close-date``).

    The callback gets the given ones, plus ``--field`` assignments, as ``fields``: a dict of
    field name -> raw text ("" clears), holding only what the user gave."""

    def __init__(
        self,
        *args: Any,
        record_type: str,
        skip: Collection[str] = (),
        creates: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.record_type = record_type
        self.skip = frozenset(skip)
        self.creates = creates  # a new record: say which fields it must have
        self._field_options: tuple[object, list[click.Option]] | None = None

    def field_options(self) -> list[click.Option]:
        registry = get_registry()
        if self._field_options is None or self._field_options[0] is not registry:
            rtype = registry.record_type(self.record_type)
            flags = {"--help", *(opt for param in self.params for opt in param.opts)}
            names = {param.name for param in self.params}
            options = []
            for spec in rtype.fields:
                flag = "--" + spec.name.replace("_", "-")
                if (
                    spec.name in self.skip
                    or not spec.name.isidentifier()
                    or flag in flags
                    or spec.name in names
                ):
                    continue  # still settable with --field
                needed = self.creates and spec.required and spec.default is None
                hint = " [required]" if needed else ""
                options.append(
                    click.Option(
                        [flag, spec.name],
                        metavar=spec.kind.name.upper(),
                        help=(spec.help or spec.name.replace("_", " ")) + hint,
                    )
                )
                flags.add(flag)
            self._field_options = (registry, options)
        return self._field_options[1]

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        return [*self.field_options(), *super().get_params(ctx)]

    def invoke(self, ctx: click.Context) -> Any:
        fields: dict[str, str] = {}
        for option in self.field_options():
            assert option.name is not None
            value = ctx.params.pop(option.name, None)
            if value is not None:
                fields[option.name] = value
        for name, value in ctx.params.pop("assignments", ()):
            if name in fields:
                raise click.UsageError(f"field {name!r} is given twice", ctx)
            fields[name] = value
        ctx.params["fields"] = fields
        return super().invoke(ctx)


def show_warnings(warnings: list[str], where: str = "") -> None:
    for warning in warnings:
        warn(f"{where}{warning}")


# -- creating and changing ------------------------------------------------------------------


@click.command("init")
@file_argument
@click.option("--name", help="Pipeline name (default: the file's name without extension, or "
              "the name after '#' in a database address).")
@click.option("--owner", default="", help="Owner; new opportunities get it by default.")
@click.option("--currency", default="USD", show_default=True, help="ISO 4217 code.")
@click.option("--locale", callback=locale_value, metavar="LOCALE",
              help="How amounts, dates and percentages are typed and imported (en_US, de_DE...); "
              "default: the environment's (LC_ALL, LC_NUMERIC, LANG); change it with "
              "'salesmgr locale'.")
def init(file: str, name: str | None, owner: str, currency: str, locale: str | None) -> None:
    """Create a new pipeline FILE (never overwrites one)."""
    if storage.store_for(file).exists(file):
        raise PipelineFileError(file, "already exists; not overwriting it")
    try:
        code = Currency().normalize(currency)
    except ValueError as problem:
        raise ValidationError(f"--currency: {problem}") from None
    label = storage.label(file)
    pipeline = Pipeline.create(name=label if name is None else name, owner=owner, currency=code)
    pipeline.locale = locale or environment_locale()
    create_pipeline(pipeline, file)


@click.command("add", cls=RecordFieldsCommand, record_type=OPPORTUNITY, skip=AUTOMATIC_FIELDS)
@file_argument
@field_option
@locale_option
def add(file: str, fields: dict[str, str], locale: str | None) -> None:
    """Add an opportunity; prints its id."""
    rtype = record_type(OPPORTUNITY)
    with editing_pipeline(file) as pipeline:
        record, warnings = pipeline.add(rtype, fields, locale=locale)
    show_warnings(warnings)
    click.echo(record.id)


@click.command(
    "edit",
    cls=RecordFieldsCommand,
    record_type=OPPORTUNITY,
    skip=AUTOMATIC_FIELDS,
    creates=False,
)
@file_argument
@click.argument("record_id", metavar="ID")
@field_option
@locale_option
def edit(file: str, record_id: str, fields: dict[str, str], locale: str | None) -> None:
    """Change the given fields of opportunity ID (an empty value clears a field); prints its id."""
    if not fields:
        raise click.UsageError("nothing to change: give a field option such as --stage Won")
    rtype = record_type(OPPORTUNITY)
    with editing_pipeline(file) as pipeline:
        record, warnings = pipeline.update(rtype, record_id, fields, locale=locale)
    show_warnings(warnings)
    click.echo(record.id)


@click.command("delete")
@file_argument
@click.argument("record_id", metavar="ID")
def delete(file: str, record_id: str) -> None:
    """Delete record ID (an opportunity or an activity); prints its id."""
    with editing_pipeline(file) as pipeline:
        record = pipeline.delete(record_id)
    click.echo(record.id)


@click.command("log", cls=RecordFieldsCommand, record_type=ACTIVITY, skip=("opportunity_id",))
@file_argument
@click.argument("opportunity_id")
@field_option
def log(file: str, opportunity_id: str, fields: dict[str, str]) -> None:
    """Log an activity (call, meeting, e-mail, note) against an opportunity; prints its id."""
    with editing_pipeline(file) as pipeline:
        record, warnings = log_activity(pipeline, opportunity_id, fields)
    show_warnings(warnings)
    click.echo(record.id)


def log_activity(
    pipeline: Pipeline, opportunity_id: str, fields: dict[str, str]
) -> tuple[Record, list[str]]:
    """Add an activity to a live opportunity (``salesmgr log``, the web's activity form)."""
    opportunity = pipeline.find(opportunity_id, OPPORTUNITY)
    return pipeline.add(record_type(ACTIVITY), {**fields, "opportunity_id": opportunity.id})


# -- reading --------------------------------------------------------------------------------


@click.command("list")
@file_argument
@click.option("--stage", help="Only opportunities in this stage.")
@click.option("--search", metavar="TEXT",
              help="Only those whose company, contact, title or notes hold every word of TEXT "
              "(accents and case ignored: muller finds Müller).")
@click.option("--owner", help="Only this owner's (case ignored).")
@click.option("--due-before", metavar="DATE",
              help="Only those whose next action is due before DATE (YYYY-MM-DD, or as the "
              "pipeline's locale writes dates).")
@click.option("--sort", metavar="FIELD",
              help=f"Sort by FIELD ({', '.join(SORT_KEYS)}); -FIELD sorts descending. "
              "Default: company, then title.")
@json_option
def list_(
    file: str,
    stage: str | None,
    search: str | None,
    owner: str | None,
    due_before: str | None,
    sort: str | None,
    as_json: bool,
) -> None:
    """List the live opportunities, by company then title; a table has a value total per
    currency."""
    rtype = record_type(OPPORTUNITY)
    wanted = rtype.normalize({"stage": stage})[0]["stage"] if stage is not None else None
    pipeline = open_pipeline(file)
    before = None
    if due_before is not None:
        try:
            before = parse_day(due_before, pipeline.locale)
        except ValueError as problem:
            raise ValidationError(f"--due-before: {problem}") from None
    filters = Filters(search=search, stage=wanted, owner=owner, due_before=before, sort=sort)
    mode = output_mode(as_json)
    if mode != "table":  # every record: read as columns, no Record object made for each
        chosen, order = select_columns(pipeline, **filters)
        if mode == "json":
            objects = RecordJson(rtype).objects(chosen)
            sys.stdout.flush()
            write_json_array(map(objects.__getitem__, order), sys.stdout.buffer)
            sys.stdout.buffer.flush()
        else:
            click.echo(plain_columns(chosen, LIST_COLUMNS, order), nl=False)
        return
    records = select(pipeline, **filters)
    # Only the rows a table shows are built: a terminal gets the first TABLE_ROW_LIMIT.
    shown = record_rows(records[:TABLE_ROW_LIMIT], LIST_COLUMNS)
    noun = "opportunity" if len(records) == 1 else "opportunities"
    title = f"{pipeline.name or storage.label(file)}: {len(records):,} {noun}"
    totals = [{"id": "total", "value": f"{amount:f}", "currency": currency}
              for currency, amount in value_totals(pipeline, records).items()]
    console = make_console()
    console.print(rich_table(LIST_COLUMNS, shown, title=title, total=len(records),
                             totals=[[t.get(c, "") for c in LIST_COLUMNS] for t in totals],
                             width=console.width))


@click.command("show")
@file_argument
@click.argument("record_id", metavar="ID")
@json_option
def show(file: str, record_id: str, as_json: bool) -> None:
    """Show opportunity ID with its activities."""
    rtype = record_type(OPPORTUNITY)
    activity_type = record_type(ACTIVITY)
    pipeline = open_pipeline(file)
    record = pipeline.find(record_id, OPPORTUNITY)
    activities = pipeline.activities_of(record.id)
    obj = record_json(record, rtype)
    mode = output_mode(as_json)
    if mode == "json":
        obj["activities"] = [record_json(a, activity_type) for a in activities]
        click.echo(json_document(obj), nl=False)
        return
    rows = record_rows(activities, ACTIVITY_COLUMNS)
    if mode == "plain":
        lines = [plain_line(("field", "value"))]
        lines.extend(plain_line((k, "" if v is None else str(v))) for k, v in obj.items())
        click.echo("\n".join(lines) + "\n\n" + plain_table(ACTIVITY_COLUMNS, rows), nl=False)
        return
    console = make_console()
    console.print(field_table(obj, title=f"{record.get('company')}: {record.get('title')}"))
    if rows:
        console.print(rich_table(ACTIVITY_COLUMNS, rows, title="Activities", limit=None))
    else:
        console.print("No activities logged.")


# -- plugins ----------------------------------------------------------------------------------


@click.command("plugins")
@json_option
@click.pass_context
def plugins(ctx: click.Context, as_json: bool) -> None:
    """List the registered plugins, their versions and what each provides."""
    root = ctx.find_root().command
    if isinstance(root, SalesmgrGroup):
        root.load_plugin_commands()
    infos = [info.as_json() for _, info in sorted(get_registry().plugins.items())]
    mode = output_mode(as_json)
    if mode == "json":
        click.echo(json_document(infos), nl=False)
    elif mode == "plain":
        click.echo(plain_table(("name", "version", "provides"), plugin_rows(infos)), nl=False)
    else:
        table = rich_table(("name", "version", "provides"), plugin_rows(infos), limit=None)
        make_console().print(table)
