"""The serial cradle transport: ``serial://PORT`` for the desktop, ``serial-pty`` for the emulator.

Every port is opened with pyserial's ``serial_for_url``, so besides device paths
(``serial:///dev/ttyUSB0``, ``serial://COM3``) any pyserial URL works after ``serial://``:
``serial://socket://HOST:PORT`` (a cradle behind a terminal server), ``serial://rfc2217://HOST:PORT``,
``serial://loop://``.  Query options: ``baud`` (default 115200) and ``timeout`` (seconds without
any sign of life before the line counts as dead, default 10); other query items are left for
pyserial (``serial://socket://host:7000?logging=debug``).

The device side (the emulator) listens on a pseudo-terminal, ``serial-pty``, and prints
``serial:///dev/pts/N`` for the desktop to open; a pty has no speed of its own, so with a
``baud`` option the device paces what it sends to what a real line carries.  Messages cross the
line through the link layer of `salesmgr.plugins.serial_link`.
"""

from __future__ import annotations

import errno
import os
import select
import threading
import time
import tty
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import serial

    from salesmgr.plugins.serial_link import LinkSettings, SerialLink, Stream

from salesmgr.errors import SyncError
from salesmgr.plugin.hookspecs import hookimpl
from salesmgr.plugin.interfaces import AnyTransport, Transport, filtered_stream

SCHEME = "serial"
PTY_SCHEME = "serial-pty"
DEFAULT_BAUD = 115200
READ_WAIT = 0.05  # a read returns after this long with nothing, so closing is noticed quickly
STUCK_WRITE = 1.0  # a pty nobody reads loses what is written after this long, as a line would


@dataclass(frozen=True)
class SerialAddress:
    """What a ``serial://`` (or ``serial-pty``) URL names."""

    port: str  # what pyserial opens: "/dev/ttyUSB0", "COM3", "socket://host:7000", or "" (pty)
    baud: int | None = None
    timeout: float | None = None

    @property
    def is_pty(self) -> bool:
        return not self.port


def parse_url(url: str) -> SerialAddress:
    """The port, baud and timeout named by a ``serial://`` or ``serial-pty`` URL."""
    if url.startswith(PTY_SCHEME):
        rest = url[len(PTY_SCHEME) :].removeprefix(":").removeprefix("//")
        if rest and not rest.startswith("?"):
            raise SyncError(f"{url!r}: serial-pty takes no port, only ?baud=N&timeout=S")
        port = ""
        query = rest[1:]
    elif url.startswith(f"{SCHEME}://"):
        port, _, query = url[len(SCHEME) + 3 :].partition("?")
        if not port:
            raise SyncError(
                f"{url!r} names no port: use serial:///dev/ttyUSB0, serial://COM3 or "
                "serial://socket://HOST:PORT"
            )
    else:
        raise SyncError(f"{url!r} is not a serial URL (serial://PORT or serial-pty)")
    baud: int | None = None
    timeout: float | None = None
    passed_on = []
    for item in query.split("&") if query else ():
        key, _, value = item.partition("=")
        if key == "baud":
            baud = _baud(value, url)
        elif key == "timeout":
            timeout = _timeout(value, url)
        else:
            passed_on.append(item)
    if passed_on:
        if port.startswith("/") or "://" not in port:
            raise SyncError(f"{url!r}: unknown option {passed_on[0].partition('=')[0]!r}")
        port = f"{port}?{'&'.join(passed_on)}"
    return SerialAddress(port, baud, timeout)


def _baud(value: Any, where: str) -> int:
    try:
        baud = int(value)
    except (TypeError, ValueError):
        baud = 0
    if baud <= 0:
        raise SyncError(f"{where}: baud must be a positive whole number, not {value!r}")
    return baud


def _timeout(value: Any, where: str) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = 0.0
    if not seconds > 0:
        raise SyncError(f"{where}: timeout must be a positive number of seconds, not {value!r}")
    return seconds


def _settings(address: SerialAddress, options: Mapping[str, Any], baud: int | None) -> LinkSettings:
    """Link settings: the URL's query wins over options, which win over the defaults."""
    # The link layer is imported by the commands that open a line (every one settles its
    # settings here first), not by every command that registers the transport.
    from salesmgr.plugins.serial_link import DEAD_AFTER, PAYLOAD_SIZE, LinkSettings, wire_size

    timeout = address.timeout
    if timeout is None and options.get("timeout") is not None:
        timeout = _timeout(options["timeout"], "timeout option")
    dead_after = timeout or DEAD_AFTER
    if baud:  # a slow line needs time for a few full frames before it can look dead
        dead_after = max(dead_after, 8 * wire_size(PAYLOAD_SIZE) * 10 / baud)
    return LinkSettings(dead_after=dead_after, baud=baud)


def _option_baud(address: SerialAddress, options: Mapping[str, Any]) -> int | None:
    if address.baud is not None:
        return address.baud
    if options.get("baud") is not None:
        return _baud(options["baud"], "baud option")
    return None


