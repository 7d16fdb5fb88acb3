"""The board: one column per stage with its count, value and weighted value, a card per deal;
a deal moves to another stage in one action (drag it, or pick the stage on its card)."""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from salesmgr.cli.records import OPPORTUNITY, record_type
from salesmgr.model.pipeline import Pipeline, Record
from salesmgr.reports import ForecastRow
from salesmgr.reports import declared_stages as stages
from salesmgr.web.app import Site, blocking, posted, render, see_other, site_of, text

CARDS_PER_COLUMN = 50  # a column of 20,000 deals shows its most urgent; the List shows all


@dataclass
class Column:
    stage: str
    count: int = 0
    cards: list[Record] = field(default_factory=list)


def urgency(record: Record) -> tuple[bool, str, str, str]:
    """Soonest next action first; deals without one last."""
    values = record.values
    due = values.get("next_action_date", "")
    return (not due, due, values.get("company", "").casefold(), record.id)


def columns_of(records: list[Record]) -> list[Column]:
    columns = {stage: Column(stage) for stage in stages()}
    for record in records:
        stage = record.values.get("stage", "")
        column = columns.get(stage) or columns.setdefault(stage, Column(stage))
        column.count += 1
        column.cards.append(record)
    for column in columns.values():
        column.cards = heapq.nsmallest(CARDS_PER_COLUMN, column.cards, key=urgency)
    return list(columns.values())


def overdue(record: Record, today: date) -> bool:
    due = record.values.get("next_action_date", "")
    return bool(due) and due < today.isoformat()


COLUMNS, TOTALS = "board columns", "board totals"


def prepared(site: Site) -> dict[str, Callable[[Pipeline], Any]]:
    """The board of each version of the pipeline, made as it is loaded (`PipelineSource`)."""
    from salesmgr.web.listing import opportunity_index
    from salesmgr.web.reports import totals_by_stage

    return {
        COLUMNS: lambda pipeline: columns_of(opportunity_index(site, pipeline).records),
        TOTALS: lambda pipeline: totals_by_stage(pipeline, site.today()),
    }


async def board(request: Request) -> Response:
    site = site_of(request)
    source = site.source

    def columns_and_totals() -> tuple[list[Column], dict[str, list[ForecastRow]]]:
        pipeline = source.read()  # both of one version of it
        made = prepared(site)
        return (source.derived(COLUMNS, made[COLUMNS], pipeline),
                source.derived(TOTALS, made[TOTALS], pipeline))

    columns, totals = await blocking(columns_and_totals)
    return render(request, "board.html", columns=columns, totals=totals, stages=stages(),
                  overdue=overdue)


async def move(request: Request) -> Response:
    """Move a deal to another stage: an ordinary edit of its stage field."""
    form = await posted(request)
    site = site_of(request)
    record_id = request.path_params["record_id"]

    def change() -> None:
        with site.source.editing() as pipeline:
            pipeline.update(record_type(OPPORTUNITY), record_id, {"stage": text(form, "stage")})

    await blocking(change)
    return see_other("/")


routes = [
    Route("/", board, methods=["GET"]),
    Route("/opportunities/{record_id}/stage", move, methods=["POST"]),
]
