"""How records are shown: JSON objects, tab-separated lines for scripts, rich tables for people.

Tab-separated output has one header line, then one line per row; a tab, newline, carriage
return or backslash inside a value is written as ``\\t``, ``\\n``, ``\\r`` or ``\\\\``, so every
row stays on one line.
rich is imported only when a table is drawn: piped output must stay fast for big pipelines.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from decimal import Decimal, InvalidOperation
from functools import partial
from itertools import islice, repeat
from typing import TYPE_CHECKING, Any, BinaryIO, Literal, TextIO

from salesmgr.model.fields import FieldKind
from salesmgr.model.pipeline import BASE_PREFIX, clock_texts
from salesmgr.model.record_table import LiveColumns

if TYPE_CHECKING:
    import msgspec
    from rich.console import Console
    from rich.table import Table

    from salesmgr.model.fields import RecordType
    from salesmgr.model.pipeline import Record

OutputMode = Literal["json", "table", "plain"]

# Columns of `salesmgr list`, in order.
LIST_COLUMNS = (
    "id",
    "company",
    "title",
    "stage",
    "value",
    "currency",
    "probability",
    "close_date",
    "next_action_date",
    "next_action",
)
ACTIVITY_COLUMNS = ("id", "date", "kind", "summary")
# A person cannot read more rows than this in a terminal, and rich needs ~0.8 ms per row.
TABLE_ROW_LIMIT = 500
SHORT_ID = 8  # ids shown in tables; any unique prefix of 4+ characters is accepted back

_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def output_mode(as_json: bool, stream: TextIO | None = None) -> OutputMode:
    if as_json:
        return "json"
    stream = stream or sys.stdout
    isatty = getattr(stream, "isatty", None)
    return "table" if isatty is not None and isatty() else "plain"


# -- JSON ---------------------------------------------------------------------------------


class RecordJson:
    """Turns records of one type into JSON objects: ``id``, every field of the type (null when
    empty), fields this installation does not know (as text; hidden merge bases left out), and
    ``modified`` from the record's newest version.  Built once per listing; the work is done
    column by column (`objects`), so 100,000 records cost few Python calls each."""

    def __init__(self, rtype: RecordType | None) -> None:
        fields = rtype.fields if rtype is not None else ()
        self.names = [spec.name for spec in fields]
        self.known = frozenset(self.names)
        self.keys = ["id", *self.names, "modified"]
        # Only kinds that change the text (probability -> number) need a call per value.
        self.converters: list[tuple[int, Callable[[str], Any]]] = [
            (self.keys.index(spec.name), spec.kind.to_json)
            for spec in fields
            if type(spec.kind).to_json is not FieldKind.to_json
        ]
        self.created_at = self.keys.index("created") if "created" in self.known else None
        # The object as a msgspec Struct, made from a row in C and encoded several times faster
        # than a dict (fields in the object's key order).
        self.struct: type[msgspec.Struct] | None = None
        if len(set(self.keys)) == len(self.keys):
            import msgspec  # imported by the commands that write JSON, not by every command

            self.struct = msgspec.defstruct("RecordObject", [(k, Any) for k in self.keys])

    def __call__(self, record: Record) -> dict[str, Any]:
        found: dict[str, Any] = self.objects(LiveColumns.of_records([record]), True)[0]
        return found

    def objects(self, rows: LiveColumns, as_dicts: bool = False) -> list[Any]:
        """Each row's JSON object: a Struct where it can be, else (a row holding fields its type
        does not declare, or ``as_dicts``) a dict."""
        cells: list[list[Any]] = [rows.ids, *map(rows.column, self.names)]
        for at, to_json in self.converters:
            texts = cells[at]
            memo = {t: None if t is None else json_value(to_json, t) for t in set(texts)}
            cells[at] = list(map(memo.__getitem__, texts))
        if self.created_at is not None and None in cells[self.created_at]:
            made = cells[self.created_at]
            missing = [i for i, text in enumerate(made) if text is None]
            made = cells[self.created_at] = list(made)
            for i, text in zip(missing, clock_texts(rows.created_at[i] for i in missing),
                               strict=True):
                made[i] = text
        cells.append(clock_texts(rows.changed_at))
        extras = [name for name in rows.texts if name not in self.known and name != "id"
                  and not name.startswith(BASE_PREFIX)]
        if self.struct is not None and not extras and not as_dicts:
            return list(map(self.struct, *cells))
        return list(self.mixed(cells, [rows.texts[name] for name in extras], extras, as_dicts))

    def mixed(
        self, cells: list[list[Any]], more: list[list[str | None]], extras: list[str],
        as_dicts: bool,
    ) -> Iterator[Any]:
        head = self.keys[:-1]
        rows = zip(*cells, strict=True)
        for row, texts in zip(rows, zip(*more, strict=True) if more else repeat(()), strict=False):
            if self.struct is not None and not as_dicts and texts.count(None) == len(texts):
                yield self.struct(*row)
                continue
            out = dict(zip(head, row, strict=False))
            for name, text in zip(extras, texts, strict=True):
                if text is not None:
                    out[name] = text
            out["modified"] = row[-1]
            yield out


def json_value(to_json: Callable[[str], Any], text: str) -> Any:
    try:
        return to_json(text)
    except ValueError:  # written by a newer or foreign version: shown as it is
        return text


def record_json(record: Record, rtype: RecordType | None) -> dict[str, Any]:
    """One record as JSON (see `RecordJson`)."""
    return RecordJson(rtype)(record)


JSON_CHUNK = 4096  # objects encoded per call: the output streams, the calls stay few


def write_json_array(objects: Iterable[Any], out: BinaryIO) -> None:
    """Write a JSON array with one object per line (valid JSON, and readable line by line),
    a chunk of objects at a time, so 100,000 records are never one big list or string.

    msgspec encodes a chunk as JSON lines in one call (five times the standard library's
    speed); inside JSON text a newline is always escaped, so every raw newline it writes ends
    an object and can become the array's ",\n"."""
    import msgspec  # imported by the commands that write JSON, not by every command

    encode_lines = msgspec.json.Encoder().encode_lines
    chunks = iter(partial(next_chunk, iter(objects)), [])
    first = next(chunks, None)
    if first is None:
        out.write(b"[]\n")
        return
    out.write(b"[\n")
    out.write(encode_lines(first)[:-1].replace(b"\n", b",\n"))
    for chunk in chunks:
        out.write(b",\n")
        out.write(encode_lines(chunk)[:-1].replace(b"\n", b",\n"))
    out.write(b"\n]\n")