def _wrap(stream: Stream, options: Mapping[str, Any], pace_baud: int | None) -> Stream:
    """The line as the link sees it: paced like a real line, then as the caller filters it."""
    if pace_baud:
        stream = PacedStream(stream, pace_baud)
    return filtered_stream(stream, options)


# --- streams ------------------------------------------------------------------------------------


class PortStream:
    """A pyserial port with the link's read semantics: what has arrived, or b"" after a wait.

    `close` may be called while another thread waits in `read`: the wait ends at once (a byte on
    a pipe wakes it), so a link closes without waiting out a read's timeout, and the port's
    descriptor is released only once no read uses it."""

    def __init__(self, port: serial.SerialBase, wait: float = READ_WAIT) -> None:
        self.port = port
        self._wait = wait
        try:
            self._fd: int | None = port.fileno()
        except (AttributeError, OSError, ValueError):
            self._fd = None  # loop://, rfc2217://: no descriptor to wait on
        # With a descriptor, select waits and the port must not; without, the port waits.
        port.timeout = 0 if self._fd is not None else wait
        self._wake: tuple[int, int] | None = os.pipe() if self._fd is not None else None
        self._reading = threading.Lock()
        self._closed = False

    def read(self, size: int) -> bytes:
        if self._fd is not None and self._wake is not None:
            with self._reading:
                if self._closed:
                    raise OSError(errno.EBADF, "the serial port is closed")
                ready = select.select([self._fd, self._wake[0]], [], [], self._wait)[0]
                if self._fd not in ready:
                    return b""
                return bytes(self.port.read(size))
        waiting = self.port.in_waiting
        if not waiting:
            first = bytes(self.port.read(1))  # waits up to the port's timeout
            waiting = self.port.in_waiting if first else 0
            return first + (bytes(self.port.read(min(size - 1, waiting))) if waiting else b"")
        return bytes(self.port.read(min(size, waiting)))

    def write(self, data: bytes) -> int | None:
        written: int | None = self.port.write(data)
        return written

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._wake is None:
            self.port.close()
            return
        os.write(self._wake[1], b"\0")  # ends a read waiting in select
        with self._reading:
            self.port.close()
            for fd in self._wake:
                os.close(fd)


class PtyMaster:
    """The device's end of a pseudo-terminal."""

    def __init__(self, fd: int, wait: float = READ_WAIT) -> None:
        self.fd = fd
        self._wait = wait
        os.set_blocking(fd, False)

    def read(self, size: int) -> bytes:
        if not select.select([self.fd], [], [], self._wait)[0]:
            return b""
        try:
            return os.read(self.fd, size)
        except BlockingIOError:
            return b""
        except OSError as error:
            if error.errno != errno.EIO:  # EIO: no one has the other end open just now
                raise
            time.sleep(self._wait)
            return b""

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        give_up = time.monotonic() + STUCK_WRITE
        while view:
            try:
                view = view[os.write(self.fd, view) :]
            except BlockingIOError:
                if time.monotonic() > give_up:
                    break  # nobody reads the line: what is sent is lost, as on a real line
                select.select([], [self.fd], [], self._wait)
        return len(data)

    def close(self) -> None:
        os.close(self.fd)


class PacedStream:
    """Lets bytes out no faster than a line of ``baud`` carries them (8N1: baud/10 bytes/s).

    Each piece is written when its last bit would have arrived, a few milliseconds of line
    time at a time; ``clock`` and ``sleep`` can be replaced to test it without waiting.
    """

    def __init__(
        self,
        raw: Stream,
        baud: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.raw = raw
        self.rate = baud / 10  # bytes per second
        self._piece = max(1, int(self.rate / 200))  # 5 ms of line time
        self._slack = 4 * self._piece / self.rate  # late wake-ups are caught up within this
        self._clock = clock
        self._sleep = sleep
        self._free_at = 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)

    def read(self, size: int) -> bytes:
        return self.raw.read(size)

    def write(self, data: bytes) -> int:
        view = memoryview(bytes(data))
        while view:
            piece, view = view[: self._piece], view[self._piece :]
            now = self._clock()
            start = self._free_at if now - self._free_at < self._slack else now
            done = start + len(piece) / self.rate
            if done > now:
                self._sleep(done - now)
            written = memoryview(piece)
            while written:
                count = self.raw.write(bytes(written))
                written = written[len(written) if count is None else count :]
            self._free_at = done
        return len(data)

    def close(self) -> None:
        self.raw.close()


class _SessionView:
    """One session's use of a line the listener keeps open: closing it leaves the line open."""

    def __init__(self, line: Stream) -> None:
        self._line = line
        self._closed = False

    def read(self, size: int) -> bytes:
        if self._closed:
            raise OSError("the serial session is over")
        return self._line.read(size)

    def write(self, data: bytes) -> int | None:
        if self._closed:
            raise OSError("the serial session is over")
        return self._line.write(data)

    def close(self) -> None:
        self._closed = True


# --- opening ports ------------------------------------------------------------------------------


