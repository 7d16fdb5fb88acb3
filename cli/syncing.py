"""The desktop side on the command line: ``salesmgr load`` in the morning, ``salesmgr sync`` at
night.  Both reach the device through the transport its URL names (``--to``/``--from``, or the
site's ``salesmgr.toml``) and speak the protocol of `salesmgr.sync.session`."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from salesmgr import storage
from salesmgr.cli.group import PIPELINE
from salesmgr.cli.site_config import SiteConfig, find_site_config, resolve_secret
from salesmgr.errors import ConfigError, Interrupted
from salesmgr.model.pipeline import Pipeline
from salesmgr.plugin.interfaces import Link, MailboxTransport
from salesmgr.plugin.manager import get_registry
from salesmgr.storage import open_pipeline, save_pipeline
from salesmgr.sync.channel import DEFAULT_TIMEOUT
from salesmgr.sync.results import SessionResult, refused_in
from salesmgr.sync.transports import live_transport, transport_for
from salesmgr.sync.wire import auth

if TYPE_CHECKING:
    from salesmgr.sync.mailbox import DesktopDrops


def common_options(command: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(
        [
            click.option("--secret", help="Pairing secret (default: $SALESMGR_SECRET)."),
            click.option(
                "--config",
                "config_path",
                type=click.Path(dir_okay=False, path_type=Path),
                help="Site config (default: salesmgr.toml beside FILE, if there is one).",
            ),
            click.option(
                "--timeout",
                type=click.FloatRange(min=0, min_open=True),
                help=f"Seconds to wait for every answer (default {DEFAULT_TIMEOUT:g}).",
            ),
            click.option("--json", "as_json", is_flag=True, help="Print the result as JSON."),
        ]
    ):
        command = option(command)
    return command


def connect(
    config: SiteConfig, url: str | None, secret: str | None, timeout: float | None, flag: str
) -> tuple[Link, str, float]:
    """The link to the device, the secret and the timeout, from the options and the config."""
    url = url or config.url
    if not url:
        raise ConfigError(
            f"no device given: use {flag} URL (e.g. tcp://HOST:PORT) or set url in the "
            "[sync] table of salesmgr.toml"
        )
    secret = resolve_secret(secret, config)
    timeout = timeout or config.timeout or DEFAULT_TIMEOUT
    transport = live_transport(url)
    link = transport.connect(url, {**config.options, "timeout": timeout})
    return link, secret, timeout


def drop_box(
    config: SiteConfig, url: str | None, secret: str | None, timeout: float | None
) -> DesktopDrops | None:
    """The device's drop box when its transport is store and forward (``folder://``), else
    None: the device is then reached over a live link (`connect`)."""
    url = url or config.url
    transport = transport_for(url) if url else None
    if url is None or not isinstance(transport, MailboxTransport):
        return None
    secret = resolve_secret(secret, config)
    timeout = timeout or config.timeout or DEFAULT_TIMEOUT
    mailbox = transport.open_mailbox(url, {**config.options, "timeout": timeout})
    from salesmgr.sync.mailbox import DesktopDrops

    return DesktopDrops(mailbox, secret, timeout=timeout)


def progress(
    link: Link, file: str | Path, desktop: Pipeline, as_json: bool
) -> AbstractContextManager[object]:
    """A progress bar for the session, on a terminal only (never with --json)."""
    from salesmgr.plugins.progress import showing_progress

    return showing_progress(
        link, pipeline_bytes=pipeline_bytes(file, desktop), records=len(desktop.records),
        enabled=not as_json,
    )


def pipeline_bytes(file: str | Path, desktop: Pipeline) -> int:
    """The size of the pipeline as a file: the file's own, or what encoding it would take."""
    if storage.scheme_of(file) == storage.FILE_SCHEME:
        local = storage.local_file(file)
        if local is not None:
            return local.stat().st_size
    return len(storage.encode(desktop))


def site_config_of(file: str, explicit: Path | None) -> SiteConfig:
    """The site config: beside the pipeline's file or database file, else in this folder."""
    return find_site_config(storage.local_file(file) or Path("pipeline"), explicit)


def show(result: SessionResult, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(result.as_json(), indent=2))
    else:
        for line in result.lines():
            click.echo(line)


def show_all(results: Sequence[SessionResult], as_json: bool) -> None:
    """One result as `show` prints it; several (a folder held more than one thing to take)
    one after the other, or as a JSON list."""
    if len(results) == 1:
        show(results[0], as_json)
    elif as_json:
        click.echo(json.dumps([r.as_json() for r in results], indent=2))
    else:
        for index, result in enumerate(results):
            if index:
                click.echo("")
            show(result, as_json)


# What shows a live session's progress: given the link and the desktop pipeline, a context
# manager around the session (the command line's progress bar; nothing for the web, which
# follows the sync events itself).
Watch = Callable[[Link, Pipeline], AbstractContextManager[object]]


def unwatched(link: Link, desktop: Pipeline) -> AbstractContextManager[object]:
    return nullcontext()


def load_device(
    file: str | Path, config: SiteConfig, url: str | None, secret: str | None,
    timeout: float | None, watch: Watch = unwatched,
) -> SessionResult:
    """Load the device with the pipeline in ``file`` (which is not changed)."""
    from salesmgr.sync.session import DesktopSession

    desktop = open_pipeline(file)
    box = drop_box(config, url, secret, timeout)
    if box is not None:
        try:
            return box.load(desktop)
        finally:
            box.mailbox.close()
    link, secret, timeout = connect(config, url, secret, timeout, "--to")
    try:
        with watch(link, desktop):
            return DesktopSession(link, secret, timeout=timeout).load(desktop)
    finally:
        link.close()


