"""The board's column totals (until salesmgr.reports' forecast lands on main and replaces them)."""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from decimal import Decimal, InvalidOperation

from starlette.routing import BaseRoute

from salesmgr.model.pipeline import Pipeline

Totals = dict[str, dict[str, tuple[Decimal, Decimal]]]  # stage -> currency -> (value, weighted)


def totals_by_stage(pipeline: Pipeline, today: date) -> Totals:
    totals: Totals = defaultdict(dict)
    for record in pipeline.live("opportunity"):
        values = record.values
        try:
            value = Decimal(values.get("value") or 0)
            weight = Decimal(values.get("probability") or 0) / 100
        except InvalidOperation:
            continue
        per = totals[values.get("stage", "")]
        currency = values.get("currency", "")
        before, weighted = per.get(currency, (Decimal(0), Decimal(0)))
        per[currency] = (before + value, weighted + value * weight)
    return totals


routes: list[BaseRoute] = []
