"""Import: upload a CSV, see what a dry run would add or refuse row by row, then confirm.

The preview runs `salesmgr.cli.records.import_csv` on a copy of the pipeline read for it and
throws the copy away; confirming runs it again on the locked file and saves only if every row
is good (`ImportOutcome.check`), exactly as ``salesmgr import`` does."""

from __future__ import annotations

import re
import secrets
import shutil
import tempfile
from pathlib import Path

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from salesmgr.cli.records import ImportOutcome, ImportTable, import_csv
from salesmgr.errors import ValidationError
from salesmgr.storage import open_pipeline
from salesmgr.web.app import Site, blocking, posted, render, see_other, site_of, text

MAX_UPLOAD = 64 * 1024 * 1024
SHOWN_COLUMNS = ("company", "title", "stage", "value", "currency", "close_date")


def uploads(site: Site) -> dict[str, Path]:
    found: dict[str, Path] = site.state.setdefault("uploads", {})
    return found


def safe_name(name: str | None) -> str:
    """The uploaded file's own name (it names the file in error messages), made harmless."""
    base = re.sub(r"[^\w.\- ]", "_", Path(name or "").name).strip(". ")
    return base or "upload.csv"


async def import_page(request: Request) -> Response:
    return render(request, "import.html", preview=None)


async def preview(request: Request) -> Response:
    form = await posted(request)
    site = site_of(request)
    upload = form.get("csv")
    if not isinstance(upload, UploadFile) or not upload.filename:
        raise ValidationError("choose a CSV file to import")
    data = await upload.read(MAX_UPLOAD + 1)
    if len(data) > MAX_UPLOAD:
        raise ValidationError(f"{safe_name(upload.filename)}: larger than {MAX_UPLOAD >> 20} MB")
    folder = Path(tempfile.mkdtemp(prefix="salesmgr-web-import-"))
    path = folder / safe_name(upload.filename)
    path.write_bytes(data)

    def dry_run() -> tuple[ImportTable, ImportOutcome]:
        table = ImportTable.read(path)
        return table, import_csv(open_pipeline(site.source.path), table)

    try:
        table, outcome = await blocking(dry_run)
    except Exception:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    key = secrets.token_urlsafe(16)
    uploads(site)[key] = path
    cells = {line: dict(zip(table.columns, row, strict=False)) for line, row in table.rows}
    rows = [(line, cells[line], error, warnings) for line, error, warnings in outcome.rows]
    return render(request, "import.html", preview=outcome, rows=rows, key=key,
                  file_name=path.name, columns=SHOWN_COLUMNS)


async def confirm(request: Request) -> Response:
    form = await posted(request)
    site = site_of(request)
    path = uploads(site).pop(text(form, "key"), None)
    if path is None:
        raise ValidationError("that upload is gone (already imported, or the server restarted); "
                              "upload the file again")

    def run() -> ImportOutcome:
        table = ImportTable.read(path)
        with site.source.editing() as pipeline:
            outcome = import_csv(pipeline, table)
            outcome.check(table.path)
        return outcome

    try:
        outcome = await blocking(run)
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)
    count = outcome.added
    site.guard.flash(request, f"Imported {count} opportunit{'y' if count == 1 else 'ies'} "
                              f"from {path.name}")
    return see_other("/list")


routes = [
    Route("/import", import_page, methods=["GET"]),
    Route("/import", preview, methods=["POST"]),
    Route("/import/confirm", confirm, methods=["POST"]),
]
