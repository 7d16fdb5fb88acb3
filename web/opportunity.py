"""One opportunity: every field in a form (checked exactly as ``salesmgr add``/``edit`` check
them), its activity log, logging a call, meeting, e-mail or note, and deleting it."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from salesmgr.cli.records import (
    ACTIVITY,
    AUTOMATIC_FIELDS,
    OPPORTUNITY,
    log_activity,
    record_type,
)
from salesmgr.errors import ValidationError
from salesmgr.model.fields import Choice, Date, Field, Integer, Money, RecordType, Text
from salesmgr.model.pipeline import Record
from salesmgr.web.app import blocking, posted, render, see_other, site_of, text

LONG_TEXT = 1000  # a Text field allowing more than this is a multi-line box


@dataclass
class Input:
    """How one field is shown in a form."""

    spec: Field
    widget: str  # "select", "textarea", "date" or "text"
    choices: tuple[str, ...] = ()
    inputmode: str = "text"

    @property
    def name(self) -> str:
        return self.spec.name


def input_for(spec: Field) -> Input:
    kind = spec.kind
    if isinstance(kind, Choice):
        return Input(spec, "select", kind.choices)
    if isinstance(kind, Date):
        return Input(spec, "date")
    if isinstance(kind, Text) and kind.max_length > LONG_TEXT:
        return Input(spec, "textarea")
    if isinstance(kind, Money):
        return Input(spec, "text", inputmode="decimal")
    if isinstance(kind, Integer):
        return Input(spec, "text", inputmode="numeric")
    return Input(spec, "text", inputmode="email" if kind.name == "email" else "text")


def inputs(rtype: RecordType, skip: tuple[str, ...] = AUTOMATIC_FIELDS) -> list[Input]:
    return [input_for(spec) for spec in rtype.fields if spec.name not in skip]


def one_line_ends(value: str) -> str:
    """Browsers send a text box's line ends as CRLF; the pipeline keeps what was typed."""
    return value.replace("\r\n", "\n")


def submitted(form: FormData, rtype: RecordType) -> dict[str, str]:
    return {i.name: one_line_ends(text(form, f"field.{i.name}")) for i in inputs(rtype)}


def changed(form: FormData, rtype: RecordType) -> dict[str, str]:
    """Only the fields the user changed in the form: a change made meanwhile elsewhere (the
    command line, a sync, another tab) to another field is kept, not overwritten."""
    now = submitted(form, rtype)
    return {
        name: value for name, value in now.items()
        if value != one_line_ends(text(form, f"was.{name}"))
    }


def page(
    request: Request, record: Record | None, values: dict[str, str], *,
    error: str | None = None, activities: list[Record] | None = None, was: dict[str, str] | None,
) -> Response:
    return render(
        request, "opportunity.html", 400 if error else 200,
        record=record, values=values, was=was or {}, error=error,
        inputs=inputs(record_type(OPPORTUNITY)),
        activities=activities or [],
        activity_kinds=activity_kinds(),
    )


def activity_kinds() -> tuple[str, ...]:
    kind = record_type(ACTIVITY).by_name["kind"].kind
    return kind.choices if isinstance(kind, Choice) else ()


async def new_form(request: Request) -> Response:
    defaults = {"stage": request.query_params.get("stage", "")}
    return page(request, None, defaults, was=None)


async def create(request: Request) -> Response:
    form = await posted(request)
    site = site_of(request)
    rtype = record_type(OPPORTUNITY)
    fields = submitted(form, rtype)

    def add() -> tuple[Record, list[str]]:
        with site.source.editing() as pipeline:
            return pipeline.add(rtype, fields)

    try:
        record, warnings = await blocking(add)
    except ValidationError as problem:
        return page(request, None, fields, error=str(problem), was=None)
    for warning in warnings:
        site.guard.flash(request, f"warning: {warning}")
    site.guard.flash(request, f"Added {record.get('company')}: {record.get('title')}")
    return see_other(f"/opportunities/{record.id}")


async def show(request: Request) -> Response:
    site = site_of(request)
    pipeline = await blocking(site.source.read)
    record = pipeline.find(request.path_params["record_id"], OPPORTUNITY)
    if record.id != request.path_params["record_id"]:
        return see_other(f"/opportunities/{record.id}")  # a short id: the page has one address
    activities = sorted(pipeline.activities_of(record.id), key=lambda a: a.get("date"),
                        reverse=True)
    return page(request, record, dict(record.values), activities=activities,
                was=dict(record.values))


async def update(request: Request) -> Response:
    form = await posted(request)
    site = site_of(request)
    rtype = record_type(OPPORTUNITY)
    record_id = request.path_params["record_id"]
    changes = changed(form, rtype)

    def edit() -> tuple[Record, list[str]]:
        with site.source.editing() as pipeline:
            return pipeline.update(rtype, record_id, changes)

    try:
        record, warnings = await blocking(edit)
    except ValidationError as problem:
        pipeline = await blocking(site.source.read)
        current = pipeline.find(record_id, OPPORTUNITY)
        return page(request, current, submitted(form, rtype), error=str(problem),
                    activities=pipeline.activities_of(current.id),
                    was={n: text(form, f"was.{n}") for n in rtype.by_name})
    for warning in warnings:
        site.guard.flash(request, f"warning: {warning}")
    site.guard.flash(request, "Saved" if changes else "Nothing changed")
    return see_other(f"/opportunities/{record.id}")


async def log(request: Request) -> Response:
    form = await posted(request)
    site = site_of(request)
    record_id = request.path_params["record_id"]
    fields = {name: one_line_ends(text(form, name)) for name in ("kind", "date", "summary")}

    def add() -> tuple[Record, list[str]]:
        with site.source.editing() as pipeline:
            return log_activity(pipeline, record_id, fields)

    try:
        activity, _ = await blocking(add)
    except ValidationError as problem:
        site.guard.flash(request, f"Not logged: {problem}")
    else:
        site.guard.flash(request, f"Logged a {activity.get('kind')}")
    return see_other(f"/opportunities/{record_id}#activities")


async def delete(request: Request) -> Response:
    await posted(request)
    site = site_of(request)
    record_id = request.path_params["record_id"]

    def remove() -> Record:
        with site.source.editing() as pipeline:
            return pipeline.delete(record_id, OPPORTUNITY)

    record = await blocking(remove)
    site.guard.flash(request, f"Deleted {record.get('company')}: {record.get('title')}")
    return see_other("/")


routes = [
    Route("/opportunities/new", new_form, methods=["GET"]),
    Route("/opportunities/new", create, methods=["POST"]),
    Route("/opportunities/{record_id}", show, methods=["GET"]),
    Route("/opportunities/{record_id}", update, methods=["POST"]),
    Route("/opportunities/{record_id}/log", log, methods=["POST"]),
    Route("/opportunities/{record_id}/delete", delete, methods=["POST"]),
]
