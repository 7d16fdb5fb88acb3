"""Reading and saving pipelines: the one place commands load and save them, through the store
an address names (a file, a database: `salesmgr_register_stores`), and the file primitives the
pipeline-file store and the transports build on: codec choice, atomic replace, backups, locks,
copy detection.

A file remembers where it lives (host and real path).  Opened anywhere else it is a copy — a
device loaded the old way, a file mailed to a laptop — and becomes a replica of its own before
anything is written, so two copies never mint the same version (see docs/sync-model.md).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from contextlib import AbstractContextManager, contextmanager
from functools import partial
from io import BufferedIOBase
from pathlib import Path
from typing import IO

from salesmgr.errors import PipelineFileError
from salesmgr.model.pipeline import Pipeline
from salesmgr.plugin.interfaces import Store
from salesmgr.plugin.manager import Registry, get_registry

MAX_FILE = (1 << 32) + 4096
LOCK_WAIT = 10.0  # seconds an edit waits for a sync (or another edit) of the same file

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; atomic replace still keeps files whole
    fcntl = None  # type: ignore[assignment]


def home_of(path: str | os.PathLike[str]) -> str:
    return f"{socket.gethostname()}:{os.path.realpath(path)}"


def too_large(size: int) -> str | None:
    """Why a pipeline file of ``size`` bytes is not read at all, or None."""
    if size > MAX_FILE:
        return f"is {size} bytes, too large for a pipeline file (at most {MAX_FILE})"
    return None


def read_file(path: str | os.PathLike[str], registry: Registry | None = None) -> Pipeline:
    """The pipeline in the file at ``path``: its size is checked against `MAX_FILE` (and by
    the codec against what its envelope declares) before it is read, and it is read in bounded
    pieces (`Codec.read`), never whole."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            problem = too_large(size)
            if problem:
                raise PipelineFileError(path, problem)
            return read_stream(handle, size, str(path), registry)
    except FileNotFoundError:
        raise PipelineFileError(path, "no such file") from None
    except IsADirectoryError:
        raise PipelineFileError(path, "is a directory, not a pipeline file") from None
    except PermissionError:
        raise PipelineFileError(path, "permission denied") from None
    except OSError as problem:
        raise PipelineFileError(path, f"cannot read ({problem.strerror or problem})") from None


def read_stream(
    stream: BufferedIOBase, size: int, source: str, registry: Registry | None = None
) -> Pipeline:
    """The pipeline in the ``size`` bytes of ``stream`` (at its start), by the codec its first
    bytes name."""
    head = stream.read(64)
    stream.seek(0)
    for codec in (registry or get_registry()).codecs:
        if codec.sniff(head):
            return codec.read(stream, size, source)
    if not size:
        raise PipelineFileError(source, "is empty, not a pipeline file")
    raise PipelineFileError(source, "not a salesmgr pipeline file")


def decode(data: bytes, source: str, registry: Registry | None = None) -> Pipeline:
    """The pipeline in ``data`` (a drop's or a message's records)."""
    return read_stream(io.BytesIO(data), len(data), source, registry)


def encode(pipeline: Pipeline, registry: Registry | None = None) -> bytes:
    return (registry or get_registry()).writer_codec().encode(pipeline)


def load(path: str | os.PathLike[str], registry: Registry | None = None) -> Pipeline:
    """Read a pipeline; a copy found away from its home becomes a new replica (in memory)."""
    pipeline = read_file(path, registry)
    settle_home(pipeline, home_of(path))
    return pipeline


def settle_home(pipeline: Pipeline, here: str) -> bool:
    """A pipeline read at ``here`` that was saved elsewhere is a copy: it becomes a replica of its
    own (in memory) before anything is written.  True when it did (a new replica id)."""
    if pipeline.home == here:
        return False
    if not pipeline.home:  # never saved anywhere: it lives here from now on
        pipeline.home = here
        return False
    pipeline.fork(here)
    return True


# A header entry, and what makes its value of the file written without it (`Codec.write_signed`).
Signer = tuple[str, Callable[[Callable[[IO[bytes]], None]], str]]


