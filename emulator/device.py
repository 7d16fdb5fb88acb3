"""The emulated device's server loop: wait for a desktop, answer one session, repeat.

Every session reads the device file afresh (it may have been edited between syncs with
``salesmgr edit``) and writes it only by an atomic replace, so stopping the emulator at any
moment leaves a whole file behind.  On a store-and-forward transport (``folder://``) there is
no session to wait for: the loop looks into the mailbox every `POLL` seconds instead
(`serve_mailbox`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

from salesmgr import storage
from salesmgr.errors import SalesmgrError, SyncError
from salesmgr.plugin.interfaces import Link, Listener, Mailbox
from salesmgr.plugin.manager import Registry
from salesmgr.sync.channel import DEFAULT_TIMEOUT
from salesmgr.sync.device_file import DeviceFile, DeviceStore
from salesmgr.sync.mailbox import DeviceDrops, DeviceEvent
from salesmgr.sync.session import DeviceSession

POLL = 0.2  # seconds between looks at the stop flag while no desktop is connected
MAX_CONNECTIONS = 64  # connections answered at once; more wait in the system's queue
STOP_WAIT = 2.0  # seconds a cut session gets to end when the emulator stops


class DeviceEmulator:
    """Plays a mobile device: answers sessions from desktops on a Listener."""

    def __init__(
        self,
        store: DeviceStore,
        secret: str | bytes,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        registry: Registry | None = None,
        log: Callable[[str], None] = print,
        complain: Callable[[str], None] = print,
    ) -> None:
        self.store = store
        self.secret = secret
        self.timeout = timeout
        self.registry = registry
        self.log = log
        self.complain = complain
        self.sessions = 0
        self.failures = 0
        self._stop = threading.Event()
        self._guard = threading.Lock()
        self._links: set[Link] = set()
        self._threads: list[threading.Thread] = []
        self._codes: list[int] = []

    def serve(self, listener: Listener, *, once: bool = False) -> int:
        """Answer desktops until `stop` (0), or with ``once`` until one session ended (its code).

        Each connection is answered in a thread of its own, so that a silent or slow peer holds
        nothing but its own connection (the handshake has a deadline of its own; the device file
        is locked only once a desktop authenticated).  A failed session is reported and the loop
        goes on: a device outlives a bad desktop."""
        concurrent = bool(getattr(listener, "concurrent", False)) and not once
        try:
            while not self._stop.is_set():
                self._reap()
                if not concurrent and self._threads:
                    self._threads[0].join(POLL)  # one line: its session ends first
                    continue
                if len(self._threads) >= MAX_CONNECTIONS:
                    self._threads[0].join(POLL)
                    continue
                try:
                    link = listener.accept(timeout=POLL)
                except TimeoutError:
                    continue
                except SyncError as error:  # a desktop came but its link could not be set up
                    self.complain(str(error))
                    if once:
                        return error.exit_code
                    continue
                thread = threading.Thread(
                    target=self.answer, args=(link,), name="device-session", daemon=True
                )
                self._threads.append(thread)
                thread.start()
                if once:
                    while thread.is_alive():
                        thread.join(POLL)  # in steps, so that a signal is handled meanwhile
                    return self._codes[-1] if self._codes else 0
            return 0
        finally:
            self.stop()
            for thread in list(self._threads):
                thread.join(STOP_WAIT)

    def _reap(self) -> None:
        self._threads = [t for t in self._threads if t.is_alive()]

    def answer(self, link: Link) -> int:
        with self._guard:
            self._links.add(link)
        code = 0
        try:
            if self._stop.is_set():
                return 0
            session = DeviceSession(
                link, self.secret, self.store, timeout=self.timeout, registry=self.registry,
                hold=lambda: holding(self.store),
            )
            result = session.serve()
        except SalesmgrError as error:
            code = error.exit_code
            self.complain(f"session failed: {error}")
            return code
        finally:
            with self._guard:
                self._links.discard(link)
                self.sessions += 1
                self.failures += code != 0
                self._codes.append(code)
            link.close()
        for line in result.lines():
            self.log(line)
        return 0

    def serve_mailbox(self, mailbox: Mailbox, *, once: bool = False) -> int:
        """Take what desktops leave in ``mailbox`` and keep an offer there, until `stop` (0),
        or with ``once`` until one round ended (its code: an answer or a load committed,
        refused, or a damaged drop).  A failure is reported once and the loop goes on."""
        device = DeviceDrops(
            mailbox, self.secret, self.store, registry=self.registry, stamp=self.file_stamp
        )
        last_failure = ""
        while not self._stop.is_set():
            try:
                with holding(self.store):
                    happened = device.step()
                last_failure = ""
            except SalesmgrError as error:  # e.g. the device file became unreadable
                if str(error) == last_failure:
                    happened = []
                else:
                    last_failure = str(error)
                    happened = [DeviceEvent("failed", str(error), error.exit_code, final=True)]
            for event in happened:
                self.sessions += event.final
                if event.code:
                    self.failures += 1
                    self.complain(event.text)
                else:
                    self.log(event.text)
            ended = [e for e in happened if e.final]
            if once and ended:
                return max(e.code for e in ended)
            self._stop.wait(POLL)
        return 0

    def file_stamp(self) -> object:
        """Changes whenever the device file does (so an idle look reads nothing)."""
        if not isinstance(self.store, DeviceFile):
            return object()  # unknown store: never equal, so every look reads it
        try:
            info = os.stat(self.store.path)
        except OSError:
            return None
        return (info.st_size, info.st_mtime_ns, info.st_ino)

    def stop(self) -> None:
        """End the loop; every session in progress is cut at once (the device file stays whole).

        Safe to call from a signal handler: it waits for nothing."""
        self._stop.set()
        for link in list(self._links):
            cut = getattr(link, "abort", None) or link.close
            cut()


def holding(store: DeviceStore) -> AbstractContextManager[None]:
    """Keep a device file locked for a whole session or round, so that a `salesmgr edit` of
    it cannot slip in between the session's read and its save (the edit waits, or says why)."""
    if isinstance(store, DeviceFile):
        return storage.exclusive(store.path)
    return nullcontext()
