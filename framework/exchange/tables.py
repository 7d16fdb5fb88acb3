"""CSV files as spreadsheets and CRMs write them: read with their dialect found, written so a
spreadsheet opens them safely.

Reading: a UTF-8 byte-order mark (Excel's "CSV UTF-8") or a UTF-16 one (Excel's "Unicode
text") says the encoding; otherwise the text must be UTF-8 unless the caller names another
encoding (``cp1252``...), and a file that is not is refused with the line where it stops being
UTF-8.  The delimiter is the one of ``,`` ``;`` tab ``|`` that the header row uses, outside
quotes, more than any other; when the header cannot tell, `csv.Sniffer` decides from the first
rows.  Quotes are RFC 4180 double quotes.

Writing: RFC 4180 (CRLF rows, double quotes), optionally after a UTF-8 byte-order mark; a cell
that a spreadsheet would run as a formula (it begins with ``=``, ``+``, ``-``, ``@``, a tab or a
carriage return: OWASP's CSV-injection advice) is written after a ``'``.  Reading takes that
``'`` away again, and a cell that already began with ``'`` before one of those characters gets
one more, so the round trip gives back exactly what was written.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from salesmgr.errors import SalesmgrError

# A notes field may hold up to a million characters; the csv module stops at 131,072.
CSV_FIELD_LIMIT = 1 << 24
DELIMITERS = ",;\t|"
SNIFF_BYTES = 64 * 1024
FORMULA = re.compile(r"'*[=+\-@\t\r]")  # what a spreadsheet may run, behind any number of '
NEUTRALIZED = re.compile(r"'+[=+\-@\t\r]")


class Row(NamedTuple):
    """One data row: its number as a spreadsheet shows it (the header is row 1), the line of
    the file it starts on (later than its number when a cell above holds line breaks), and its
    cells."""

    number: int
    line: int
    cells: list[str]

    def where(self) -> str:
        return f"row {self.number}" + (f" (line {self.line})" if self.line != self.number else "")


@dataclass
class Table:
    """A CSV file read: its header, its data rows, and how it was written (delimiter,
    encoding)."""

    path: Path
    header: list[str]
    rows: list[Row]
    delimiter: str
    encoding: str


def decode(path: Path, data: bytes, encoding: str | None) -> tuple[str, str]:
    """The text of ``data`` and the encoding it was read with."""
    for bom, name in ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
                      (codecs.BOM_UTF16_BE, "utf-16")):
        if data.startswith(bom) and encoding is None:
            encoding = name
            break
    chosen = encoding or "utf-8"
    try:
        codecs.lookup(chosen)
    except LookupError:
        raise SalesmgrError(f"{chosen!r} is not a text encoding (such as utf-8, cp1252)") from None
    try:
        text = data.decode(chosen)
    except UnicodeDecodeError as problem:
        line = data.count(b"\n", 0, problem.start) + 1
        if encoding is None:
            raise SalesmgrError(
                f"{path} line {line}: not UTF-8 text; save it as CSV UTF-8, or name its "
                "encoding with --encoding (such as cp1252)"
            ) from None
        raise SalesmgrError(f"{path} line {line}: not {chosen} text") from None
    return text.removeprefix("\ufeff"), chosen


def delimiter_of(text: str) -> str:
    """The delimiter the header row uses most outside quotes; csv.Sniffer when that is a tie."""
    header = re.sub(r'"(?:[^"]|"")*"', "", text.split("\n", 1)[0])
    counts = sorted(((header.count(d), d) for d in DELIMITERS), reverse=True)
    if counts[0][0] > counts[1][0]:
        return counts[0][1]
    try:
        return csv.Sniffer().sniff(text[:SNIFF_BYTES], delimiters=DELIMITERS).delimiter
    except csv.Error:
        return ","


def read_table(path: Path, encoding: str | None = None) -> Table:
    """Read the CSV file at ``path`` (see the module's docstring); one-line errors."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SalesmgrError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise SalesmgrError(f"{path}: is a directory, not a CSV file") from None
    except OSError as problem:
        raise SalesmgrError(f"{path}: cannot read ({problem.strerror or problem})") from None
    text, used = decode(path, data, encoding)
    if not text.strip():
        raise SalesmgrError(f"{path}: is empty; expected a header row of column names")
    delimiter = delimiter_of(text)
    csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    rows: list[Row] = []
    line = 1
    try:
        for cells in reader:
            rows.append(Row(len(rows) + 1, line, [restore(cell) for cell in cells]))
            line = reader.line_num + 1
    except csv.Error as problem:
        raise SalesmgrError(f"{path} line {line}: {problem}") from None
    return Table(path, rows[0].cells, rows[1:], delimiter, used)


def neutralize(cell: str) -> str:
    """The cell as a spreadsheet will show but never run (see the module's docstring)."""
    return "'" + cell if FORMULA.match(cell) else cell


def restore(cell: str) -> str:
    """`neutralize` undone."""
    return cell[1:] if NEUTRALIZED.match(cell) else cell


def csv_text(
    header: Sequence[str], rows: Iterable[Sequence[str]], *, raw: bool = False, bom: bool = False
) -> str:
    """RFC 4180 text of a header and rows; cells neutralized unless ``raw``; a UTF-8 BOM first
    when ``bom`` (Excel on Windows then reads UTF-8, not the machine's code page)."""
    buffer = io.StringIO()
    if bom:
        buffer.write("\ufeff")
    # The excel dialect (CRLF rows, RFC 4180) also quotes a lone CR; a "\n" terminator would not.
    writer = csv.writer(buffer)
    writer.writerow(header)
    if raw:
        writer.writerows(rows)
    else:
        writer.writerows([neutralize(cell) for cell in row] for row in rows)
    return buffer.getvalue()
