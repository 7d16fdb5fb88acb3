"""In-memory links for tests (the project's and plugin authors'): a pair of message `Link`s and
a null-modem pair of byte streams for the serial link."""

from __future__ import annotations

import queue
import threading

from salesmgr.errors import SyncError


class MemoryLink:
    """One end of an in-process Link pair (see `memory_link_pair`)."""

    channel_binding = b""

    def __init__(self, name: str) -> None:
        self.name = name
        self.inbox: queue.Queue[bytes | None] = queue.Queue()
        self.peer: MemoryLink | None = None
        self.bytes_sent = 0
        self.bytes_received = 0
        self.closed = False

    def send(self, message: bytes) -> None:
        if self.closed or self.peer is None or self.peer.closed:
            raise SyncError(f"{self.name}: the link is closed")
        self.bytes_sent += len(message)
        self.peer.inbox.put(bytes(message))

    def receive(self, timeout: float) -> bytes:
        try:
            message = self.inbox.get(timeout=timeout)
        except queue.Empty:
            raise SyncError(f"{self.name}: no message within {timeout:.3g} s") from None
        if message is None:
            self.inbox.put(None)  # stays closed for later reads
            raise SyncError(f"{self.name}: the other end closed the link")
        self.bytes_received += len(message)
        return message

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.peer is not None:
                self.peer.inbox.put(None)


def memory_link_pair() -> tuple[MemoryLink, MemoryLink]:
    """Two connected in-memory Links: (desktop end, device end)."""
    a, b = MemoryLink("desktop link"), MemoryLink("device link")
    a.peer, b.peer = b, a
    return a, b


class _Pipe:
    def __init__(self) -> None:
        self.data = bytearray()
        self.cond = threading.Condition()
        self.closed = False


class MemoryEnd:
    """One end of a `null_modem`: reads what the other end writes, like a socket."""

    def __init__(self, inbound: _Pipe, outbound: _Pipe, timeout: float = 0.05) -> None:
        self._in = inbound
        self._out = outbound
        self.timeout = timeout

    def read(self, size: int = 1) -> bytes:
        with self._in.cond:
            if not self._in.data:  # after a hang-up nothing comes: wait like a quiet line
                self._in.cond.wait(self.timeout)
            chunk = bytes(self._in.data[:size])
            del self._in.data[:size]
            return chunk

    def write(self, data: bytes) -> int:
        with self._out.cond:
            if not self._out.closed:  # else nobody listens: the bytes are lost, as on a cable
                self._out.data += data
                self._out.cond.notify_all()
            return len(data)

    def close(self) -> None:
        for pipe in (self._in, self._out):
            with pipe.cond:
                pipe.closed = True
                pipe.cond.notify_all()


def null_modem(timeout: float = 0.05) -> tuple[MemoryEnd, MemoryEnd]:
    """Two connected in-memory byte streams, like a null-modem cable between two ports.

    After either end is closed, what is written is lost and nothing more arrives, as when a
    cable is pulled; wrap an end in `salesmgr.testing.faults.FaultyStream` to make the cable noisy.
    """
    a, b = _Pipe(), _Pipe()
    return MemoryEnd(a, b, timeout), MemoryEnd(b, a, timeout)