def save(
    pipeline: Pipeline,
    path: str | os.PathLike[str],
    registry: Registry | None = None,
    *,
    backup: bool = True,
    signed: Signer | None = None,
) -> None:
    """Replace ``path`` atomically (temporary file, fsync, rename), keeping the old one as .bak.

    The codec writes the file straight into the temporary file (`Codec.write`); ``signed``,
    a header entry and what computes it from the file without it, makes it sign the file
    (a paired device seals its file: `salesmgr.sync.wire.auth.sealing`)."""
    pipeline.home = home_of(path)
    codec = (registry or get_registry()).writer_codec()
    if signed is None:
        write_atomic(path, partial(codec.write, pipeline), backup=backup)
    else:
        entry, sign = signed
        write_atomic(
            path, partial(codec.write_signed, pipeline, entry=entry, sign=sign), backup=backup
        )
    pipeline.forked_from = ""  # the file holds its identity now


def write_atomic(
    path: str | os.PathLike[str],
    data: bytes | Callable[[IO[bytes]], object],
    *,
    backup: bool = True,
) -> None:
    """Replace ``path`` with ``data`` — bytes, or what writes them into the file it is given —
    through a temporary file, fsync and rename, keeping the old file as .bak.  Whatever goes
    wrong, the old file stays as it was and the temporary file is removed; an OSError is
    reported as PipelineFileError, anything else (a pipeline that cannot be saved) as it is."""
    # Through a symbolic link to the file it names: replacing the link itself would leave the
    # real file without the change (and make FILE.bak a link).
    target = Path(os.path.realpath(path))
    folder = target.parent if str(target.parent) else Path(".")
    try:
        fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    except OSError as problem:
        raise PipelineFileError(path, f"cannot write ({problem.strerror or problem})") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            if callable(data):
                data(handle)
            else:
                handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if target.exists():
            os.chmod(temp, target.stat().st_mode & 0o7777)
            if backup:
                bak = target.with_name(target.name + ".bak")
                # A hard link keeps the old file whole as .bak without a second copy.
                tmp_bak = target.with_name(f".{target.name}.bak.tmp")
                if tmp_bak.exists():
                    tmp_bak.unlink()
                try:
                    os.link(target, tmp_bak)
                except OSError:
                    tmp_bak.write_bytes(target.read_bytes())
                os.replace(tmp_bak, bak)
        else:
            os.chmod(temp, 0o666 & ~umask())
        os.replace(temp, target)
        fsync_folder(folder)
    except BaseException as problem:
        try:
            os.unlink(temp)
        except OSError:
            pass
        if isinstance(problem, OSError):
            raise PipelineFileError(
                path, f"cannot write ({problem.strerror or problem})"
            ) from None
        raise


def umask() -> int:
    """The process's file-creation mask (reading it means setting it; it is put back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_folder(folder: str | os.PathLike[str]) -> None:
    """Make a rename in ``folder`` durable (best effort: some file systems refuse)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def lock_folder() -> str:
    """The private folder that holds the locks of this user's pipeline files.

    Not beside the files (a sync tool may mirror their folder) and never a name under /tmp that
    another user could create first: ``$XDG_RUNTIME_DIR/salesmgr-locks`` (a folder only the
    user may use, by the XDG rules), else ``$XDG_CACHE_HOME/salesmgr/locks`` (by default
    ``~/.cache/salesmgr/locks``).  Either must be a real folder (not a link) owned by the user
    and closed to everyone else, or no lock is taken and the command stops: running unlocked,
    or waiting on someone else's lock, is what an attacker would want."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime):
        folder = os.path.join(runtime, "salesmgr-locks")
    else:
        cache = os.environ.get("XDG_CACHE_HOME")
        if not cache or not os.path.isabs(cache):
            cache = os.path.join(os.path.expanduser("~"), ".cache")
        folder = os.path.join(cache, "salesmgr", "locks")
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        info = os.lstat(folder)
    except OSError as problem:
        raise PipelineFileError(
            folder, f"cannot make the folder for locks ({problem.strerror or problem})"
        ) from None
    owner = os.getuid() if hasattr(os, "getuid") else info.st_uid
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != owner or info.st_mode & 0o077:
        raise PipelineFileError(
            folder,
            "the folder for salesmgr's locks is not private (it must be a folder of yours that "
            f"no one else may use: chmod 700, or remove it); found mode {info.st_mode & 0o7777:o}, "
            f"owner {info.st_uid}",
        )
    return folder


def lock_path_of(real_path: str) -> str:
    """Where the lock of a pipeline file lives: in `lock_folder`, named after its real path."""
    digest = hashlib.sha256(real_path.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return os.path.join(lock_folder(), f"{digest}.lock")


_held: dict[tuple[str, int], int] = {}
_held_guard = threading.Lock()


@contextmanager
def lock_file(path: str | os.PathLike[str], wait: float | None = None) -> Iterator[None]:
    """Hold the advisory lock of a pipeline file while reading, changing and saving it.

    Saves are atomic anyway; the lock is what stops two processes (an edit and the emulator's
    sync, two syncs from cron) from both reading the old file and one losing the other's work.
    The lock file lives outside the pipeline's folder (which a sync tool may mirror), named
    after the file's real path."""
    # Re-entrant for the thread holding it; another thread waits like another process would.
    key = (os.path.realpath(path), threading.get_ident())
    with _held_guard:
        if key in _held:
            _held[key] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            with _held_guard:
                _held[key] -= 1
        return
    if fcntl is None:
        yield
        return
    lock = lock_path_of(key[0])
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as problem:
        raise PipelineFileError(
            path, f"cannot take its lock {lock} ({problem.strerror or problem})"
        ) from None
    try:
        deadline = time.monotonic() + (LOCK_WAIT if wait is None else wait)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise PipelineFileError(
                        path, "is in use by another salesmgr process (a sync or an edit); "
                        "try again when it has finished"
                    ) from None
                time.sleep(0.05)
        with _held_guard:
            _held[key] = 1
        try:
            yield
        finally:
            with _held_guard:
                del _held[key]
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


