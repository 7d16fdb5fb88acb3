"""``salesmgr hub``: serve many devices from a database, and pair, list and revoke them."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from salesmgr.cli.group import warn
from salesmgr.cli.views import output_mode, plain_table
from salesmgr.errors import ConfigError, UnknownRecordError
from salesmgr.plugin.interfaces import MailboxTransport
from salesmgr.plugin.manager import get_registry
from salesmgr.sync.channel import DEFAULT_TIMEOUT
from salesmgr.sync.transports import live_transport, transport_for

if TYPE_CHECKING:
    from salesmgr.plugins import hub as hubs

# The hub's modules (sessions, mailboxes, the database stores) are imported by the commands that
# use them: every other command (merge, list...) loads this module to register it, not them.

KEY_FILE = "salesmgr-hub.key"
INTERVAL = 1.0  # seconds between looks at the devices' folders (hub serve --on folder://)

key_option = click.option(
    "--key-file", type=click.Path(dir_okay=False, path_type=Path), default=KEY_FILE,
    show_default=True, envvar="SALESMGR_HUB_KEY_FILE",
    help="The hub key every hub of this database shares (credentials are derived from it; "
    "$SALESMGR_HUB_KEY_FILE).",
)
store_argument = click.argument("store", metavar="STORE")


@click.group("hub")
def hub() -> None:
    """Serve many devices from one database (SQLite or PostgreSQL); pair them one by one."""


@hub.command("serve")
@store_argument
@click.option("--on", "url", required=True, metavar="URL",
              help="Where devices reach the hub: tcps://HOST:PORT (or tcp://; port 0 picks one), "
              "or folder:///PATH (each device's mirrored folder in PATH/DEVICE/PIPELINE).")
@key_option
@click.option("--tls-cert", type=click.Path(dir_okay=False), help="Certificate, for tcps://.")
@click.option("--tls-key", type=click.Path(dir_okay=False), help="Its private key, for tcps://.")
@click.option("--policy", default="field-merge", show_default=True, metavar="NAME",
              help="Who wins a true conflict.")
@click.option("--workers", type=click.IntRange(min=1), default=32, show_default=True,
              help="Sessions served at once.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=DEFAULT_TIMEOUT,
              show_default=True, help="Seconds to wait for each message from a device.")
@click.option("--interval", type=click.FloatRange(min=0, min_open=True),
              default=INTERVAL, show_default=True,
              help="For folder://: seconds between looks at the devices' folders.")
def serve(store: str, url: str, key_file: Path, tls_cert: str | None, tls_key: str | None,
          policy: str, workers: int, timeout: float, interval: float) -> None:
    """Sync every paired device that calls, against the pipelines in STORE (a database).

    The first line on stdout is "listening on URL".  The hub keeps nothing of its own: run as
    many as you like on one database.  With folder:///PATH the hub looks every --interval
    seconds into PATH/DEVICE/PIPELINE, the mirrored folder of each paired device, and syncs
    there as `salesmgr sync --from` would, sealed with that device's credential.  SIGTERM stops
    accepting, lets the sessions under way finish, and exits."""
    from salesmgr.plugins import hub as hubs
    from salesmgr.plugins import hub_folder as hub_folders
    registry = get_registry()
    registry.policy(policy)
    # The database is reached now: a wrong address stops the hub before it listens.
    hubs.database_store(store, registry).device_rows(store)
    key = hubs.read_key(key_file)
    server = hubs.Hub(store, key, timeout, policy, workers, registry, log=click.echo,
                      complain=lambda text: click.echo(f"salesmgr hub: {text}", err=True))
    options: dict[str, Any] = {"timeout": timeout}
    for name, value in (("tls_cert", tls_cert), ("tls_key", tls_key)):
        if value is not None:
            options[name] = value
    transport = transport_for(url, registry)
    if isinstance(transport, MailboxTransport):
        if tls_cert or tls_key:
            raise ConfigError(f"--tls-cert and --tls-key are for tcps://, not {url}")
        folders = hub_folders.FolderHub(server, transport, url, options)
        click.echo(f"listening on {folders.check()}")
        with stopped_by_signals(server):
            folders.serve(interval)
    else:
        listener = live_transport(url, registry).listen(url, options)
        click.echo(f"listening on {listener.url}")
        try:
            with stopped_by_signals(server):
                server.serve(listener)
        finally:
            listener.close()
    click.echo(f"stopped after {server.sessions} sessions ({server.failures} failed)")


@contextmanager
def stopped_by_signals(server: hubs.Hub) -> Iterator[None]:
    """SIGTERM and SIGINT stop ``server`` (it drains) while the block runs."""
    handlers: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            handlers[signum] = signal.signal(signum, lambda *_: server.stop())
    try:
        yield
    finally:
        for signum, previous in handlers.items():
            signal.signal(signum, previous)


@hub.command("pair")
@store_argument
@click.option("--device", "name", required=True, help="The device's name (unique in STORE).")
@click.option("--pipeline", "pipelines", required=True, multiple=True, metavar="NAME",
              help="A pipeline of STORE it may sync (repeatable).")
@key_option
def pair(store: str, name: str, pipelines: tuple[str, ...], key_file: Path) -> None:
    """Pair a device (again): prints its credential, the secret to give that device alone.

    Pairing again replaces its credential; the old one stops working."""
    from salesmgr.plugins import hub as hubs
    pipelines = tuple(dict.fromkeys(pipelines))
    hubs.pairable(store, pipelines)  # a wrong address makes no key file
    credential = hubs.pair(store, name, pipelines, hubs.read_key(key_file, create=True))
    click.echo(credential)


def when(ms: int | None) -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


@hub.command("devices")
@store_argument
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def devices(store: str, as_json: bool) -> None:
    """List the paired devices, their pipelines and their last sync."""
    from salesmgr.plugins import hub as hubs
    rows = [
        {"device": d.name, "pipelines": list(d.pipelines), "paired": when(d.paired_at),
         "last_sync": when(d.last_sync), "revoked": when(d.revoked_at)}
        for d in hubs.database_store(store).device_rows(store)
    ]
    if as_json or output_mode(False) == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    columns = ("device", "pipelines", "paired", "last_sync", "revoked")
    cells = [[",".join(r["pipelines"]) if c == "pipelines" else str(r[c]) for c in columns]
             for r in rows]
    click.echo(plain_table(columns, cells), nl=False)


@hub.command("revoke")
@store_argument
@click.option("--device", "name", required=True, help="The device to shut out.")
def revoke(store: str, name: str) -> None:
    """End one device's access; the others are untouched."""
    from salesmgr.model.pipeline import now_ms
    from salesmgr.plugins import hub as hubs

    database = hubs.database_store(store)
    device = database.device_row(store, name)
    if device is None:
        raise UnknownRecordError(f"no device {name!r} is paired with {store}")
    if device.revoked_at is not None:
        warn(f"device {name!r} was already revoked")
        return
    database.mark_device(store, name, "revoked_at", now_ms())
    click.echo(f"revoked {name}")
