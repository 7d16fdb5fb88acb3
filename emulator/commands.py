"""``salesmgr emulator serve``: the software device, added to the command line as a plugin."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import click

from salesmgr.cli.site_config import resolve_secret
from salesmgr.emulator.device import DeviceEmulator
from salesmgr.emulator.device_path import DEVICE_FILE
from salesmgr.errors import PipelineFileError
from salesmgr.plugin.interfaces import STREAM_FILTER, Listener, Mailbox, MailboxTransport
from salesmgr.plugin.manager import get_registry
from salesmgr.sync.channel import DEFAULT_TIMEOUT
from salesmgr.sync.device_file import DeviceFile
from salesmgr.sync.transports import transport_for
from salesmgr.sync.wire import auth
from salesmgr.testing.faults import Faults


@click.group("emulator")
def emulator() -> None:
    """Play a mobile device, for trying salesmgr out and for integration tests."""


@emulator.command("serve")
@click.argument("device_file", type=DEVICE_FILE)
@click.option(
    "--on",
    "url",
    required=True,
    metavar="URL",
    help="Where to wait for the desktop: tcp://HOST:PORT (port 0 picks a free one), "
    "tcps://HOST:PORT, serial-pty, folder://PATH (a mirrored folder: watched, store and "
    "forward).",
)
@click.option("--secret", help="Pairing secret (default: $SALESMGR_SECRET).")
@click.option("--once", is_flag=True, help="Stop after one session.")
@click.option(
    "--fault",
    "faults",
    multiple=True,
    metavar="NAME=VALUE",
    help="Damage what the device sends: disconnect-after=BYTES, stall-after=BYTES, "
    "corrupt-at=BYTES (repeatable).",
)
@click.option("--baud", type=click.IntRange(min=1), help="Line speed, for serial transports.")
@click.option("--tls-cert", type=click.Path(dir_okay=False), help="Certificate, for tcps://.")
@click.option("--tls-key", type=click.Path(dir_okay=False), help="Its private key, for tcps://.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_TIMEOUT,
    show_default=True,
    help="Seconds to wait for each message from the desktop.",
)
@click.pass_context
def serve(
    ctx: click.Context,
    device_file: Path,
    url: str,
    secret: str | None,
    once: bool,
    faults: tuple[str, ...],
    baud: int | None,
    tls_cert: str | None,
    tls_key: str | None,
    timeout: float,
) -> None:
    """Hold the pipeline DEVICE_FILE and answer the device side of syncs and loads.

    A missing DEVICE_FILE is a new device with nothing loaded yet.  The first line on stdout is
    "listening on URL" with the real address; the emulator runs until SIGTERM or, with
    --once, until one session ends."""
    secret = resolve_secret(secret)
    parsed_faults = Faults.parse(faults)
    registry = get_registry()
    store = DeviceFile(device_file, registry, secret=auth.secret_bytes(secret))
    if not device_file.parent.resolve().is_dir():
        raise PipelineFileError(device_file, "its folder does not exist")
    store.load()  # a damaged device file is reported now, not at the first sync
    options: dict[str, Any] = {
        STREAM_FILTER: parsed_faults.stream_filter(),
        "timeout": timeout,
    }
    for key, value in (("baud", baud), ("tls_cert", tls_cert), ("tls_key", tls_key)):
        if value is not None:
            options[key] = value
    transport = transport_for(url, registry)
    mailbox: Mailbox | None = None
    listener: Listener | None = None
    if isinstance(transport, MailboxTransport):  # no session to wait for, a mailbox to watch
        mailbox = transport.open_mailbox(url, options)
        where = mailbox.url
    else:
        listener = transport.listen(url, options)
        where = listener.url
    device = DeviceEmulator(
        store,
        secret,
        timeout=timeout,
        registry=registry,
        log=click.echo,
        complain=lambda message: click.echo(f"salesmgr emulator: {message}", err=True),
    )
    click.echo(f"listening on {where}")  # click.echo flushes: tests wait for this line
    handlers: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            handlers[signum] = signal.signal(signum, lambda *_: device.stop())
    try:
        if mailbox is not None:
            code = device.serve_mailbox(mailbox, once=once)
        else:
            assert listener is not None
            code = device.serve(listener, once=once)
    finally:
        for signum, previous in handlers.items():
            signal.signal(signum, previous)
        for endpoint in (mailbox, listener):
            if endpoint is not None:
                endpoint.close()
    click.echo(f"stopped after {device.sessions} sessions ({device.failures} failed)")
    ctx.exit(code)


@emulator.command("hub-sync")
@click.argument("device_file", type=DEVICE_FILE)
@click.option("--hub", "url", required=True, metavar="URL", help="The hub: tcps://HOST:PORT.")
@click.option("--device", "name", required=True, help="This device's name, as paired.")
@click.option("--pipeline", required=True, help="The pipeline of the hub's database to sync.")
@click.option("--secret", help="This device's credential (default: $SALESMGR_SECRET).")
@click.option("--tls-ca", type=click.Path(dir_okay=False), help="CA to trust, for tcps://.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=DEFAULT_TIMEOUT,
              show_default=True, help="Seconds to wait for each message from the hub.")
def hub_sync(device_file: Path, url: str, name: str, pipeline: str, secret: str | None,
             tls_ca: str | None, timeout: float) -> None:
    """Call a hub as a paired device and sync DEVICE_FILE with one of its pipelines (a device
    with nothing loaded gets all of it)."""
    from salesmgr.plugins.hub import sync_with_hub

    options = {"tls_ca": tls_ca} if tls_ca else {}
    result = sync_with_hub(device_file, url, name, pipeline, resolve_secret(secret),
                           timeout=timeout, options=options)
    click.echo(f"synced with {url}: {result.records_received} received, "
               f"{result.records_sent} sent")


def _add_day() -> None:
    # Imported here, not at the top: day.py builds on the pipeline model, serve does not need it.
    from salesmgr.emulator.day import day_command

    emulator.add_command(day_command)


_add_day()
