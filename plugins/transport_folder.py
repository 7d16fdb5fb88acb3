"""The shared-folder transport: ``folder://PATH``, store and forward (the ActiveSync way).

A mirroring tool (ActiveSync then, any file-sync tool today) copies the device's files to a
folder on the PC and back; desktop and device never talk at the same time.  This plugin only
does the file mechanics of that folder as a `salesmgr.plugin.interfaces.Mailbox`; what is exchanged
and
in which order is `salesmgr.sync.mailbox`.

The folder is a boundary, so nothing outside it is ever read or written:

- entry names are plain names — no ``/``, no ``..``, no absolute names, nothing hidden;
- entries are opened with ``O_NOFOLLOW`` (a symbolic link is refused, never followed) and must be
  regular files, and the real path of every name must stay inside the folder's real path;
- an entry is written under a temporary hidden name in the folder, flushed, then renamed over
  the final name: a reader sees the whole entry or none of it.  Hidden and temporary names
  (``.x``, ``x.tmp``, ``x.part``, ``x.partial``, ``x.crdownload``, ``x~``) are never listed, so
  a file that a mirroring tool is still copying under such a name is never read.

URL: ``folder:///absolute/path`` (or ``folder://relative/path``, from the current folder; ``~``
is expanded).  The folder must exist.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import Any

from salesmgr import storage
from salesmgr.errors import SyncError
from salesmgr.plugin.hookspecs import hookimpl
from salesmgr.plugin.interfaces import (
    STREAM_FILTER,
    AnyTransport,
    Mail,
    MailboxTransport,
    Opened,
)

PREFIX = "folder://"
TEMPORARY_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", "~")
MAX_NAME = 255


def folder_of(url: str) -> str:
    """The real path of the folder a ``folder://`` URL names."""
    if not url.lower().startswith(PREFIX):
        raise SyncError(f"{url!r} is not a folder URL (expected folder:///path/to/folder)")
    raw = url[len(PREFIX) :]
    if not raw:
        raise SyncError(f"{url!r} names no folder (expected folder:///path/to/folder)")
    real = os.path.realpath(os.path.expanduser(raw))
    if not os.path.exists(real):
        raise SyncError(f"{url}: no such folder (is the device's folder mirrored there?)")
    if not os.path.isdir(real):
        raise SyncError(f"{url}: not a folder")
    return real


def is_temporary(name: str) -> bool:
    return name.startswith(".") or name.endswith(TEMPORARY_SUFFIXES) or name.startswith("~$")


class FolderMailbox:
    """A folder on this machine as a `Mailbox`."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.url = PREFIX + root

    def path_of(self, name: str) -> str:
        """The path of entry ``name``, after checking the name cannot leave the folder."""
        if (
            not name
            or len(name) > MAX_NAME
            or name in (".", "..")
            or any(c in name for c in "/\\\0")
            or os.path.isabs(name)
            or name.startswith(".")
        ):
            raise SyncError(f"{self.url}: refused the entry name {name!r} (not a plain name)")
        path = os.path.join(self.root, name)
        real = os.path.realpath(path)
        if os.path.dirname(real) != self.root and not os.path.islink(path):
            raise SyncError(f"{self.url}: refused {name!r}: it leads out of the folder")
        return path

    def entries(self) -> dict[str, object]:
        found: dict[str, object] = {}
        try:
            listing = list(os.scandir(self.root))
        except OSError as problem:
            raise SyncError(
                f"{self.url}: cannot list the folder ({problem.strerror or problem})"
            ) from None
        for entry in listing:
            if is_temporary(entry.name):
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue  # gone meanwhile
            # Links are listed so that reading them is refused out loud, not silently skipped.
            if stat.S_ISREG(info.st_mode) or stat.S_ISLNK(info.st_mode):
                found[entry.name] = (info.st_size, info.st_mtime_ns, info.st_ino, info.st_mode)
        return found

    def read(self, name: str, limit: int) -> Mail | None:
        opened = self.open(name)
        if opened is None:
            return None
        with opened.stream:
            try:
                data = opened.stream.read(min(opened.size, limit))
            except OSError as problem:
                raise SyncError(
                    f"{self.url}/{name}: cannot read ({problem.strerror or problem})"
                ) from None
        return Mail(data, opened.size, opened.age)

    def open(self, name: str) -> Opened | None:
        path = self.path_of(name)
        where = f"{self.url}/{name}"
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            return None
        except OSError as problem:
            if problem.errno == errno.ELOOP or os.path.islink(path):
                raise SyncError(
                    f"{where}: is a symbolic link; refused (links are never followed, so "
                    "nothing outside the folder is read)"
                ) from None
            raise SyncError(f"{where}: cannot read ({problem.strerror or problem})") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise SyncError(f"{where}: not a regular file; refused")
            stream = os.fdopen(fd, "rb")
        except BaseException as problem:
            os.close(fd)
            if isinstance(problem, OSError):
                raise SyncError(f"{where}: cannot read ({problem.strerror or problem})") from None
            raise
        return Opened(stream, info.st_size, max(0.0, time.time() - info.st_mtime))

    def write(self, name: str, data: bytes) -> None:
        path = self.path_of(name)
        where = f"{self.url}/{name}"
        try:
            # mkstemp opens with O_EXCL (and O_NOFOLLOW): it never writes through a link.
            fd, temp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=self.root)
        except OSError as problem:
            raise SyncError(f"{where}: cannot write ({problem.strerror or problem})") from None
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temp, 0o666 & ~storage.umask())
            # A rename replaces a link itself, never its target.
            os.replace(temp, path)
            storage.fsync_folder(self.root)
        except OSError as problem:
            try:
                os.unlink(temp)
            except OSError:
                pass
            raise SyncError(f"{where}: cannot write ({problem.strerror or problem})") from None

    def remove(self, name: str) -> None:
        path = self.path_of(name)
        try:
            os.unlink(path)  # removes a link itself, never its target
        except FileNotFoundError:
            pass
        except OSError as problem:
            raise SyncError(
                f"{self.url}/{name}: cannot remove ({problem.strerror or problem})"
            ) from None

    def home(self, name: str) -> str:
        return storage.home_of(self.path_of(name))

    def close(self) -> None:
        pass  # nothing held open between calls


class FolderTransport(MailboxTransport):
    scheme = "folder"
    help = "shared folder, store and forward: folder:///PATH (a mirrored folder of the device)"

    def open_mailbox(self, url: str, options: Mapping[str, Any]) -> FolderMailbox:
        if options.get(STREAM_FILTER):
            raise SyncError(
                "--fault damages a byte stream (tcp, serial); folder:// has none"
            )
        return FolderMailbox(folder_of(url))


@hookimpl
def salesmgr_register_transports(register: Callable[[AnyTransport], None]) -> None:
    register(FolderTransport())
