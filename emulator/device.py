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


class DeviceEmulator:
    """Plays a mobile device: answers sessions from desktops on a Listener, one at a time."""

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
        self._link: Link | None = None

    def serve(self, listener: Listener, *, once: bool = False) -> int:
        """Answer desktops until `stop` (0), or with ``once`` until one session ended (its code).

        A failed session is reported and the loop goes on: a device outlives a bad desktop."""
        while not self._stop.is_set():
            try:
                link = listener.accept(timeout=POLL)
            except TimeoutError:
                continue
            except SyncError as error:  # a desktop came but its link could not be set up
                self.complain(str(error))
                if once:
                    return error.exit_code
                continue
            code = self.answer(link)
            if once:
                return code
        return 0

    def answer(self, link: Link) -> int:
        self._link = link
        try:
            if self._stop.is_set():
                return 0
            session = DeviceSession(
                link, self.secret, self.store, timeout=self.timeout, registry=self.registry
            )
            with holding(self.store):
                result = session.serve()
        except SalesmgrError as error:
            self.failures += 1
            self.complain(f"session failed: {error}")
            return error.exit_code
        finally:
            self._link = None
            self.sessions += 1
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
        """End the loop; a session in progress is cut (the device file stays whole).

        Safe to call from a signal handler: it takes no lock."""
        self._stop.set()
        link = self._link
        if link is not None:
            link.close()


def holding(store: DeviceStore) -> AbstractContextManager[None]:
    """Keep a device file locked for a whole session or round, so that a `salesmgr edit` of
    it cannot slip in between the session's read and its save (the edit waits, or says why)."""
    if isinstance(store, DeviceFile):
        return storage.exclusive(store.path)
    return nullcontext()
