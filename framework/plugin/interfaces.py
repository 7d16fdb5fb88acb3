"""The interfaces plugins implement: a codec, a live link, a mailbox, a transport, a store, a
merge policy.

The core talks to every plugin through these; it never names a particular one.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from contextlib import AbstractContextManager
from io import BufferedIOBase
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NamedTuple, Protocol

if TYPE_CHECKING:
    from salesmgr.merge.engine import Conflict, FieldOutcome
    from salesmgr.model.pipeline import Pipeline


class Codec:
    """Reads and writes one pipeline file format (one major version of it)."""

    format: str = "pipeline"
    version: tuple[int, int] = (1, 0)
    help: str = ""

    def sniff(self, head: bytes) -> bool:
        """True when ``head`` (the file's first bytes) starts a file of this format."""
        raise NotImplementedError

    def decode(self, data: bytes, source: str) -> Pipeline:
        """The pipeline in ``data``; raises PipelineFileError naming ``source`` if it is bad."""
        raise NotImplementedError

    def read(self, stream: BufferedIOBase, size: int, source: str) -> Pipeline:
        """The pipeline in the ``size`` bytes of ``stream`` (a binary file at its start, which
        may be seeked); raises PipelineFileError naming ``source``.  The caller has checked
        ``size`` against its cap.  A codec that can check its envelope against ``size`` and
        read the rest in bounded pieces does (the built-in one); by default the whole file is
        read and decoded."""
        return self.decode(stream.read(size), source)

    def expected_size(self, head: bytes) -> int | None:
        """The whole file's size as its first bytes (at least 64, when the file has them)
        declare it, or None when they do not say: lets a reader refuse a file whose size is a
        lie before reading all of it."""
        return None

    def encode(self, pipeline: Pipeline) -> bytes:
        raise NotImplementedError

    def write(self, pipeline: Pipeline, stream: IO[bytes]) -> None:
        """Write the file's bytes (`encode`'s) to ``stream``, a binary file open for writing
        and seeking, at the position the file starts.  A codec that can build the file as it
        writes it does (the built-in one: no copy of the file is made in memory); by default
        `encode`'s bytes are written."""
        stream.write(self.encode(pipeline))

    def write_signed(
        self,
        pipeline: Pipeline,
        stream: IO[bytes],
        entry: str,
        sign: Callable[[Callable[[IO[bytes]], None]], str],
    ) -> None:
        """`write` the file with header entry ``entry`` (`Pipeline.extra`) set to what
        ``sign`` makes of the file without that entry (a paired replica's seal): ``sign`` is
        handed a function that writes that file into the stream it is given (one that need
        not seek).  The entry is set on ``pipeline`` too.  By default the file is encoded
        twice; a codec that can build both from one encoding of the records does."""
        extra = pipeline.extra
        claimed = extra.pop(entry, None)
        try:
            unsigned = self.encode(pipeline)
        finally:
            if claimed is not None:
                extra[entry] = claimed

        def write_unsigned(out: IO[bytes]) -> None:
            out.write(unsigned)

        extra[entry] = sign(write_unsigned)
        self.write(pipeline, stream)

    @property
    def name(self) -> str:
        return f"{self.format}-v{self.version[0]}"


class Link(Protocol):
    """A duplex, ordered, reliable channel of whole messages between desktop and device.

    A link whose `close` may wait (to deliver what is queued) also has ``abort()``: cut at once,
    callable from any thread or a signal handler, so that a stopping device never waits."""

    bytes_sent: int
    bytes_received: int
    # What the pairing handshake binds itself to, the same at both ends of one connection and
    # different across a relay: for a TLS link the SHA-256 of the device's certificate (as
    # each end sees it), b"" for a link with nothing to bind to.
    channel_binding: bytes

    def send(self, message: bytes) -> None:
        """Send one message; raises SyncError when the link is gone."""

    def receive(self, timeout: float) -> bytes:
        """The next message; raises SyncError on timeout, a closed or a broken link."""

    def close(self) -> None: ...


class Listener(Protocol):
    """The device end waiting for the desktop."""

    url: str  # the real address, e.g. with the port the system picked for port 0
    # True when several links may be open at once (a network port); False when a new accept
    # ends the previous link (one serial line).
    concurrent: bool

    def accept(self, timeout: float | None = None) -> Link: ...

    def close(self) -> None: ...


class Mail(NamedTuple):
    """One entry of a `Mailbox`, as read."""

    data: bytes  # its bytes, at most the ``limit`` asked for
    size: int  # its whole size (more than ``len(data)`` when cut at the limit)
    age: float  # seconds since it last changed: a young, incomplete entry may still be arriving


class Opened(NamedTuple):
    """One entry of a `Mailbox`, opened to be read in pieces."""

    stream: BufferedIOBase  # at the entry's start; seekable; the caller closes it
    size: int  # its size when opened: a reader checks it against its cap before reading on
    age: float  # as `Mail.age`


class Mailbox(Protocol):
    """A store-and-forward drop box shared by desktop and device (``folder://``).

    The two ends never talk at the same time: each leaves whole entries (drops, see
    `salesmgr.sync.wire.drops`) for the other and picks up what the other left.  Entry names are
    plain
    names, never paths; a mailbox refuses any other name and never reaches outside itself."""

    url: str  # the real address, e.g. ``folder:///home/ana/Mirror``

    def entries(self) -> dict[str, object]:
        """The entries now in the box, each with a token that changes whenever it does;
        entries still being written under a temporary name are left out."""

    def read(self, name: str, limit: int) -> Mail | None:
        """Entry ``name``, or None if it is gone; raises SyncError for an entry it must not read
        (a link, not a regular file)."""

    def open(self, name: str) -> Opened | None:
        """Entry ``name`` opened for reading, or None if it is gone; raises SyncError as
        `read` does.  Nothing is read yet: a reader checks the size before it reads."""

    def write(self, name: str, data: bytes) -> None:
        """Leave ``data`` as entry ``name``, atomically: whole or not at all."""

    def remove(self, name: str) -> None:
        """Take entry ``name`` away; one already gone is not an error."""

    def home(self, name: str) -> str:
        """Where entry ``name`` lives, as a pipeline file's home (for files dropped by hand)."""

    def close(self) -> None: ...


class Transport:
    r"""A live transport: carries a sync session over a duplex link for one URL scheme
    (``tcp://``, ``serial://``): the desktop `connect`\ s, the device `listen`\ s.

    Where desktop and device are never connected at once, a transport is a `MailboxTransport`
    instead; ``register`` takes either kind."""

    scheme: str = ""
    help: str = ""

    def connect(self, url: str, options: Mapping[str, Any]) -> Link:
        """Desktop side: open the link to the device at ``url``."""
        raise NotImplementedError

    def listen(self, url: str, options: Mapping[str, Any]) -> Listener:
        """Device side: wait for the desktop at ``url`` (the emulator uses this)."""
        raise NotImplementedError


class MailboxTransport:
    """A store-and-forward transport for one URL scheme (``folder://``): desktop and device are
    never connected at once, so both sides open the same `Mailbox` and exchange drops through it
    (`salesmgr.sync.mailbox`)."""

    scheme: str = ""
    help: str = ""

    def open_mailbox(self, url: str, options: Mapping[str, Any]) -> Mailbox:
        """Both sides: the drop box at ``url``."""
        raise NotImplementedError


AnyTransport = Transport | MailboxTransport
class Store:
    """Where pipelines live, for the addresses of its URL schemes: a pipeline file, a database.

    An address is ``SCHEME://...`` (a plain path is a ``file`` address); one store may hold many
    pipelines, told apart by the address (``sqlite:///office.db#emea``).  Every command reads and
    saves a pipeline through `salesmgr.storage`, which picks the store by the address's scheme.

    Writers never lose each other's work: `exclusive` holds the pipeline against every other
    writer (in any process) while it is read, changed and saved; a `save` inside it is one
    transaction, durable when it returns.  A store raises `PipelineFileError` naming the address
    for anything wrong with it."""

    schemes: tuple[str, ...] = ()
    help: str = ""

    def canonical(self, address: str) -> str:
        """The address in one spelling (real paths, no password): equal for the same pipeline,
        used to order locks and in messages."""
        raise NotImplementedError

    def label(self, address: str) -> str:
        """A short name for the pipeline at ``address`` (a new pipeline's default name)."""
        raise NotImplementedError

    def local_file(self, address: str) -> Path | None:
        """The file on this machine the pipeline lives in, if any (a site config sits beside
        it); None for a server."""
        return None

    def exists(self, address: str) -> bool:
        raise NotImplementedError

    def read(self, address: str) -> Pipeline:
        """The pipeline at ``address``; a copy found away from its home becomes a replica of its
        own (in memory), as `salesmgr.storage.load` does for files."""
        raise NotImplementedError

    def create(self, address: str, pipeline: Pipeline) -> None:
        """Store a new pipeline; refuses when ``address`` already holds one."""
        raise NotImplementedError

    def save(self, address: str, pipeline: Pipeline) -> None:
        """Replace the pipeline at ``address`` in one transaction (durable on return)."""
        raise NotImplementedError

    def exclusive(self, address: str) -> AbstractContextManager[None]:
        """Hold the pipeline against every other writer; re-entrant within a thread."""
        raise NotImplementedError

    def version(self, address: str) -> Hashable | None:
        """A cheap mark of the pipeline's current state (a file's inode, size and time; a
        database's revision), different after every save, so a long-running reader (``salesmgr
        web``) reads the pipeline again only when it changed.  None when the store cannot tell
        (the reader then reads it every time) or the pipeline cannot be reached."""
        return None


STREAM_FILTER = "stream-filter"


def filtered_stream(stream: Any, options: Mapping[str, Any]) -> Any:
    """The raw byte stream of a connection as the caller asked to see it.

    A transport passes each connection's raw stream (socket, serial port) through this before
    framing it.  ``options["stream-filter"]``, when given, is a callable that takes the stream and
    returns one with the same ``read``/``write``/``close`` methods; the emulator uses it to inject
    line faults (`salesmgr.testing.faults`) without any transport knowing about them."""
    wrap = options.get(STREAM_FILTER)
    return wrap(stream) if wrap is not None else stream


class MergePolicy:
    """Decides true conflicts: both sides changed the same thing differently."""

    name: str = ""
    help: str = ""
    # True when the policy decides whole records (newest-record, keep-both), not single fields.
    record_level: bool = False

    def resolve(self, conflict: Conflict) -> FieldOutcome:
        raise NotImplementedError
