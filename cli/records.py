"""Commands that read and change records: init, add, edit, delete, log, list, show, import,
export, plugins.

``add``, ``edit`` and ``log`` get one option per field of their record type, read from the
registry when the command line is parsed, so a field a plugin adds is an option too; any field can
also be set with ``--field NAME=VALUE``.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import sys
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import click

from salesmgr.cli.group import SalesmgrGroup, warn
from salesmgr.cli.views import (
    ACTIVITY_COLUMNS,
    LIST_COLUMNS,
    TABLE_ROW_LIMIT,
    RecordJson,
    field_table,
    json_document,
    make_console,
    output_mode,
    plain_line,
    plain_records,
    plain_table,
    plugin_rows,
    record_json,
    record_rows,
    rich_table,
    write_json_array,
)
from salesmgr.errors import PipelineFileError, SalesmgrError, ValidationError
from salesmgr.model.fields import Currency, RecordId, RecordType
from salesmgr.model.pipeline import Pipeline, Record
from salesmgr.plugin.hookspecs import hookimpl
from salesmgr.plugin.manager import get_registry
from salesmgr.storage import editing_pipeline, open_pipeline, save_pipeline

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
file_argument = click.argument("file", type=PATH)


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
@click.option("--name", help="Pipeline name (default: the file's name without extension).")
@click.option("--owner", default="", help="Owner; new opportunities get it by default.")
@click.option("--currency", default="USD", show_default=True, help="ISO 4217 code.")
def init(file: Path, name: str | None, owner: str, currency: str) -> None:
    """Create a new pipeline FILE (never overwrites one)."""
    if os.path.lexists(file):
        raise PipelineFileError(file, "already exists; not overwriting it")
    try:
        code = Currency().normalize(currency)
    except ValueError as problem:
        raise ValidationError(f"--currency: {problem}") from None
    pipeline = Pipeline.create(name=file.stem if name is None else name, owner=owner, currency=code)
    save_pipeline(pipeline, file)


@click.command("add", cls=RecordFieldsCommand, record_type=OPPORTUNITY, skip=AUTOMATIC_FIELDS)
@file_argument
@field_option
def add(file: Path, fields: dict[str, str]) -> None:
    """Add an opportunity; prints its id."""
    rtype = record_type(OPPORTUNITY)
    with editing_pipeline(file) as pipeline:
        record, warnings = pipeline.add(rtype, fields)
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
def edit(file: Path, record_id: str, fields: dict[str, str]) -> None:
    """Change the given fields of opportunity ID (an empty value clears a field); prints its id."""
    if not fields:
        raise click.UsageError("nothing to change: give a field option such as --stage Won")
    rtype = record_type(OPPORTUNITY)
    with editing_pipeline(file) as pipeline:
        record, warnings = pipeline.update(rtype, record_id, fields)
    show_warnings(warnings)
    click.echo(record.id)


@click.command("delete")
@file_argument
@click.argument("record_id", metavar="ID")
def delete(file: Path, record_id: str) -> None:
    """Delete record ID (an opportunity or an activity); prints its id."""
    with editing_pipeline(file) as pipeline:
        record = pipeline.delete(record_id)
    click.echo(record.id)


@click.command("log", cls=RecordFieldsCommand, record_type=ACTIVITY, skip=("opportunity_id",))
@file_argument
@click.argument("opportunity_id")
@field_option
def log(file: Path, opportunity_id: str, fields: dict[str, str]) -> None:
    """Log an activity (call, meeting, e-mail, note) against an opportunity; prints its id."""
    rtype = record_type(ACTIVITY)
    with editing_pipeline(file) as pipeline:
        opportunity = pipeline.find(opportunity_id, OPPORTUNITY)
        record, warnings = pipeline.add(rtype, {**fields, "opportunity_id": opportunity.id})
    show_warnings(warnings)
    click.echo(record.id)


# -- reading --------------------------------------------------------------------------------


def by_company(record: Record) -> tuple[str, str, str]:
    values = record.values
    return (values.get("company", "").casefold(), values.get("title", "").casefold(), record.id)


def live_opportunities(pipeline: Pipeline) -> list[Record]:
    return sorted(pipeline.live(OPPORTUNITY), key=by_company)


@click.command("list")
@file_argument
@click.option("--stage", help="Only opportunities in this stage.")
@json_option
def list_(file: Path, stage: str | None, as_json: bool) -> None:
    """List the live opportunities, by company then title."""
    rtype = record_type(OPPORTUNITY)
    wanted = rtype.normalize({"stage": stage})[0]["stage"] if stage is not None else None
    pipeline = open_pipeline(file)
    if wanted is None:
        records = live_opportunities(pipeline)
    else:  # filter first: sorting 100,000 records to keep a few is most of the time
        chosen = (r for r in pipeline.live(OPPORTUNITY) if r.values.get("stage") == wanted)
        records = sorted(chosen, key=by_company)
    mode = output_mode(as_json)
    if mode == "json":
        sys.stdout.flush()
        write_json_array(map(RecordJson(rtype), records), sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return
    if mode == "plain":
        click.echo(plain_records(records, LIST_COLUMNS), nl=False)
    else:
        # Only the rows a table shows are built: a terminal gets the first TABLE_ROW_LIMIT.
        rows = record_rows(records[:TABLE_ROW_LIMIT], LIST_COLUMNS)
        noun = "opportunity" if len(records) == 1 else "opportunities"
        title = f"{pipeline.name or file.name}: {len(records):,} {noun}"
        make_console().print(rich_table(LIST_COLUMNS, rows, title=title, total=len(records)))


@click.command("show")
@file_argument
@click.argument("record_id", metavar="ID")
@json_option
def show(file: Path, record_id: str, as_json: bool) -> None:
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


# -- CSV --------------------------------------------------------------------------------------


def column_name(header: str) -> str:
    """``Close Date`` and ``close-date`` name the field ``close_date``."""
    return "_".join(header.strip().casefold().replace("-", " ").split())


# A notes field may hold up to a million characters; the csv module stops at 131,072.
CSV_FIELD_LIMIT = 1 << 24
DELIMITERS = (",", ";", "\t")  # Excel writes ";" where the decimal mark is a comma


def read_csv(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header row and each data row with the line it starts on.

    A UTF-8 BOM (Excel's "CSV UTF-8") is skipped; the delimiter is the one of ``,``, ``;`` and
    tab that the header row uses most."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SalesmgrError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise SalesmgrError(f"{path}: is a directory, not a CSV file") from None
    except OSError as problem:
        raise SalesmgrError(f"{path}: cannot read ({problem.strerror or problem})") from None
    data = data.removeprefix(codecs.BOM_UTF8)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as problem:
        line = data.count(b"\n", 0, problem.start) + 1
        raise SalesmgrError(
            f"{path} line {line}: not UTF-8 text; save it as CSV UTF-8"
        ) from None
    if not text.strip():
        raise SalesmgrError(f"{path}: is empty; expected a header row of field names")
    header_line = text.split("\n", 1)[0]
    delimiter = max(DELIMITERS, key=header_line.count)
    csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows: list[tuple[int, list[str]]] = []
    line = 1
    try:
        for cells in reader:
            rows.append((line, cells))
            line = reader.line_num + 1
    except csv.Error as problem:
        raise SalesmgrError(f"{path} line {line}: {problem}") from None
    return rows[0][1], rows[1:]


def csv_columns(path: Path, header: list[str], rtype: RecordType) -> list[str]:
    columns = [column_name(h) for h in header]
    known = {"id", *rtype.by_name}
    unknown = [h for h, c in zip(header, columns, strict=True) if c not in known]
    if unknown:
        raise ValidationError(
            f"{path}: unknown column{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(repr(u) for u in unknown)} (known: id, {', '.join(rtype.by_name)})"
        )
    twice = sorted({c for c in columns if columns.count(c) > 1})
    if twice:
        raise ValidationError(f"{path}: column {', '.join(map(repr, twice))} appears twice")
    missing = [
        f.name for f in rtype.fields if f.required and f.default is None and f.name not in columns
    ]
    if missing:
        raise ValidationError(f"{path}: no column {', '.join(map(repr, missing))} (required)")
    return columns


def import_rows(
    pipeline: Pipeline, rtype: RecordType, columns: list[str], rows: list[tuple[int, list[str]]]
) -> Iterator[tuple[int, str | None, list[str]]]:
    """Add each row to ``pipeline``; yields (line, error or None, warnings) per data row."""
    record_ids = RecordId()
    for line, cells in rows:
        if not any(cell.strip() for cell in cells):
            continue  # spreadsheets leave blank rows at the end
        if len(cells) > len(columns):
            yield line, f"{len(cells)} values but {len(columns)} columns", []
            continue
        values: dict[str, str | None] = dict(zip(columns, cells, strict=False))
        given_id = (values.pop("id", None) or "").strip()
        try:
            record_id = None
            if given_id:
                try:
                    record_id = record_ids.normalize(given_id)
                except ValueError as problem:
                    raise ValidationError(f"id {problem}") from None
            _, warnings = pipeline.add(rtype, values, record_id=record_id)
        except ValidationError as problem:
            yield line, str(problem), []
        else:
            yield line, None, warnings


@click.command("import")
@file_argument
@click.argument("csv_file", metavar="CSV", type=PATH)
def import_(file: Path, csv_file: Path) -> None:
    """Add the opportunities in CSV (a header row of field names, then one row each).

    Every row is checked first; if any is bad, each is reported and nothing is imported."""
    rtype = record_type(OPPORTUNITY)
    header, rows = read_csv(csv_file)
    columns = csv_columns(csv_file, header, rtype)
    with editing_pipeline(file) as pipeline:
        bad = 0
        added = 0
        for line, error, warnings in import_rows(pipeline, rtype, columns, rows):
            if error is not None:
                bad += 1
                click.echo(f"salesmgr: {csv_file} line {line}: {error}", err=True)
            else:
                added += 1
                show_warnings(warnings, f"{csv_file} line {line}: ")
        if bad:
            raise ValidationError(
                f"{csv_file}: {bad} bad row{'s' if bad > 1 else ''}; nothing imported"
            )
    click.echo(f"imported {added} opportunit{'y' if added == 1 else 'ies'} into {file}")


@click.command("export")
@file_argument
@click.option(
    "--output", "-o", type=PATH, help="Write the CSV to this file (atomically), not stdout."
)
def export(file: Path, output: Path | None) -> None:
    """Write the live opportunities as CSV: a header row of field names, then one row each."""
    rtype = record_type(OPPORTUNITY)
    if output is not None and os.path.realpath(output) == os.path.realpath(file):
        raise ValidationError(f"{output}: is the pipeline file itself; choose another --output")
    pipeline = open_pipeline(file)
    columns = ["id", *(f.name for f in rtype.fields)]
    buffer = io.StringIO()
    # The excel dialect (CRLF rows, RFC 4180) also quotes a lone CR; a "\n" terminator would not.
    writer = csv.writer(buffer)
    writer.writerow(columns)
    writer.writerows(record_rows(live_opportunities(pipeline), columns))
    if output is None:
        click.echo(buffer.getvalue(), nl=False)
    else:
        from salesmgr.storage import write_atomic

        write_atomic(output, buffer.getvalue().encode("utf-8"), backup=False)


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


commands: list[click.Command] = [
    init,
    add,
    edit,
    delete,
    log,
    list_,
    show,
    import_,
    export,
    plugins,
]


@hookimpl(tryfirst=True)
def salesmgr_register_commands(cli: click.Group) -> None:
    for command in commands:
        cli.add_command(command)
