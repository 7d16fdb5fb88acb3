"""Forecast and Agenda pages, and the board's column totals: every figure comes from
`salesmgr.reports`, the module ``salesmgr forecast`` and ``salesmgr agenda`` print from."""

from __future__ import annotations

from collections import defaultdict
from datetime import date

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from salesmgr.errors import ValidationError
from salesmgr.model.pipeline import Pipeline
from salesmgr.reports import GROUPINGS, ForecastRow, GroupBy, agenda, forecast
from salesmgr.web.app import blocking, render, site_of
from salesmgr.web.charts import amount, bar_chart

AGENDA_DAYS = 7
GROUP_NAMES = {"stage": "stage", "month": "month of close date", "owner": "owner"}


def totals_by_stage(pipeline: Pipeline, today: date) -> dict[str, list[ForecastRow]]:
    """Each stage's value and weighted value per currency (lost deals too: they have a column)."""
    per_stage: dict[str, list[ForecastRow]] = defaultdict(list)
    for row in forecast(pipeline, "stage", today, include_lost=True).rows:
        per_stage[row.group].append(row)
    return per_stage


def grouping(request: Request) -> GroupBy:
    by = request.query_params.get("by", "stage")
    for name in GROUPINGS:
        if by == name:
            return name
    raise ValidationError(f"cannot group a forecast by {by!r} (one of {', '.join(GROUPINGS)})")


async def forecast_page(request: Request) -> Response:
    site = site_of(request)
    by = grouping(request)
    pipeline = await blocking(site.source.read)
    result = await blocking(forecast, pipeline, by, site.today())
    currencies = sorted({row.currency for row in result.rows})
    charts = [bar_chart(currency, [r for r in result.rows if r.currency == currency],
                        empty="no close date" if by == "month" else "(none)")
              for currency in currencies]
    return render(request, "forecast.html", by=by, groupings=GROUP_NAMES, charts=charts,
                  totals={t.currency: t for t in result.totals}, amount=amount)


def days_asked(request: Request) -> int:
    text = request.query_params.get("days", str(AGENDA_DAYS))
    try:
        return int(text)
    except ValueError:
        raise ValidationError(f"days: {text!r} is not a whole number") from None


async def agenda_page(request: Request) -> Response:
    site = site_of(request)
    days = days_asked(request)
    owner = request.query_params.get("owner", "").strip() or None
    today = site.today()
    pipeline = await blocking(site.source.read)
    items = await blocking(agenda, pipeline, days, owner, today)
    groups = [
        ("Overdue", [i for i in items if i.overdue]),
        ("Today", [i for i in items if i.due == today]),
        (f"Next {days} days", [i for i in items if i.due > today]),
    ]
    return render(request, "agenda.html", groups=groups, days=days, owner=owner or "")


routes = [
    Route("/forecast", forecast_page, methods=["GET"]),
    Route("/agenda", agenda_page, methods=["GET"]),
]
