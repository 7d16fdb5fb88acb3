"""The web application: its pages, its safety, and how a page is rendered.

`make_app` builds the Starlette application on one pipeline, wherever it lives (a file, or any
store's address: ``sqlite:///office.db#emea``, ``postgresql://host/db#emea``).  Each page
module (`board`, `listing`, `opportunity`, `reports`, `conflicts`, `syncing`, `importing`) has
its ``routes``; pages render Jinja2 templates with autoescaping on, so every value from the
pipeline is escaped.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from salesmgr.cli.views import money_text
from salesmgr.errors import (
    PipelineFileError,
    SalesmgrError,
    SyncError,
    UnknownRecordError,
)
from salesmgr.web.security import CSRF_FIELD, Guard, GuardMiddleware, allowed_hosts, session_of
from salesmgr.web.source import PipelineSource

HERE = Path(__file__).resolve().parent
T = TypeVar("T")


@dataclass
class Site:
    """What every page needs: the pipeline, the guard, the templates and the sync jobs."""

    source: PipelineSource
    guard: Guard
    config_path: Path | None = None
    today: Callable[[], date] = date.today
    templates: jinja2.Environment = field(default_factory=lambda: template_environment())
    state: dict[str, Any] = field(default_factory=dict)  # page modules keep their state here


def template_environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    from salesmgr.web.charts import amount

    env.filters["money"] = lambda value: money_text(value) if value else ""
    env.filters["amount"] = amount
    env.filters["label"] = lambda name: name.replace("_", " ").capitalize()
    return env


def site_of(request: Request) -> Site:
    site: Site = request.app.state.site
    return site


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """A page from ``template``; every page also gets the pipeline, the CSRF token and the
    messages waiting for this browser."""
    from salesmgr.web.conflicts import UNSETTLED, unsettled

    site = site_of(request)
    conflicts = 0
    name = site.source.label
    try:
        pipeline = site.source.read()
        name = pipeline.name or name
        conflicts = site.source.derived(UNSETTLED, unsettled, pipeline)
    except SalesmgrError:
        pass  # the error page itself must render when the file cannot be read
    page = site.templates.get_template(template).render(
        request=request,
        path=request.url.path,
        pipeline_name=name,
        open_conflicts=conflicts,
        csrf=site.guard.csrf_token(session_of(request)),
        csrf_field=CSRF_FIELD,
        flashes=site.guard.take_flashes(request),
        today=site.today(),
        **context,
    )
    return HTMLResponse(page, status_code=status)


async def posted(request: Request) -> FormData:
    """The form of a POST, once its CSRF token is checked."""
    form = await request.form()
    site_of(request).guard.check_csrf(request, form)
    return form


async def blocking(work: Callable[..., T], *args: Any) -> T:
    """Run file work (reading, locking, saving) off the event loop."""
    return await run_in_threadpool(work, *args)


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def text(form: FormData, name: str) -> str:
    value = form.get(name, "")
    return value if isinstance(value, str) else ""


# -- errors and login -------------------------------------------------------------------------


STATUS = [(UnknownRecordError, 404), (PipelineFileError, 503), (SyncError, 502)]


async def salesmgr_error(request: Request, error: Exception) -> Response:
    status = next((code for kind, code in STATUS if isinstance(error, kind)), 400)
    return render(request, "error.html", status, message=str(error))


async def http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    return render(request, "error.html", error.status_code, message=error.detail)


async def login_page(request: Request) -> Response:
    site = site_of(request)
    token = request.query_params.get("token")
    if token is not None and site.guard.log_in(session_of(request), token):
        return see_other("/")  # the token leaves the address bar at once
    return render(request, "login.html", 403 if token is not None else 200,
                  failed=token is not None)


async def log_in(request: Request) -> Response:
    form = await posted(request)
    if site_of(request).guard.log_in(session_of(request), text(form, "token")):
        return see_other("/")
    return render(request, "login.html", 403, failed=True)


def make_app(
    address: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    login_token: str | None = None,
    config_path: Path | None = None,
    today: Callable[[], date] = date.today,
) -> Starlette:
    """The application serving the pipeline at ``address`` for a server bound to ``host``."""
    from salesmgr.web import board, conflicts, importing, listing, opportunity, reports, syncing

    guard = Guard(login_token)
    site = Site(PipelineSource(address), guard, config_path, today)
    # Made as each version of the pipeline is loaded, kept until it changes: the list's index,
    # the board, the count of conflicts every page shows.
    site.source.prepare.update(
        {**listing.prepared, **board.prepared(site), conflicts.UNSETTLED: conflicts.unsettled})
    routes: list[BaseRoute] = [
        Route("/login", login_page, methods=["GET"]),
        Route("/login", log_in, methods=["POST"]),
        *board.routes,
        *listing.routes,
        *opportunity.routes,
        *reports.routes,
        *conflicts.routes,
        *syncing.routes,
        *importing.routes,
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(GuardMiddleware, guard=guard, hosts=allowed_hosts(host))],
        exception_handlers={SalesmgrError: salesmgr_error, HTTPException: http_error},
    )
    app.state.site = site
    return app
