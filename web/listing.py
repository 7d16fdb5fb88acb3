"""The list: every live opportunity, filtered, sorted and shown a page at a time, so a
100,000-record pipeline costs one pass over its records and a page of rows."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from salesmgr.cli.records import OPPORTUNITY, by_company
from salesmgr.model.pipeline import Pipeline, Record
from salesmgr.web.app import blocking, render, site_of
from salesmgr.web.board import stages

PAGE_SIZE = 50
SORTS = [("company", "Company"), ("value", "Value"), ("close_date", "Close date"),
         ("next_action_date", "Next action")]


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


def select(pipeline: Pipeline, query: Query) -> list[Record]:
    chosen = [
        r for r in pipeline.live(OPPORTUNITY)
        if (not query.stage or r.values.get("stage") == query.stage)
        and (not query.owner or r.values.get("owner") == query.owner)
    ]
    return sorted(chosen, key=by_company)


async def listing(request: Request) -> Response:
    site = site_of(request)
    query = Query.of(request)
    pipeline = await blocking(site.source.read)
    records = await blocking(select, pipeline, query)
    pages = max(1, -(-len(records) // PAGE_SIZE))
    query.page = min(query.page, pages)
    start = (query.page - 1) * PAGE_SIZE
    return render(request, "list.html", query=query, rows=records[start:start + PAGE_SIZE],
                  total=len(records), pages=pages, stages=stages(), first=start + 1, sorts=SORTS)


routes = [Route("/list", listing, methods=["GET"])]
