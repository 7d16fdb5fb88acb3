"""The list: every live opportunity, filtered, sorted and shown a page at a time.

`salesmgr.reports.OpportunityIndex` (the very search, filters and sort of ``salesmgr list``) is
made once per version of the pipeline and kept until it changes: the default order is sorted
once, each record's search text folded once; a query's answer (the indexes of its records, in
order) is kept too, so the next page of it is a slice, and only the rows shown are looked at."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from salesmgr.errors import ValidationError
from salesmgr.model.pipeline import Pipeline
from salesmgr.reports import OpportunityIndex
from salesmgr.web.app import Site, blocking, render, site_of
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


INDEX = "opportunity index"


def ready_index(pipeline: Pipeline) -> OpportunityIndex:
    """The index with what the first list page and the first search need: the default order
    and every record's search text."""
    index = OpportunityIndex(pipeline)
    index.order(None)
    index.texts  # noqa: B018 - made now, as the pipeline is loaded
    return index


prepared = {INDEX: ready_index}  # made as each version of the pipeline is loaded


def opportunity_index(site: Site, pipeline: Pipeline) -> OpportunityIndex:
    """The `OpportunityIndex` of ``pipeline`` (one `PipelineSource.read` gave), made once per
    version of the pipeline (the board uses it too)."""
    return site.source.derived(INDEX, ready_index, pipeline)


def chosen(index: OpportunityIndex, query: Query) -> list[int]:
    """`OpportunityIndex.query`: what `salesmgr.reports.select` (``salesmgr list``) answers."""
    due = None
    if query.due_before:
        try:
            due = date.fromisoformat(query.due_before)
        except ValueError:
            raise ValidationError(
                f"next action before: {query.due_before!r} is not a date (YYYY-MM-DD)") from None
    return index.query(search=query.search or None, stage=query.stage or None,
                       owner=query.owner or None, due_before=due, sort=query.sort or None)


async def listing(request: Request) -> Response:
    site = site_of(request)
    query = Query.of(request)
    key = ("list", query.search, query.stage, query.owner, query.due_before, query.sort)

    def answer() -> tuple[OpportunityIndex, list[int]]:
        pipeline = site.source.read()  # the index and the answer of one version of it
        index = opportunity_index(site, pipeline)
        return index, site.source.derived(key, lambda _: chosen(index, query), pipeline)

    index, found = await blocking(answer)
    pages = max(1, -(-len(found) // PAGE_SIZE))
    query.page = min(query.page, pages)
    start = (query.page - 1) * PAGE_SIZE
    rows = [index.records[i] for i in found[start:start + PAGE_SIZE]]
    return render(request, "list.html", query=query, rows=rows, total=len(found), pages=pages,
                  stages=stages(), first=start + 1, sorts=SORTS)


routes = [Route("/list", listing, methods=["GET"])]
