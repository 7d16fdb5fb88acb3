"""The Sync page: the site's device from ``salesmgr.toml``, Load and Sync buttons, a dry-run
preview, live progress while the session runs, and the merge report afterwards.

A session runs in a thread of its own through `salesmgr.cli.syncing.load_device` and
`sync_device` (what ``salesmgr load`` and ``salesmgr sync`` run: the same lock, the same save);
its progress comes from the ``salesmgr_sync_event`` hook, as the command line's progress bar's
does, and the page asks for it twice a second.  The pairing secret comes from the environment
variable the config names, or from the form for this one session; it is never shown."""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from salesmgr.cli.site_config import SiteConfig
from salesmgr.cli.syncing import load_device, site_config_of, sync_device
from salesmgr.errors import SalesmgrError
from salesmgr.plugin.hookspecs import hookimpl
from salesmgr.plugin.interfaces import MailboxTransport
from salesmgr.plugin.manager import get_registry
from salesmgr.sync.results import SessionResult
from salesmgr.sync.transports import transport_for
from salesmgr.web.app import Site, posted, render, see_other, site_of, text

ACTIONS = {"load": "Load the device", "preview": "Preview the sync", "sync": "Sync"}
STAGES = {
    "starting": "reaching the device",
    "hello": "authenticating",
    "authenticated": "exchanging changes",
    "batch": "exchanging changes",
    "merged": "sending the merge to the device",
    "committed": "finished",
    "failed": "failed",
}


@dataclass
class SyncJob:
    """One load or sync started from the page, and what it has reported so far."""

    number: int
    action: str
    url: str
    started: float = field(default_factory=time.monotonic)
    stage: str = "starting"
    received: int = 0
    sent: int = 0
    finished: bool = False
    error: str | None = None
    results: list[SessionResult] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    @hookimpl
    def salesmgr_sync_event(self, stage: str, info: Mapping[str, Any]) -> None:
        if info.get("side") != "desktop":
            return  # a test may run the device in this process too
        self.stage = stage
        if stage == "batch":
            if info.get("direction") == "sent":
                self.sent = int(info.get("records", 0))
            else:
                self.received += int(info.get("records", 0))


@dataclass
class SyncJobs:
    """The sessions started from this server; one runs at a time."""

    jobs: dict[int, SyncJob] = field(default_factory=dict)
    numbers: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    guard: threading.Lock = field(default_factory=threading.Lock)

    def running(self) -> SyncJob | None:
        return next((j for j in self.jobs.values() if not j.finished), None)


def jobs_of(site: Site) -> SyncJobs:
    jobs: SyncJobs = site.state.setdefault("sync", SyncJobs())
    return jobs


def site_config(site: Site) -> SiteConfig:
    return site_config_of(site.source.address, site.config_path)


def run(site: Site, job: SyncJob, config: SiteConfig, secret: str | None, policy: str) -> None:
    """The session itself (in its own thread); the page reads ``job`` as it goes."""
    pm = get_registry().pm
    pm.register(job)
    try:
        address = site.source.address
        if job.action == "load":
            job.results = [load_device(address, config, job.url, secret, None)]
        else:
            job.results = list(sync_device(address, config, job.url, policy,
                                           job.action == "preview", False, secret, None))
    except SalesmgrError as problem:
        job.error = str(problem)
    except Exception as problem:  # a bug must still end the job on the page
        job.error = f"{type(problem).__name__}: {problem}"
        raise
    finally:
        pm.unregister(job)
        job.finished = True


async def sync_page(request: Request) -> Response:
    site = site_of(request)
    config = site_config(site)
    registry = get_registry()
    transport = None
    if config.url:
        try:
            transport = transport_for(config.url)
        except SalesmgrError:
            transport = None
    return render(
        request, "sync.html", config=config, transport=transport,
        store_and_forward=isinstance(transport, MailboxTransport),
        secret_set=bool(os.environ.get(config.secret_env)),
        policies=sorted(registry.policies), actions=ACTIONS,
        running=jobs_of(site).running(),
        past=sorted(jobs_of(site).jobs.values(), key=lambda j: -j.number)[:5],
    )


async def start(request: Request) -> Response:
    form = await posted(request)
    site = site_of(request)
    config = site_config(site)
    action = text(form, "action")
    if action not in ACTIONS:
        action = "preview"
    jobs = jobs_of(site)
    with jobs.guard:
        running = jobs.running()
        if running is not None:
            site.guard.flash(request, "A session is already running; wait for it to finish")
            return see_other(f"/sync/jobs/{running.number}")
        job = SyncJob(next(jobs.numbers), action, text(form, "url").strip() or config.url or "")
        jobs.jobs[job.number] = job
    secret = text(form, "secret") or None
    policy = text(form, "policy") or config.policy or "field-merge"
    thread = threading.Thread(target=run, args=(site, job, config, secret, policy),
                              name=f"salesmgr-web-sync-{job.number}")
    thread.start()
    return see_other(f"/sync/jobs/{job.number}")


def job_of(request: Request) -> SyncJob:
    from starlette.exceptions import HTTPException

    try:
        return jobs_of(site_of(request)).jobs[int(request.path_params["number"])]
    except (KeyError, ValueError):
        raise HTTPException(404, "no such sync session") from None


async def job_page(request: Request) -> Response:
    return render(request, "sync_job.html", job=job_of(request), stages=STAGES, actions=ACTIONS)


async def job_progress(request: Request) -> Response:
    """The part of the job page that changes; the page asks again until the job is done."""
    return render(request, "sync_progress.html", job=job_of(request), stages=STAGES,
                  actions=ACTIONS)


routes = [
    Route("/sync", sync_page, methods=["GET"]),
    Route("/sync", start, methods=["POST"]),
    Route("/sync/jobs/{number}", job_page, methods=["GET"]),
    Route("/sync/jobs/{number}/progress", job_progress, methods=["GET"]),
]
