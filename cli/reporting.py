"""The morning views: ``salesmgr forecast`` and ``salesmgr agenda``.

The figures come from `salesmgr.reports` (the web pages use the same functions); these commands
only choose the output: a table on a terminal, tab-separated text when piped, JSON with --json.
"""

from __future__ import annotations

from datetime import date

import click

from salesmgr.cli.group import PIPELINE
from salesmgr.cli.views import json_document, make_console, output_mode, plain_table, rich_table
from salesmgr.reports import GROUPINGS, agenda, forecast, money_2dp
from salesmgr.storage import open_pipeline

NO_GROUP = {"stage": "(no stage)", "month": "(no close date)", "owner": "(no owner)"}


def iso_day(ctx: click.Context, param: click.Parameter, value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)", ctx, param) from None


@click.command("forecast")
@click.argument("file", type=PIPELINE)
@click.option("--by", type=click.Choice(GROUPINGS), default="stage", show_default=True,
              help="Group by stage, by month of the close date, or by owner.")
@click.option("--include-lost", is_flag=True, help="Count lost deals too (weighted at 0).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def forecast_(file: str, by: str, include_lost: bool, as_json: bool) -> None:
    """What the pipeline is worth: value and probability-weighted value per group and in total,
    per currency (a deal without a probability is weighted by its stage's usual one)."""
    result = forecast(open_pipeline(file), by=by, include_lost=include_lost)  # type: ignore[arg-type]
    mode = output_mode(as_json)
    if mode == "json":
        click.echo(json_document(result.as_json()), nl=False)
        return
    header = (by, "currency", "deals", "value", "weighted")
    rows = [[r.group or NO_GROUP[by], r.currency, str(r.count), f"{money_2dp(r.value):f}",
             f"{money_2dp(r.weighted):f}"] for r in result.rows]
    totals = [["total", t.currency, str(t.count), f"{money_2dp(t.value):f}",
               f"{money_2dp(t.weighted):f}"] for t in result.totals]
    if mode == "plain":
        click.echo(plain_table(header, rows + totals), nl=False)
        return
    make_console().print(rich_table(header, rows, title=f"Forecast by {by}", limit=None,
                                    totals=totals))


@click.command("agenda")
@click.argument("file", type=PIPELINE)
@click.option("--days", type=click.IntRange(min=0), default=7, show_default=True,
              help="Show what is due within this many days (and everything overdue).")
@click.option("--owner", help="Only this owner's next actions.")
@click.option("--today", callback=iso_day, metavar="YYYY-MM-DD",
              help="Plan as if it were this day (default: today).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def agenda_(file: str, days: int, owner: str | None, today: date | None, as_json: bool) -> None:
    """Next actions overdue and due within --days, oldest first."""
    items = agenda(open_pipeline(file), days=days, owner=owner, today=today)
    mode = output_mode(as_json)
    if mode == "json":
        click.echo(json_document([item.as_json() for item in items]), nl=False)
        return
    header = ("due", "status", "id", "company", "title", "next_action", "owner")
    rows = [[i.due.isoformat(), "overdue" if i.overdue else "due", i.record_id, i.company,
             i.title, i.next_action, i.owner] for i in items]
    if mode == "plain":
        click.echo(plain_table(header, rows), nl=False)
        return
    overdue = sum(1 for i in items if i.overdue)
    title = f"Agenda: {len(items)} next action{'s' if len(items) != 1 else ''}, {overdue} overdue"
    make_console().print(rich_table(header, rows, title=title, limit=None))
