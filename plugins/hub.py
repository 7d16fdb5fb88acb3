"""The hub: many devices syncing at once against pipelines in a database, over the existing
protocol.  ``salesmgr hub serve STORE --on tcps://HOST:PORT``.

A hub keeps no state of its own: the paired devices, the pipelines and every version live in the
database (`salesmgr.plugins.store_sql`), so several hub processes — on one machine or many —
can serve one PostgreSQL database, and a team grows by adding hub processes.  Each session runs
on a worker thread; it holds its pipeline (the store's lock) from reading to saving, exactly as
``salesmgr sync`` does, so two devices syncing one pipeline at once are merged one after the
other and an office edit made meanwhile waits instead of being lost.

Pairing: ``salesmgr hub pair`` records the device and a fresh random *pairing id*; the device's
credential is ``HMAC-SHA256(hub key, name + pairing id)`` — computed again by any hub holding the
key, stored nowhere (the database holds no secret at all; the key file stays with the hubs).
Pairing a device again gives it a new credential; ``hub revoke`` stamps it revoked.

The device speaks first, once, before the protocol's HELLO (the *hub preamble*,
docs/protocol.md): ``SMHUB1`` and a JSON object ``{"device": NAME, "pipeline": NAME}``.  The hub
answers ``OK`` and then plays the desktop's side of a sync, or ``NO`` and one line saying why (an
unknown or revoked device, a pipeline it was not paired with) and closes.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path
from typing import Any

from salesmgr import storage
from salesmgr.errors import ConfigError, SalesmgrError, SyncError
from salesmgr.model.pipeline import now_ms
from salesmgr.plugin.interfaces import Link, Listener
from salesmgr.plugin.manager import Registry, get_registry
from salesmgr.plugins.store_sql import DeviceRow, SqlStore
from salesmgr.sync.device_file import DeviceFile
from salesmgr.sync.session import DesktopSession, DeviceSession
from salesmgr.sync.transports import live_transport

PREAMBLE = b"SMHUB1"
ACCEPTED = b"OK"
REFUSED = b"NO "
KEY_BYTES = 32
DEVICE_LABEL = b"salesmgr hub device credential\x00"


# --- the hub's key and the devices' credentials ---------------------------------------------


def read_key(path: Path, *, create: bool = False) -> bytes:
    """The hub key in ``path`` (hex); with ``create``, a new random one if there is none."""
    if create and not path.exists():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another pair made it meanwhile: read theirs
        except OSError as problem:
            raise ConfigError(f"{path}: cannot create the hub key ({problem.strerror})") from None
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(KEY_BYTES) + "\n")
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no hub key (salesmgr hub pair makes one)") from None
    except OSError as problem:
        raise ConfigError(f"{path}: cannot read the hub key ({problem.strerror})") from None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise ConfigError(f"{path}: not a hub key ({KEY_BYTES * 2} hex digits)")
    return key


def credential(key: bytes, device: DeviceRow) -> str:
    """What the device proves it knows (its pairing secret): derived, never stored."""
    message = DEVICE_LABEL + device.name.encode() + b"\x00" + device.pairing.encode()
    return hmac.new(key, message, sha256).hexdigest()


def database_store(address: str, registry: Registry | None = None) -> SqlStore:
    """The database store of a hub's STORE address (a file cannot keep devices)."""
    if "#" in address:
        raise ConfigError(f"{address}: a hub serves a whole database; leave out '#NAME'")
    store = storage.store_for(address, registry)
    if not isinstance(store, SqlStore):
        raise ConfigError(f"{address}: a hub needs a database (sqlite:///... or "
                          "postgresql://...), not a pipeline file")
    return store


def pairable(address: str, pipelines: tuple[str, ...]) -> SqlStore:
    """The database at ``address``, once it proves to hold every pipeline of ``pipelines``."""
    store = database_store(address)
    for pipeline in pipelines:
        storage.open_pipeline(f"{address}#{pipeline}")  # one that does not exist fails here
    return store


def pair(address: str, name: str, pipelines: tuple[str, ...], key: bytes) -> str:
    """Pair ``name`` (again) for ``pipelines``; returns its new credential."""
    store = pairable(address, pipelines)
    device = DeviceRow(name, secrets.token_hex(16), pipelines, now_ms())
    store.put_device(address, device)
    return credential(key, device)


# --- the preamble ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ask:
    device: str
    pipeline: str


def preamble(ask: Ask) -> bytes:
    return PREAMBLE + json.dumps({"device": ask.device, "pipeline": ask.pipeline}).encode()


def parse_preamble(data: bytes) -> Ask:
    if not data.startswith(PREAMBLE):
        raise SyncError("the device did not introduce itself (not a salesmgr hub client)")
    try:
        body = json.loads(data[len(PREAMBLE):])
        return Ask(str(body["device"]), str(body["pipeline"]))
    except (ValueError, KeyError, TypeError):
        raise SyncError("the device's introduction is malformed") from None


# --- the hub -----------------------------------------------------------------------------------


