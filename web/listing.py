"""The list: every live opportunity, filtered, sorted and shown a page at a time, so a
100,000-record pipeline costs one pass over its records and a page of rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from salesmgr.errors import ValidationError
from salesmgr.model.pipeline import Pipeline, Record
from salesmgr.reports import select
from salesmgr.web.app import blocking, render, site_of
from salesmgr.web.board import stages

PAGE_SIZE = 50
SORTS = [("company", "Company"), ("-value", "Value, largest first"), ("close_date", "Close date"),
         ("next_action_date", "Next action date"), ("stage", "Stage"), ("owner", "Owner"),
         ("-probability", "Probability, highest first")]


@dataclass
class Query:
    """What the list's form asks for (the address of the page, so it can be bookmarked)."""

    search: str = ""
    stage: str = ""
    owner: str = ""
    due_before: str = ""
    sort: str = "company"
    page: int = 1

    @classmethod
    def of(cls, request: Request) -> Query:
        params = request.query_params
        try:
            page = max(1, int(params.get("page", "1")))
        except ValueError:
            page = 1
        return cls(
            search=params.get("q", "").strip(),
            stage=params.get("stage", ""),
            owner=params.get("owner", "").strip(),
            due_before=params.get("due", ""),
            sort=params.get("sort", "company") or "company",
            page=page,
        )

    def address(self, **changes: object) -> str:
        from urllib.parse import urlencode

        values = {"q": self.search, "stage": self.stage, "owner": self.owner,
                  "due": self.due_before, "sort": self.sort, "page": self.page, **changes}
        return "/list?" + urlencode({k: v for k, v in values.items() if v not in ("", None)})


def chosen(pipeline: Pipeline, query: Query) -> list[Record]:
    """`salesmgr.reports.select`: the very search, filters and sort of ``salesmgr list``."""
    due = None
    if query.due_before:
        try:
            due = date.fromisoformat(query.due_before)
        except ValueError:
            raise ValidationError(
                f"next action before: {query.due_before!r} is not a date (YYYY-MM-DD)") from None
    return select(pipeline, search=query.search or None, stage=query.stage or None,
                  owner=query.owner or None, due_before=due, sort=query.sort or None)


async def listing(request: Request) -> Response:
    site = site_of(request)
    query = Query.of(request)
    key = ("list", query.search, query.stage, query.owner, query.due_before, query.sort)
    records = await blocking(site.source.derived, key,
                             lambda pipeline: chosen(pipeline, query))
    pages = max(1, -(-len(records) // PAGE_SIZE))
    query.page = min(query.page, pages)
    start = (query.page - 1) * PAGE_SIZE
    return render(request, "list.html", query=query, rows=records[start:start + PAGE_SIZE],
                  total=len(records), pages=pages, stages=stages(), first=start + 1, sorts=SORTS)


routes = [Route("/list", listing, methods=["GET"])]