# -- the ways commands use a pipeline, wherever it lives ----------------------------------------

SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
FILE_SCHEME = "file"


def scheme_of(address: str | os.PathLike[str]) -> str:
    """The URL scheme of a store address; a plain path is a ``file`` address."""
    found = SCHEME.match(os.fspath(address))
    return found.group(1).lower() if found else FILE_SCHEME


def store_for(address: str | os.PathLike[str], registry: Registry | None = None) -> Store:
    return (registry or get_registry()).store(scheme_of(address))


def canonical(address: str | os.PathLike[str]) -> str:
    """One spelling of an address (to order locks, to tell two addresses apart)."""
    return store_for(address).canonical(os.fspath(address))


def label(address: str | os.PathLike[str]) -> str:
    return store_for(address).label(os.fspath(address))


def local_file(address: str | os.PathLike[str]) -> Path | None:
    return store_for(address).local_file(os.fspath(address))


def exclusive(address: str | os.PathLike[str]) -> AbstractContextManager[None]:
    """Hold the pipeline at ``address`` against every other writer while it is read, changed and
    saved (re-entrant within a thread).

    Saves are atomic anyway; this is what stops two writers (an edit and a device's sync, two
    syncs from cron, two hubs) from both reading the old pipeline and one losing the other's
    work."""
    return store_for(address).exclusive(os.fspath(address))


def version_of(address: str | os.PathLike[str]) -> Hashable | None:
    """The store's mark of the pipeline's current state (`Store.version`): equal marks, same
    pipeline; None when the store cannot tell."""
    return store_for(address).version(os.fspath(address))


def open_pipeline(address: str | os.PathLike[str]) -> Pipeline:
    """Read a pipeline; raises PipelineFileError naming the address and the problem."""
    return store_for(address).read(os.fspath(address))


def save_pipeline(pipeline: Pipeline, address: str | os.PathLike[str]) -> None:
    """Replace the pipeline at ``address`` in one transaction (a file keeps ``.bak``)."""
    store_for(address).save(os.fspath(address), pipeline)


def create_pipeline(pipeline: Pipeline, address: str | os.PathLike[str]) -> None:
    """Store a new pipeline at ``address``; never overwrites one."""
    store_for(address).create(os.fspath(address), pipeline)


@contextmanager
def editing_pipeline(address: str | os.PathLike[str]) -> Iterator[Pipeline]:
    """Open a pipeline for changes and save it when the block ends without an error.

    Nothing is written when the block raises, or when it wrote nothing (no new version).  The
    pipeline is held meanwhile, so a sync or another edit cannot interleave and lose this one."""
    with exclusive(address):
        pipeline = open_pipeline(address)
        before = pipeline.counter
        yield pipeline
        if pipeline.counter != before:
            save_pipeline(pipeline, address)
