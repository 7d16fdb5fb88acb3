"""Byte-level fault injection, shared by every transport.

A `FaultyStream` sits between a link and its raw byte stream (a socket, a serial port, a pty) and
damages what *this* side writes: it cuts the line after N bytes, goes silent after N bytes, flips
one byte, or garbles and drops bytes at random like a noisy serial line.  The emulator's
``--fault`` options and the end-to-end tests use it to prove that an interrupted or noisy sync
never loses anything.  Offsets count the bytes this side offered to write, from 0.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from typing import Any, Protocol

from salesmgr.errors import ConfigError, SyncError


@dataclass(frozen=True)
class Faults:
    disconnect_after: int | None = None  # close the link after this side wrote N bytes
    stall_after: int | None = None  # after N bytes, writes are accepted but nothing more is sent
    corrupt_at: int | None = None  # flip every bit of the byte at offset N of this side's output
    noise: float = 0.0  # each written byte is garbled with this probability
    drop: float = 0.0  # each written byte is lost with this probability
    seed: int | None = None  # makes noise and drop repeatable

    @classmethod
    def parse(cls, specs: Iterable[str]) -> Faults:
        """Faults from ``NAME=VALUE`` specs such as ``disconnect-after=100`` or ``noise=0.01``.

        A spec may hold several faults separated by commas (``noise=0.02,seed=7``).
        """
        known = {f.name.replace("_", "-"): f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for spec in specs:
            for item in spec.split(","):
                item = item.strip()
                if not item:
                    continue
                name, sep, text = item.partition("=")
                key = known.get(name.strip().lower().replace("_", "-"))
                if key is None:
                    raise ConfigError(
                        f"unknown fault {name.strip()!r} in {item!r} "
                        f"(known: {', '.join(sorted(known))})"
                    )
                if not sep or not text.strip():
                    raise ConfigError(f"fault {item!r} needs a value: {name.strip()}=VALUE")
                if key in values:
                    raise ConfigError(f"fault {name.strip()!r} is given twice")
                values[key] = _parse_value(key, text.strip(), item)
        return cls(**values)

    def __bool__(self) -> bool:
        return self != Faults()

    def stream_filter(self) -> Callable[[Any], Any] | None:
        """The transports' ``stream-filter`` option that injects these faults (None: none)."""
        return (lambda stream: FaultyStream(stream, self)) if self else None

    def __str__(self) -> str:
        parts = [
            f"{f.name.replace('_', '-')}={getattr(self, f.name)}"
            for f in fields(self)
            if getattr(self, f.name) != f.default
        ]
        return ",".join(parts) or "none"


def _parse_value(key: str, text: str, item: str) -> int | float:
    if key in ("noise", "drop"):
        try:
            rate = float(text)
        except ValueError:
            raise ConfigError(f"fault {item!r}: {text!r} is not a rate") from None
        if not 0.0 <= rate <= 1.0:
            raise ConfigError(f"fault {item!r}: the rate must be between 0 and 1")
        return rate
    try:
        number = int(text)
    except ValueError:
        raise ConfigError(f"fault {item!r}: {text!r} is not a whole number") from None
    if number < 0 and key != "seed":
        raise ConfigError(f"fault {item!r}: a byte count cannot be negative")
    return number


class RawStream(Protocol):
    """What `FaultyStream` wraps: a socket, a serial port, a pty, another stream."""

    def read(self, size: int, /) -> bytes: ...

    def write(self, data: bytes, /) -> int | None: ...

    def close(self) -> None: ...


class FaultyStream:
    """A byte stream that applies `Faults` to what this side writes; reads pass through.

    ``raw`` needs ``read(n)``, ``write(data)`` and ``close()``; its other attributes (``timeout``,
    ``fileno``...) are reached through this wrapper.  After an injected disconnect, ``raw`` is
    closed and every read or write raises `SyncError`; ``raw.close()`` should end a read blocked
    in another thread (or ``raw`` should have a read timeout) so that the reader notices.
    """

    def __init__(self, raw: RawStream, faults: Faults) -> None:
        self.raw = raw
        self.faults = faults
        self.offset = 0  # bytes offered to write so far
        self._cut = False
        self._lock = threading.Lock()
        self._random = random.Random(faults.seed)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("timeout", "write_timeout") and "raw" in self.__dict__:
            setattr(self.raw, name, value)
        else:
            super().__setattr__(name, value)

    @property
    def disconnected(self) -> bool:
        """True once an injected disconnect has cut the line."""
        return self._cut

    def _cut_error(self) -> SyncError:
        return SyncError(
            f"link cut by an injected fault: disconnect-after={self.faults.disconnect_after}"
        )

    def read(self, size: int = 1) -> bytes:
        if self._cut:
            raise self._cut_error()
        try:
            return bytes(self.raw.read(size))
        except (OSError, ValueError):
            if self._cut:  # closed under a blocked read by our own disconnect
                raise self._cut_error() from None
            raise

    def write(self, data: bytes) -> int:
        data = bytes(data)
        with self._lock:
            if self._cut:
                raise self._cut_error()
            start = self.offset
            limit = self.faults.disconnect_after
            cut = limit is not None and start + len(data) >= limit
            if cut and limit is not None:
                data = data[: max(0, limit - start)]
            self.offset += len(data)
            out = self._damage(data, start)
            _write_all(self.raw, out)
            if cut:
                self._cut = True
                self.raw.close()
                raise self._cut_error()
            return len(data)

    def _damage(self, data: bytes, start: int) -> bytes:
        f = self.faults
        if f.stall_after is not None:
            data = data[: max(0, f.stall_after - start)]
        if not data:
            return data
        out = bytearray(data)
        if f.corrupt_at is not None and 0 <= f.corrupt_at - start < len(out):
            out[f.corrupt_at - start] ^= 0xFF
        if f.noise or f.drop:
            rng = self._random
            kept = bytearray()
            for byte in out:
                draw = rng.random()
                if draw < f.drop:
                    continue
                if draw < f.drop + f.noise:
                    byte ^= rng.randrange(1, 256)
                kept.append(byte)
            out = kept
        return bytes(out)

    def flush(self) -> None:
        flush = getattr(self.raw, "flush", None)
        if flush is not None and not self._cut:
            flush()

    def close(self) -> None:
        with self._lock:
            if not self._cut:
                self.raw.close()


def _write_all(raw: RawStream, data: bytes) -> None:
    while data:
        written = raw.write(data)
        if written is None:  # file-like objects that write everything (socket.sendall style)
            return
        if written <= 0:
            raise SyncError("the line accepts no more bytes")
        data = data[written:]
