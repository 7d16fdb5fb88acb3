"""Conflicts side by side: the desktop's value, the device's, which one won; take the other
side or type a value.  Settling one is `salesmgr.merge.resolve.resolve_conflict`, exactly what
``salesmgr resolve`` does, so the choice travels on the next sync the same way."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from salesmgr.cli.merging import conflict_json, conflict_rows
from salesmgr.errors import ValidationError
from salesmgr.merge.resolve import Resolution, resolve_conflict
from salesmgr.model.pipeline import Pipeline
from salesmgr.plugin.manager import get_registry
from salesmgr.web.app import blocking, posted, render, see_other, site_of, text

UNSETTLED = "unsettled conflicts"


def unsettled(pipeline: Pipeline) -> int:
    """Conflicts the user has not settled: open ones, and those a policy decided."""
    log = get_registry().conflict_log.name
    return sum(1 for r in pipeline.live(log) if r.values.get("status") != "resolved")


async def conflicts(request: Request) -> Response:
    """Every conflict not yet settled by the user (open, or decided by the policy); with
    ``?all=1`` the settled ones too."""
    site = site_of(request)
    include_all = request.query_params.get("all") == "1"
    pipeline = await blocking(site.source.read)
    rows = [
        conflict_json(r) for r in conflict_rows(pipeline, include_all=True)
        if include_all or r.values.get("status") != "resolved"
    ]
    for row in rows:
        target = pipeline.records.get(str(row["record_id"]))
        row["opportunity"] = (
            target.id if target is not None and target.kind == "opportunity"
            and not target.deleted else None
        )
    return render(request, "conflicts.html", rows=list(reversed(rows)), include_all=include_all)


async def resolve(request: Request) -> Response:
    form = await posted(request)
    site = site_of(request)
    take = text(form, "take")
    if take == "value":
        take = text(form, "value").replace("\r\n", "\n")
        if take in ("desktop", "device"):
            raise ValidationError(f"{take!r} names a side; use its button to take that side")
    conflict_id = request.path_params["conflict_id"]

    def settle() -> Resolution:
        with site.source.editing() as pipeline:
            return resolve_conflict(pipeline, conflict_id, take)

    resolution = await blocking(settle)
    for warning in resolution.warnings:
        site.guard.flash(request, f"warning: {warning}")
    site.guard.flash(request, resolution.summary())
    return see_other("/conflicts")


routes = [
    Route("/conflicts", conflicts, methods=["GET"]),
    Route("/conflicts/{conflict_id}/resolve", resolve, methods=["POST"]),
]