def next_chunk(objects: Iterator[Any]) -> list[Any]:
    return list(islice(objects, JSON_CHUNK))


def json_document(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, indent=2) + "\n"


# -- tab-separated text ---------------------------------------------------------------------


def plain_line(cells: Iterable[str]) -> str:
    return "\t".join(cell.translate(_ESCAPES) for cell in cells)


def plain_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Header line and one line per row."""
    return tab_separated(header, ["\t".join(row) for row in rows], lambda: rows)


def plain_columns(rows: LiveColumns, columns: Sequence[str], order: Sequence[int]) -> str:
    """`plain_table` of the records as columns at rows ``order``: each row is joined in C (map
    and zip), never a Python call per cell, and the lines put in order once."""
    cells = [rows.ids if name == "id" else [text or "" for text in rows.column(name)]
             for name in columns]
    lines = list(map("\t".join, zip(*cells, strict=True)))
    return tab_separated(columns, list(map(lines.__getitem__, order)),
                         lambda: list(map(list(zip(*cells, strict=True)).__getitem__, order)))


def tab_separated(
    header: Sequence[str], lines: list[str], rows: Callable[[], Sequence[Sequence[str]]]
) -> str:
    """The lines under the header, or, when a value holds a tab, newline, CR or backslash (rare,
    so it is checked once on the whole text), every cell escaped from ``rows()``."""
    text = "\n".join(["\t".join(header), *lines]) + "\n"
    count = len(lines) + 1
    if (
        "\\" in text
        or "\r" in text
        or text.count("\n") != count
        or text.count("\t") != (len(header) - 1) * count
    ):
        text = "\n".join([plain_line(header), *(plain_line(row) for row in rows())]) + "\n"
    return text


def split_at_id(columns: Sequence[str]) -> tuple[Sequence[str], Sequence[str] | None]:
    """The columns before and after ``id`` (None after when there is no id column)."""
    if "id" not in columns:
        return columns, None
    at = list(columns).index("id")
    return columns[:at], columns[at + 1 :]


def record_rows(records: Iterable[Record], columns: Sequence[str]) -> list[list[str]]:
    """Each record's text for each column (``id`` is the record id, an absent field is "");
    map() keeps the per-cell work in C."""
    blanks = [""] * len(columns)
    before, after = split_at_id(columns)
    if after is None:
        return [list(map(r.values.get, columns, blanks)) for r in records]
    return [
        [*map(r.values.get, before, blanks), r.id, *map(r.values.get, after, blanks)]
        for r in records
    ]


# -- rich tables ------------------------------------------------------------------------------


def make_console(stream: TextIO | None = None) -> Console:
    from rich.console import Console

    return Console(file=stream or sys.stdout, highlight=False)


def money_text(value: str) -> str:
    try:
        return f"{Decimal(value):,.2f}"
    except (InvalidOperation, ValueError):
        return value


# Columns that are never cut or wrapped: an amount, id or date cut short is wrong, not short.
WHOLE_COLUMNS = frozenset({
    "id", "value", "weighted", "currency", "probability", "close_date", "next_action_date",
    "due", "date", "created", "modified", "deals", "status", "stage", "version",
})
MONEY_COLUMNS = frozenset({"value", "weighted"})
RIGHT_ALIGNED = MONEY_COLUMNS | {"probability", "deals"}
# Headings of whole columns, short so they take no more room than their values.
HEADINGS = {"probability": "%", "close_date": "close", "next_action_date": "due",
            "currency": "cur"}
TEXT_MIN_WIDTH = 8  # a text column narrower than this is unreadable: leave a column out instead
# Which columns a narrow terminal leaves out first (the caption says so).
DROPPED_FIRST = ("close_date", "probability", "stage", "owner")


def display_cell(name: str, value: str) -> str:
    if name == "id" and value != "total":
        return value[:SHORT_ID]
    if name in MONEY_COLUMNS and value:
        return money_text(value)
    if name == "probability" and value:
        return f"{value}%"
    return value


def heading(name: str) -> str:
    return HEADINGS.get(name, name.replace("_", " "))


def fitting_columns(
    header: Sequence[str], cells: Sequence[Sequence[str]], width: int | None
) -> tuple[list[int], list[str]]:
    """The columns that fit in ``width`` with every whole column whole and every text column at
    least TEXT_MIN_WIDTH wide (3 characters of border and padding each), and the names of the
    ones left out, in DROPPED_FIRST order."""
    def need(name: str, at: int) -> int:
        if name not in WHOLE_COLUMNS:
            return TEXT_MIN_WIDTH + 3
        return max([len(heading(name)), *(len(row[at]) for row in cells)]) + 3

    kept = list(range(len(header)))
    left_out: list[str] = []
    for name in DROPPED_FIRST:
        if width is None or 1 + sum(need(header[i], i) for i in kept) <= width:
            break
        if name in header:
            kept.remove(list(header).index(name))
            left_out.append(name)
    return kept, left_out


def rich_table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    title: str | None = None,
    limit: int | None = TABLE_ROW_LIMIT,
    total: int | None = None,
    totals: Sequence[Sequence[str]] = (),
    width: int | None = None,
) -> Table:
    """A table of ``rows`` (raw cells); cells are plain text, never rich markup.

    At most ``limit`` rows are drawn; ``total`` is how many there are when the caller passed
    only the first ones (a caption says how many were left out).  ``totals`` rows are drawn
    under a line.  Amounts, ids and dates are never cut: text columns wrap instead, and when
    even that cannot fit ``width``, columns are left out (DROPPED_FIRST) and the caption says
    which."""
    from rich.table import Table
    from rich.text import Text

    shown = rows if limit is None else rows[:limit]
    cells = [[display_cell(n, c) for n, c in zip(header, row, strict=True)]
             for row in [*shown, *totals]]
    kept, left_out = fitting_columns(header, cells, width)
    table = Table(title=Text(title) if title else None, title_justify="left")
    for at in kept:
        name = header[at]
        justify: Literal["right", "left"] = "right" if name in RIGHT_ALIGNED else "left"
        if name in WHOLE_COLUMNS:
            widest = max([len(heading(name)), *(len(row[at]) for row in cells)])
            table.add_column(heading(name), justify=justify, no_wrap=True, min_width=widest)
        else:
            table.add_column(heading(name), justify=justify, overflow="fold")
    for number, row in enumerate(cells):
        table.add_row(*(Text(row[at]) for at in kept),
                      end_section=number == len(shown) - 1 and bool(totals))
    captions = []
    total = len(rows) if total is None else total
    if total > len(shown):
        captions.append(f"{len(shown):,} of {total:,} shown")
    if left_out:
        captions.append(f"too narrow for {', '.join(heading(n) for n in left_out)}")
    if captions:
        table.caption = "; ".join(captions) + "; pipe the output or use --json for all"
    return table


def field_table(obj: dict[str, Any], *, title: str | None = None) -> Table:
    """Two columns, field and value, for one record's JSON object."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(title) if title else None, title_justify="left", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for name, value in obj.items():
        if value is None or isinstance(value, list):
            continue
        text = str(value)
        if name == "value":
            text = money_text(text)
        elif name == "probability":
            text = f"{text}%"
        table.add_row(Text(name.replace("_", " ")), Text(text))
    return table


def plugin_rows(infos: Iterable[dict[str, Any]]) -> list[list[str]]:
    """One row per plugin: name, version, and what it provides (``kind: a, b; kind: c``)."""
    rows = []
    for info in infos:
        provides = "; ".join(
            f"{what}: {', '.join(names)}" for what, names in info["provides"].items()
        )
        rows.append([info["name"], info["version"], provides])
    return rows
