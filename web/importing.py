"""Import: upload a CSV, see what a dry run would add, update or refuse row by row, confirm.

It is ``salesmgr import`` with its dry run first: the same table reader, the same CRM profile
found from the header, the same `run_import`; the preview runs it on a copy of the pipeline
read for it and throws the copy away, and confirming runs it again on the held pipeline and
saves (one transaction) only if no row is refused (`all_or_nothing`)."""

from __future__ import annotations

import re
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from salesmgr.cli.exchange import all_or_nothing, run_import, summary, the_profile
from salesmgr.errors import ValidationError
from salesmgr.exchange.importing import ImportResult
from salesmgr.exchange.tables import Table, read_table
from salesmgr.storage import open_pipeline
from salesmgr.web.app import Site, blocking, posted, render, see_other, site_of, text

MAX_UPLOAD = 64 * 1024 * 1024
SHOWN_COLUMNS = 6  # the preview shows the file's first columns beside each row's outcome


@dataclass
class Upload:
    """A CSV waiting for its confirmation, and how it is to be read."""

    path: Path
    update: bool

    def run(self, site: Site, *, dry_run: bool) -> tuple[Table, ImportResult]:
        table = read_table(self.path)
        profile = the_profile(table.header, None, None)
        if dry_run:
            pipeline = open_pipeline(site.source.address)
            return table, run_import(pipeline, table, profile, None, self.update)
        with site.source.editing() as pipeline:
            result = run_import(pipeline, table, profile, None, self.update)
            all_or_nothing(result, self.path.name)
        return table, result

    def discard(self) -> None:
        shutil.rmtree(self.path.parent, ignore_errors=True)


def uploads(site: Site) -> dict[str, Upload]:
    found: dict[str, Upload] = site.state.setdefault("uploads", {})
    return found


def safe_name(name: str | None) -> str:
    """The uploaded file's own name (it names the file in messages), made harmless."""
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
    waiting = Upload(folder / safe_name(upload.filename), update=form.get("update") == "on")
    waiting.path.write_bytes(data)
    try:
        table, result = await blocking(lambda: waiting.run(site, dry_run=True))
    except Exception:
        waiting.discard()
        raise
    key = secrets.token_urlsafe(16)
    uploads(site)[key] = waiting
    shown = table.header[:SHOWN_COLUMNS]
    return render(request, "import.html", preview=result, key=key, file_name=waiting.path.name,
                  summary=summary(result), update=waiting.update, header=shown)


async def confirm(request: Request) -> Response:
    form = await posted(request)
    site = site_of(request)
    waiting = uploads(site).pop(text(form, "key"), None)
    if waiting is None:
        raise ValidationError("that upload is gone (already imported, or the server restarted); "
                              "upload the file again")
    try:
        _, result = await blocking(lambda: waiting.run(site, dry_run=False))
    finally:
        waiting.discard()
    site.guard.flash(request, f"Imported {waiting.path.name}: {summary(result)}")
    return see_other("/list")


routes = [
    Route("/import", import_page, methods=["GET"]),
    Route("/import", preview, methods=["POST"]),
    Route("/import/confirm", confirm, methods=["POST"]),
]