def open_port(port: str, baud: int, write_timeout: float) -> PortStream:
    """A pyserial port (any ``serial_for_url`` URL) as a link stream; SyncError if it won't open."""
    import serial  # imported by the commands that open a port, not by every command

    try:
        handle = serial.serial_for_url(
            port, baudrate=baud, timeout=READ_WAIT, write_timeout=write_timeout
        )
    except (OSError, ValueError) as problem:  # SerialException is an OSError
        number = problem.errno if isinstance(problem, OSError) else None
        reason = os.strerror(number) if isinstance(number, int) else str(problem)
        raise SyncError(f"cannot open serial port {port}: {reason}") from None
    return PortStream(handle)


class SerialListener:
    """The device waiting for the desktop on a line it holds open (a pty or a pyserial port)."""

    concurrent = False  # one line, one session: a new accept ends the previous one

    def __init__(
        self,
        url: str,
        line: Stream,
        settings: LinkSettings,
        options: Mapping[str, Any],
        pace_baud: int | None,
        keep_open: tuple[int, ...] = (),
    ) -> None:
        self.url = url
        self._line = line
        self._settings = settings
        self._options = options
        self._pace_baud = pace_baud
        self._keep_open = keep_open
        self._stop = threading.Event()
        from salesmgr.plugins.serial_link import FrameReader

        self._current: SerialLink | None = None
        self._reader = FrameReader()  # kept between polls: a SYN may arrive in two reads

    def accept(self, timeout: float | None = None) -> SerialLink:
        """The next session's link, once a desktop's handshake arrives (faults start afresh).

        Raises `AcceptTimeout` (a TimeoutError and a SyncError) when no desktop came within
        ``timeout`` seconds; None waits until one comes or the listener is closed.
        """
        if self._current is not None:  # one session at a time on one line
            self._current.close()
            self._current = None
        if self._stop.is_set():
            raise SyncError(f"{self.url}: the listener is closed")
        from salesmgr.plugins.serial_link import accept_link

        stream = _wrap(_SessionView(self._line), self._options, self._pace_baud)
        try:
            self._current = accept_link(
                stream, self._settings, timeout=timeout, stop=self._stop, reader=self._reader
            )
        except SyncError:
            stream.close()
            raise
        return self._current

    def close(self) -> None:
        self._stop.set()
        if self._current is not None:
            self._current.close()
            self._current = None
        try:
            self._line.close()
        except OSError:
            pass
        for fd in self._keep_open:
            try:
                os.close(fd)
            except OSError:
                pass
        self._keep_open = ()


def listen_on_pty(
    options: Mapping[str, Any], address: SerialAddress | None = None
) -> SerialListener:
    """A new pseudo-terminal whose slave end the desktop opens as ``serial:///dev/pts/N``."""
    address = address or SerialAddress("")
    master, slave = os.openpty()
    tty.setraw(slave)  # no echo, no line editing: the line carries bytes as they are
    baud = _option_baud(address, options)
    pace = options.get("pace", True)
    return SerialListener(
        url=f"{SCHEME}://{os.ttyname(slave)}",
        line=PtyMaster(master),
        settings=_settings(address, options, baud),
        options=options,
        pace_baud=baud if pace else None,
        keep_open=(slave,),  # while one end stays open, the master never reads EIO
    )


class SerialTransport(Transport):
    scheme = SCHEME
    help = (
        "the serial cradle: serial:///dev/ttyUSB0?baud=115200, serial://COM3, or any pyserial URL "
        "(serial://socket://HOST:PORT, serial://rfc2217://HOST:PORT, serial://loop://)"
    )

    def connect(self, url: str, options: Mapping[str, Any]) -> SerialLink:
        address = parse_url(url)
        if address.is_pty:
            raise SyncError(
                "serial-pty is where the device listens: connect to the serial:///dev/pts/N "
                "it printed"
            )
        baud = _option_baud(address, options) or DEFAULT_BAUD
        settings = _settings(address, options, baud)
        port = open_port(address.port, baud, write_timeout=settings.dead_after)
        from salesmgr.plugins.serial_link import connect_link

        stream = _wrap(port, options, baud if options.get("pace", False) else None)
        try:
            return connect_link(stream, settings)
        except SyncError as problem:
            stream.close()
            raise SyncError(f"{url}: {problem}") from None

    def listen(self, url: str, options: Mapping[str, Any]) -> SerialListener:
        address = parse_url(url)
        if address.is_pty:
            return listen_on_pty(options, address)
        baud = _option_baud(address, options) or DEFAULT_BAUD
        settings = _settings(address, options, baud)
        port = open_port(address.port, baud, write_timeout=settings.dead_after)
        pace = baud if options.get("pace", False) else None
        return SerialListener(url, port, settings, options, pace)


class PtyTransport(SerialTransport):
    """``serial-pty``: the device end of an emulated cradle (the emulator's ``--on serial-pty``)."""

    scheme = PTY_SCHEME
    help = "the device end of an emulated serial cradle on a new pseudo-terminal (listen only)"


@hookimpl
def salesmgr_register_transports(register: Callable[[AnyTransport], None]) -> None:
    register(SerialTransport())
    register(PtyTransport())