@dataclass
class Hub:
    """Serves sessions for the devices paired with the database at ``address``."""

    address: str
    key: bytes
    timeout: float
    policy: str = "field-merge"
    workers: int = 32
    registry: Registry = field(default_factory=get_registry)
    log: Callable[[str], None] = print
    complain: Callable[[str], None] = print
    sessions: int = 0
    failures: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _count: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.store = database_store(self.address, self.registry)
    def serve(self, listener: Listener) -> None:
        """Accept devices until `stop`; then finish the sessions under way (drain) and return."""
        with ThreadPoolExecutor(self.workers, thread_name_prefix="hub-session") as pool:
            while not self._stop.is_set():
                try:
                    link = listener.accept(timeout=0.2)
                except TimeoutError:
                    continue
                except SalesmgrError as error:
                    if self._stop.is_set():
                        break
                    self.complain(str(error))
                    continue
                pool.submit(self.session, link)
        # Leaving the with block waited for every session already accepted.

    def stop(self) -> None:
        """Stop accepting (safe in a signal handler); sessions under way finish."""
        self._stop.set()

    def session(self, link: Link) -> None:
        started = time.monotonic()
        ask: Ask | None = None
        try:
            ask = parse_preamble(link.receive(self.timeout))
            device = self.admit(ask)
            link.send(ACCEPTED)
            address = f"{self.address}#{ask.pipeline}"
            database = Stopwatch()  # the database's share of the session (bench/hub.py)
            with database.timing(), storage.exclusive(address):
                desktop = storage.open_pipeline(address)
                database.pause()
                result = DesktopSession(
                    link, credential(self.key, device), timeout=self.timeout,
                    registry=self.registry,
                ).sync(desktop, save=database.around(
                    lambda merged: storage.save_pipeline(merged, address)), policy=self.policy)
                database.resume()
            with database.timing():
                self.store.mark_device(self.address, device.name, "last_sync", now_ms())
            self.done(True)
            self.log(f"{ask.device} {ask.pipeline}: {result.records_received} received, "
                     f"{result.records_sent} sent in {time.monotonic() - started:.3f} s "
                     f"(database {database.seconds:.3f} s)")
        except Refusal as refusal:
            self.done(False)
            self.complain(f"refused {ask.device if ask else '?'}: {refusal}")
            try:
                link.send(REFUSED + str(refusal).encode())
            except SalesmgrError:
                pass
        except SalesmgrError as error:
            self.done(False)
            who = f"{ask.device} {ask.pipeline}" if ask else "a device"
            self.complain(f"{who}: {error}")
        finally:
            link.close()

    def admit(self, ask: Ask) -> DeviceRow:
        """The paired device asking, or a Refusal saying why not (read fresh: stateless)."""
        return admitted(ask, self.store.device_row(self.address, ask.device))

    def done(self, ok: bool) -> None:
        with self._count:
            self.sessions += 1
            self.failures += not ok


class Stopwatch:
    """Time spent in the database during one session: locking, reading, saving, stamping."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._since: float | None = None

    def resume(self) -> None:
        self._since = time.monotonic()

    def pause(self) -> None:
        if self._since is not None:
            self.seconds += time.monotonic() - self._since
            self._since = None

    @contextmanager
    def timing(self) -> Iterator[None]:
        self.resume()
        try:
            yield
        finally:
            self.pause()

    def around(self, work: Callable[[Any], None]) -> Callable[[Any], None]:
        def timed(argument: Any) -> None:
            with self.timing():
                work(argument)
        return timed


class Refusal(SyncError):
    """The hub will not serve this device (unknown, revoked, another pipeline)."""


def admitted(ask: Ask, device: DeviceRow | None) -> DeviceRow:
    """``device`` (the row paired under the name asking), if it may sync the pipeline asked
    for; else a Refusal saying why not.  Every carrier (a live link, a folder) asks this."""
    if device is None:
        raise Refusal(f"device {ask.device!r} is not paired with this hub")
    if device.revoked_at is not None:
        raise Refusal(f"device {ask.device!r} was revoked")
    if ask.pipeline not in device.pipelines:
        raise Refusal(f"device {ask.device!r} is not paired for pipeline {ask.pipeline!r}")
    return device


# --- the device's side: call the hub -----------------------------------------------------------


def sync_with_hub(
    device_file: Path, url: str, device: str, pipeline: str, secret: str, *, timeout: float,
    options: Mapping[str, Any] | None = None, registry: Registry | None = None,
) -> Any:
    """Connect to the hub at ``url`` as ``device`` and sync ``device_file`` with ``pipeline``
    (a device with nothing loaded gets the whole pipeline); the device's SessionResult."""
    registry = registry or get_registry()
    store = DeviceFile(device_file, registry)
    transport = live_transport(url, registry)
    link = transport.connect(url, {**(options or {}), "timeout": timeout})
    try:
        link.send(preamble(Ask(device, pipeline)))
        answer = link.receive(timeout)
        if answer.startswith(REFUSED):
            raise SyncError(f"the hub refused: {answer[len(REFUSED):].decode(errors='replace')}")
        if answer != ACCEPTED:
            raise SyncError("the hub's answer is malformed")
        with storage.exclusive(device_file):
            return DeviceSession(link, secret, store, timeout=timeout, registry=registry).serve()
    finally:
        link.close()