def sync_device(
    file: str | Path, config: SiteConfig, url: str | None, policy: str | None, dry_run: bool,
    allow_mass_change: bool, secret: str | None, timeout: float | None,
    watch: Watch = unwatched,
) -> Sequence[SessionResult]:
    """Pull the device's changes into ``file``, merge, send back what the device lacks; the
    file is locked throughout, so no edit can slip in between reading and saving it."""
    from salesmgr.sync.session import DesktopSession

    policy = policy or config.policy or "field-merge"
    get_registry().policy(policy)  # an unknown policy fails before connecting
    saved: list[str] = []  # the desktop's save is what Ctrl-C must report on

    def save(pipeline: Pipeline) -> None:
        save_pipeline(pipeline, file)
        saved.append(str(file))

    how: dict[str, Any] = {
        "save": save, "policy": policy, "dry_run": dry_run, "allow_mass_change": allow_mass_change,
    }
    try:
        with storage.exclusive(file):
            box = drop_box(config, url, secret, timeout)
            if box is not None:
                try:
                    return box.sync(open_pipeline(file), **how)
                finally:
                    box.mailbox.close()
            # A pipeline that is not there is reported before any device is reached (the
            # store reads it to say what is wrong); one that is, is read while the device
            # reads its own (`DesktopSession.opening`).
            read_now = open_pipeline(file) if storage.version_of(file) is None else None
            link, secret, timeout = connect(config, url, secret, timeout, "--from")
            try:
                session = DesktopSession(link, secret, timeout=timeout)
                desktop = (
                    read_now if read_now is not None
                    else session.opening(lambda: open_pipeline(file))
                )
                with watch(link, desktop):
                    result = session.sync(desktop, **how)
            finally:
                link.close()
            return [result]
    except KeyboardInterrupt:
        raise interrupted(file, saved=bool(saved)) from None


@click.command("load")
@click.argument("file", type=PIPELINE)
@click.option("--to", "url", metavar="URL", help="The device (default: from salesmgr.toml).")
@common_options
def load(
    file: str, url: str | None, secret: str | None, config_path: Path | None,
    timeout: float | None, as_json: bool,
) -> None:
    """Load the device with the desktop pipeline FILE (the morning step).

    A new device (nothing loaded, or an empty pipeline) just gets it; a device holding changes
    this desktop has not seen refuses: sync first.  FILE is not changed."""
    config = site_config_of(file, config_path)
    result = load_device(
        file, config, url, secret, timeout,
        watch=lambda link, desktop: progress(link, file, desktop, as_json),
    )
    show(result, as_json)
    refused = refused_in([result])
    if refused is not None:
        raise refused


@click.command("sync")
@click.argument("file", type=PIPELINE)
@click.option("--from", "url", metavar="URL", help="The device (default: from salesmgr.toml).")
@click.option(
    "--policy", metavar="NAME", help="How true conflicts are decided (default: field-merge)."
)
@click.option("--dry-run", is_flag=True, help="Show what the sync would do; write nothing.")
@click.option(
    "--allow-mass-change",
    is_flag=True,
    help="Write even if the sync deletes or overwrites more than half of either side's "
    "records, or deletes every record left on a side.",
)
@common_options
def sync(
    file: str, url: str | None, policy: str | None, dry_run: bool, allow_mass_change: bool,
    secret: str | None, config_path: Path | None, timeout: float | None, as_json: bool,
) -> None:
    """Pull the device's changes into FILE, merge, and send back what the device lacks.

    Only what changed since the two last met crosses the link; the desktop file is saved before
    the device gets anything, so an interrupted sync is finished by the next one.  Over
    folder://, entries of the folder that are refused (too large, unsealed, damaged) are left in
    place and named; the exit status is then 8 if the rest was synced, 7 if nothing was."""
    config = site_config_of(file, config_path)
    results = sync_device(
        file, config, url, policy, dry_run, allow_mass_change, secret, timeout,
        watch=lambda link, desktop: progress(link, file, desktop, as_json),
    )
    show_all(results, as_json)
    refused = refused_in(results)
    if refused is not None:  # what was taken is saved; a script must still see the refusals
        raise refused


@click.command("pair")
def pair() -> None:
    """Print a new, strong pairing secret for a desktop and its device.

    Give the same secret to both ends: the device's --secret (or SALESMGR_SECRET), and the
    desktop's SALESMGR_SECRET (or the variable its salesmgr.toml names).  Secrets weaker than
    128 bits are refused by every command (docs/integrators.md, "Security model")."""
    click.echo(auth.new_secret())


def interrupted(file: str | Path, *, saved: bool) -> Interrupted:
    """Ctrl-C during a sync: say whether the device's changes are already in the desktop file
    (it is saved before anything is sent back) and that the next sync finishes the rest."""
    if saved:
        return Interrupted(
            f"interrupted after {file} was saved: it already holds the device's changes; the "
            "device may not have all of the merge yet, and the next sync finishes the rest"
        )
    return Interrupted(
        f"interrupted before {file} was saved: nothing changed on this side; the next sync "
        "starts over"
    )
