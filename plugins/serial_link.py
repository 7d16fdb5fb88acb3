"""The serial cradle's link layer: whole messages, over a line that loses and garbles bytes.

A serial line is a bare byte pipe, so every message is cut into numbered frames and each frame is
checked and acknowledged:

* **Framing.**  A frame is ``00 | COBS(header, payload, CRC32) | 00``.  COBS (the ``cobs``
  package) removes every zero byte from the frame, so a zero always means "frame boundary" and
  the receiver finds the next frame after any garbage.
* **Header** (little-endian): kind u8, seq u8, ack u8, tx u16, sack u32.  Every frame carries
  the receiver's state: ``ack`` is the next frame it expects (cumulative), bit *i* of ``sack``
  says it already holds frame ``ack + 1 + i``.  ``tx`` numbers each transmission of a data
  frame (first sends and repeats alike); acknowledgements echo the newest ``tx`` received, which
  gives exact round trips and, the line being first-in first-out, exact loss detection.
* **CRC32** (zlib) over header and payload, computed from the session nonce instead of 0: a
  damaged frame, or one left on the line by an earlier session, fails the check and is dropped.
* **Sliding window with selective repeat.**  Up to `WINDOW` data frames are in flight, so a slow
  line stays busy; sequence numbers count modulo 256.  A frame is sent again when a transmission
  after its own has arrived (it was lost), when the receiver reports damage right after the
  transmission before it (NAK), or when its retransmit timer runs out (adaptive, from measured
  round trips).
* **Frame size follows the line.**  Frames start small and grow to `PAYLOAD_SIZE` while the line
  is clean; when it garbles bytes they shrink so that they still get through (`FrameSizer`).
* **Session handshake.**  The desktop sends SYN (CRC from 0) carrying a random 32-bit nonce, the
  device answers SYN-ACK; FIN / FIN-ACK end a session cleanly.
* **A dead line** (nothing heard, or nothing acknowledged, for ``dead_after`` seconds) fails the
  link with a `SyncError`; an idle side sends a small keep-alive, so a quiet but healthy line
  never looks dead.

The link runs over any *stream* with ``read(n)`` (return what has arrived, at most ``n`` bytes,
or ``b""`` after a short wait), ``write(data)`` and ``close()``: a pyserial port (through
`salesmgr.plugins.transport_serial`), a pty, a socket, or the in-memory `null_modem`.
"""

from __future__ import annotations

import math
import secrets
import struct
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from cobs import cobs

from salesmgr.errors import AcceptTimeout, SyncError
from salesmgr.pieces import crc32
from salesmgr.sync.wire.limits import MAX_MESSAGE  # the protocol's cap, as for tcp://

VERSION = 1
WINDOW = 32  # frames in flight: at most the sack bitmap's 32 bits, and < 128 (seq modulo 256)
PAYLOAD_SIZE = 1024  # message bytes in a full-size frame
DEAD_AFTER = 10.0  # seconds of silence or of no acknowledgement before the line counts as dead
SEQ_MOD = 256
READ_SIZE = 4096
MAX_WIRE_FRAME = 80 << 10  # bytes without a zero beyond which we are reading noise
BACKLOG = 64 << 10  # send() blocks while more than this waits for room in the window

# Frame kinds.  DATA's low bit marks the last frame of a message; an ACK or NAK with the REPEAT
# bit echoes a transmission it has echoed before, so its round trip would be meaningless.
DATA, DATA_LAST = 0x10, 0x11
ACK, NAK, REPEAT = 0x20, 0x21, 0x02
SYN, SYN_ACK = 0x30, 0x31
FIN, FIN_ACK = 0x40, 0x41
KINDS = frozenset(
    {DATA, DATA_LAST, ACK, NAK, ACK | REPEAT, NAK | REPEAT, SYN, SYN_ACK, FIN, FIN_ACK}
)

HEADER = struct.Struct("<BBBHI")  # kind, seq, ack, tx, sack
TX_MOD = 1 << 16
CRC = struct.Struct("<I")
OVERHEAD = HEADER.size + CRC.size
PARAMS = struct.Struct("<BBH")  # in SYN and SYN-ACK: link version, window, largest payload
NONCE = struct.Struct("<I")  # SYN's payload starts with the session nonce


class Stream(Protocol):
    def read(self, size: int, /) -> bytes: ...

    def write(self, data: bytes, /) -> int | None: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Frame:
    kind: int
    seq: int = 0
    ack: int = 0
    tx: int = 0  # data: this transmission's number; others: the newest one received
    sack: int = 0
    payload: bytes = b""


def encode_frame(frame: Frame, session: int) -> bytes:
    """The frame's bytes on the line, delimiters included; SYN frames use session 0."""
    body = HEADER.pack(frame.kind, frame.seq, frame.ack, frame.tx, frame.sack) + frame.payload
    return b"\x00" + cobs.encode(body + CRC.pack(crc32(body, session))) + b"\x00"


def decode_frame(stuffed: bytes, session: int) -> Frame | None:
    """The frame between two zero bytes, or None when it is damaged or of another session.

    A SYN (checked from 0) is always recognised: it is how a new session starts.
    """
    try:
        body = cobs.decode(stuffed)
    except cobs.DecodeError:
        return None
    if len(body) < OVERHEAD:
        return None
    (crc,) = CRC.unpack_from(body, len(body) - CRC.size)
    content = body[: -CRC.size]
    kind = body[0]
    if crc32(content, session) != crc and not (kind == SYN and crc32(content) == crc):
        return None
    if kind not in KINDS:
        return None
    _, seq, ack, tx, sack = HEADER.unpack_from(body)
    return Frame(kind, seq, ack, tx, sack, bytes(content[HEADER.size :]))


class FrameReader:
    """Cuts a byte stream at zero bytes; gives each frame, or None for each damaged one."""

    def __init__(self, session: int = 0) -> None:
        self.session = session
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Frame | None]:
        buffer = self._buffer
        buffer += data
        frames: list[Frame | None] = []
        start = 0
        while (end := buffer.find(0, start)) >= 0:
            if end > start:
                frames.append(decode_frame(bytes(buffer[start:end]), self.session))
            start = end + 1
        del buffer[:start]
        if len(buffer) > MAX_WIRE_FRAME:  # no delimiter for too long: line noise, not a frame
            buffer.clear()
            frames.append(None)
        return frames


def wire_size(payload_size: int) -> int:
    """Bytes on the line for a data frame carrying ``payload_size`` bytes."""
    body = payload_size + OVERHEAD
    return body + body // 254 + 3  # COBS adds a byte per 254, plus two delimiters


class FrameSizer:
    """Picks each new frame's payload size from the loss seen on the line.

    On a line that garbles or loses each byte with probability p, a frame of w bytes arrives with
    probability (1-p)**w: at a few percent of bytes a 1 KiB frame never gets through, while small
    frames still do.  The sizer estimates p from recent frames (a frame sent again counts as
    lost) and picks the size that carries the most payload per byte sent.  It starts small and
    grows at most one doubling per window of clean frames, like TCP's slow start, so a noisy
    line is found out before large frames are committed to it (a frame keeps its size when sent
    again).
    """

    SMALLEST = 16
    DECAY = 0.98  # weight of older frames: the estimate follows the last hundred or so

    def __init__(self, largest: int, grow_after: int) -> None:
        self.largest = largest
        self.size = min(self.SMALLEST, largest)
        self._grow_after = grow_after
        self._sizes = sorted({min(largest, self.SMALLEST << k) for k in range(13)} | {largest})
        self._clean = 0
        self._frames = self._lost = self._bytes = 0.0

    def record(self, wire: int, *, arrived: bool) -> None:
        self._frames = self._frames * self.DECAY + 1
        self._lost = self._lost * self.DECAY + (0 if arrived else 1)
        self._bytes = self._bytes * self.DECAY + wire
        self._clean = self._clean + 1 if arrived else 0
        best = self.best()
        if best < self.size:
            self.size = best
        elif best > self.size and self._clean >= self._grow_after:
            self.size = min(best, self.size * 2)
            self._clean = 0

    def best(self) -> int:
        """The payload size with the best expected yield at the loss rate seen so far."""
        if self._frames == 0:
            return self.largest
        loss = min(self._lost / self._frames, 0.95)
        hazard = -math.log1p(-loss) / (self._bytes / self._frames)  # per byte

        def expected_yield(size: int) -> float:
            wire = wire_size(size)
            return size / wire * math.exp(-hazard * wire)

        return max(self._sizes, key=expected_yield)


@dataclass(slots=True)
class _Outgoing:
    seq: int  # absolute: frames counted from 0 in this session, never wrapped
    payload: bytes
    last: bool
    wire: int = 0
    order: int = 0  # its latest transmission's number (data transmissions counted from 1)
    sent_at: float = 0.0
    sacked: bool = False


@dataclass(slots=True)
class _Timing:
    """Retransmit timeout from measured round trips (RFC 6298's estimator)."""

    rto: float
    floor: float
    ceiling: float
    srtt: float | None = None
    rttvar: float = 0.0
    backoff: int = 1

    def sample(self, rtt: float) -> None:
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt
        self.rto = min(self.ceiling, max(self.floor, self.srtt + 4 * self.rttvar))

    @property
    def current(self) -> float:
        return min(self.ceiling, self.rto * self.backoff)


@dataclass(frozen=True)
class LinkSettings:
    window: int = WINDOW
    payload_size: int = PAYLOAD_SIZE
    dead_after: float = DEAD_AFTER
    baud: int | None = None  # when known, sets the first retransmit timeout and its floor

    def seconds_per_byte(self) -> float:
        """Time a byte occupies a line of this baud rate (8N1: ten bits), 0 if unknown."""
        return 10 / self.baud if self.baud else 0.0

    def check(self) -> None:
        if not 1 <= self.window <= WINDOW:
            raise SyncError(f"serial link window must be 1 to {WINDOW} frames, not {self.window}")
        if not 1 <= self.payload_size <= 0xFFFF:
            raise SyncError(
                f"serial frame payload must be 1 to 65535 bytes, not {self.payload_size}"
            )
        if not self.dead_after > 0:
            raise SyncError(f"serial line timeout must be positive, not {self.dead_after:g}")


class SerialLink:
    """One session's reliable message channel over a serial stream (a `Link`).

    Build it with `connect_link` (desktop) or `accept_link` (device), which run the handshake.
    ``bytes_sent`` and ``bytes_received`` count everything on the line, framing and repeats
    included.
    """

    channel_binding = b""  # a serial line has nothing to bind the handshake to

    def __init__(
        self,
        stream: Stream,
        session: int,
        settings: LinkSettings,
        *,
        peer: str,
        reader: FrameReader,
        early: Sequence[Frame | None] = (),
        bytes_sent: int = 0,
        bytes_received: int = 0,
    ) -> None:
        self.session = session
        self.peer = peer  # "device" on the desktop, "desktop" on the device
        self.settings = settings
        self.bytes_sent = bytes_sent
        self.bytes_received = bytes_received
        self._stream = stream
        self._window = settings.window
        self._dead_after = settings.dead_after
        self._keepalive = settings.dead_after / 10
        per_byte = settings.seconds_per_byte()
        # A low floor lets a lost frame be repaired within a few round trips: when noise makes
        # frames small, the window holds little line time.
        self._timing = _Timing(
            rto=max(0.2, 4 * wire_size(settings.payload_size) * per_byte) if per_byte else 1.0,
            floor=max(0.01, 4 * wire_size(FrameSizer.SMALLEST) * per_byte),
            ceiling=max(0.5, settings.dead_after / 4),
        )
        self._cond = threading.Condition()
        # sending side
        self._pending: deque[bytes] = deque()  # messages not yet wholly cut into frames
        self._pending_at = 0  # how much of the first one is already cut
        self._pending_bytes = 0
        self._sizer = FrameSizer(settings.payload_size, grow_after=8)
        self._unacked: dict[int, _Outgoing] = {}
        self._base = 0  # oldest unacknowledged frame
        self._next = 0  # next frame number to give out
        self._order = 0  # data transmissions so far
        self._sent_at: dict[int, float] = {}  # recent transmissions: number -> when it left
        self._seen_order = 0  # newest transmission the receiver is known to have got
        self._suspect: int | None = None  # transmission the receiver probably got damaged
        # receiving side
        self._expected = 0
        self._held: dict[int, tuple[bytes, bool]] = {}
        self._parts: list[bytes] = []
        self._parts_size = 0
        self._inbox: deque[bytes] = deque()
        self._ack_due = False
        self._damaged = False
        self._ack_again_at: float | None = None
        self._ack_again_gap = 0.0
        self._last_tx = 0  # newest transmission number received, echoed in acks
        self._echoed_tx = 0  # the one the last ack echoed
        # session state
        self._syn_ack_due = False
        self._fin_due = False
        self._fin_ack_due = False
        self._fin_acked = False
        self._peer_closed = False
        self._closing = False
        self._stopping = False
        self._failure: SyncError | None = None
        now = time.monotonic()
        self._last_heard = now
        self._last_sent = now
        self._progress_at = now
        self._frames = reader
        reader.session = session
        for frame in early:
            self._on_frame(frame, now)
        self._reader = threading.Thread(
            target=self._read_loop, name="serial-link-read", daemon=True
        )
        self._writer = threading.Thread(
            target=self._write_loop, name="serial-link-write", daemon=True
        )
        self._reader.start()
        self._writer.start()

    # --- the Link interface ---------------------------------------------------------------

    def send(self, message: bytes) -> None:
        """Queue one message; blocks while much is waiting, raises SyncError if the link is gone."""
        with self._cond:
            self._check_usable()
            self._pending.append(bytes(message))
            self._pending_bytes += len(message)
            self._cond.notify_all()
            while self._pending_bytes > BACKLOG and self._failure is None and not self._closing:
                self._cond.wait(0.25)
            self._check_usable()  # cut meanwhile: failed, aborted or closed

    def receive(self, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._inbox:
                if self._failure is not None:
                    raise self._failure
                if self._peer_closed:
                    raise SyncError(f"the {self.peer} closed the serial link")
                if self._closing:
                    raise SyncError("the serial link is closed")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise SyncError(f"no message from the {self.peer} within {timeout:g} s")
                self._cond.wait(remaining)
            return self._inbox.popleft()

    def abort(self) -> None:
        """Cut the link now, from any thread or a signal handler: every call waiting on it
        (a `send` held by a full window, a `receive`) raises at once, and nothing more is sent.
        `close` then only releases the line."""
        self._fail(SyncError("the serial link was cut (the device is stopping)"))

    def close(self) -> None:
        """Deliver what is queued (bounded by the dead-line time), say goodbye, stop."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
            deadline = time.monotonic() + self._dead_after
            while (self._pending or self._unacked) and self._usable_for_goodbye():
                if (remaining := deadline - time.monotonic()) <= 0:
                    break
                self._cond.wait(remaining)
            for _ in range(3):  # FIN or its FIN-ACK may be lost on a noisy line
                if not self._usable_for_goodbye() or self._fin_acked:
                    break
                self._fin_due = True
                self._cond.notify_all()
                # Bounded: a peer that misses the goodbye finds the line dead soon enough.
                until = time.monotonic() + min(0.35, max(0.1, 2 * self._timing.current))
                while not self._fin_acked and self._usable_for_goodbye():
                    if (remaining := until - time.monotonic()) <= 0:
                        break
                    self._cond.wait(remaining)
            until = time.monotonic() + 0.2
            while self._fin_ack_due and self._failure is None:  # answer the peer's goodbye
                if (remaining := until - time.monotonic()) <= 0:
                    break
                self._cond.wait(remaining)
            self._stopping = True
            self._cond.notify_all()
            say_goodbye = self._failure is not None and not self._peer_closed
        self._join(self._writer)
        if say_goodbye:  # our line may still carry it: spare the peer its wait for a dead line
            try:
                self._stream.write(self._control(FIN))
            except (OSError, SyncError):
                pass
        try:
            self._stream.close()  # a stream that can ends the reader's wait for bytes at once
        except OSError:
            pass
        self._join(self._reader)

    @staticmethod
    def _join(thread: threading.Thread) -> None:
        if thread is not threading.current_thread():
            thread.join(timeout=5)

    @property
    def failure(self) -> SyncError | None:
        """Why the link broke, if it did."""
        return self._failure

    @property
    def frame_size(self) -> int:
        """The payload size new frames get now (it follows the line's noise)."""
        return self._sizer.size

    # --- state helpers (called with the lock held) ------------------------------------------

    def _check_usable(self) -> None:
        if self._failure is not None:
            raise self._failure
        if self._peer_closed:
            raise SyncError(f"the {self.peer} closed the serial link")
        if self._closing:
            raise SyncError("the serial link is closed")

    def _usable_for_goodbye(self) -> bool:
        return self._failure is None and not self._peer_closed

    def _fail(self, error: SyncError) -> None:
        with self._cond:
            if self._failure is None:
                self._failure = error
            self._cond.notify_all()

    # --- receiving (reader thread) ----------------------------------------------------------

    def _read_loop(self) -> None:
        while True:
            with self._cond:
                if self._stopping or self._failure is not None:
                    return
            try:
                data = self._stream.read(READ_SIZE)
            except (SyncError, OSError) as error:
                with self._cond:
                    if self._stopping:  # closed under the read: a goodbye, not a failure
                        return
                self._fail(error if isinstance(error, SyncError)
                           else SyncError(f"the serial line failed: {error}"))
                return
            if not data:
                continue
            frames = self._frames.feed(data)
            now = time.monotonic()
            with self._cond:
                self.bytes_received += len(data)
                for frame in frames:
                    self._on_frame(frame, now)
                self._cond.notify_all()

    def _on_frame(self, frame: Frame | None, now: float) -> None:
        if frame is None:
            self._damaged = True
            return
        kind = frame.kind
        if kind == SYN:
            if self.peer == "desktop":  # only the device answers SYNs
                nonce = NONCE.unpack_from(frame.payload)[0] if len(frame.payload) >= 4 else None
                if nonce == self.session:
                    self._syn_ack_due = True  # our SYN-ACK was lost: the desktop asks again
                else:
                    self._failure = self._failure or SyncError(
                        "the desktop started a new session"
                    )
            return
        self._last_heard = now
        if kind in (DATA, DATA_LAST):
            self._on_data(frame, now)
            self._on_ack(frame, now, echo=False, nak=False)
        elif kind in (ACK, NAK, ACK | REPEAT, NAK | REPEAT):
            nak, fresh = kind & ~REPEAT == NAK, not kind & REPEAT
            self._on_ack(frame, now, echo=True, nak=nak, fresh=fresh)
        elif kind == FIN:
            self._peer_closed = True
            self._fin_ack_due = True
        elif kind == FIN_ACK:
            self._fin_acked = True

    def _on_data(self, frame: Frame, now: float) -> None:
        self._ack_due = True
        self._last_tx = frame.tx
        offset = (frame.seq - self._expected) % SEQ_MOD
        if offset >= self._window:
            return  # a repeat of something delivered: the ack tells the sender so
        seq = self._expected + offset
        self._held.setdefault(seq, (frame.payload, frame.kind == DATA_LAST))
        while self._expected in self._held:
            payload, last = self._held.pop(self._expected)
            self._expected += 1
            self._deliver(payload, last)

    def _deliver(self, payload: bytes, last: bool) -> None:
        self._parts_size += len(payload)
        if self._parts_size > MAX_MESSAGE:
            # Refused as soon as it passes the cap, and not kept: a peer cannot make this end
            # hold more than the protocol allows, however long it sends.
            self._failure = self._failure or SyncError(
                f"the {self.peer} sent a message larger than the protocol allows "
                f"({MAX_MESSAGE} bytes)"
            )
            self._parts.clear()
            return
        self._parts.append(payload)
        if last:
            self._inbox.append(b"".join(self._parts))
            self._parts.clear()
            self._parts_size = 0

    def _on_ack(
        self, frame: Frame, now: float, *, echo: bool, nak: bool, fresh: bool = False
    ) -> None:
        offset = (frame.ack - self._base) % SEQ_MOD
        if offset > self._next - self._base:
            return  # older than what we already know
        acked = self._base + offset
        arrived = [self._unacked.pop(seq) for seq in range(self._base, acked)]
        arrived = [outgoing for outgoing in arrived if not outgoing.sacked]
        self._base = acked
        bits = frame.sack
        while bits:
            low = bits & -bits
            held = self._unacked.get(acked + low.bit_length())
            if held is not None and not held.sacked:
                held.sacked = True
                arrived.append(held)
            bits ^= low
        if arrived:  # the line carries frames: no reason to keep backing off
            self._progress_at = now
            self._timing.backoff = 1
        for outgoing in arrived:
            self._sizer.record(outgoing.wire, arrived=True)
        if not echo or not self._order:
            return
        newest = self._order - (self._order - frame.tx) % TX_MOD
        if newest > self._seen_order:
            self._seen_order = newest
            if fresh and (sent_at := self._sent_at.get(newest)) is not None:
                self._timing.sample(now - sent_at)
        if nak:  # damage right after the newest good transmission: the next one, probably
            self._suspect = self._seen_order + 1

    def _receiver_state(self) -> tuple[int, int]:
        sack = 0
        for seq in self._held:
            sack |= 1 << (seq - self._expected - 1)
        return self._expected % SEQ_MOD, sack

    # --- sending (writer thread) -------------------------------------------------------------

    def _write_loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopping or self._failure is not None:
                        return
                    now = time.monotonic()
                    self._check_alive(now)
                    if self._failure is not None:
                        return
                    frame, outgoing, wake_at = self._next_frame(now)
                    if frame is not None:
                        wire = frame
                        break
                    self._cond.wait(min(max(wake_at - now, 0.001), 0.25))
            try:
                self._stream.write(wire)
            except SyncError as error:
                self._fail(error)
                return
            except OSError as error:
                self._fail(SyncError(f"the serial line failed: {error}"))
                return
            with self._cond:
                now = time.monotonic()
                self.bytes_sent += len(wire)
                self._last_sent = now
                if outgoing is not None:  # the frame has left: time its round trip from here
                    outgoing.sent_at = now
                    self._sent_at[outgoing.order] = now

    def _check_alive(self, now: float) -> None:
        if now - self._last_heard > self._dead_after:
            self._failure = SyncError(
                f"the serial line is dead: nothing heard from the {self.peer} "
                f"for {self._dead_after:g} s"
            )
        elif self._unacked and now - self._progress_at > self._dead_after:
            self._failure = SyncError(
                f"the serial line is dead: the {self.peer} acknowledged nothing "
                f"for {self._dead_after:g} s"
            )
        if self._failure is not None:
            self._cond.notify_all()

    def _next_frame(self, now: float) -> tuple[bytes | None, _Outgoing | None, float]:
        """The most urgent frame to send now, or when to look again."""
        wake_at = min(self._last_sent + self._keepalive, self._last_heard + self._dead_after)
        if self._syn_ack_due:
            self._syn_ack_due = False
            params = PARAMS.pack(VERSION, self._window, self.settings.payload_size)
            return self._control(SYN_ACK, params), None, wake_at
        if self._fin_ack_due:
            self._fin_ack_due = False
            return self._control(FIN_ACK), None, wake_at
        if self._ack_due or self._damaged:
            frame = self._control(NAK if self._damaged else ACK)
            # Should this ack be lost and no data follow, say it again a few times, soon,
            # rather than leave the sender waiting for its retransmit timer.
            self._ack_again_gap = self._timing.floor
            self._ack_again_at = now + self._ack_again_gap
            return frame, None, wake_at
        if self._unacked:
            repeat, retry_at = self._pick_repeat(now)
            if repeat is not None:
                return self._data(repeat, now), repeat, wake_at
            wake_at = min(wake_at, retry_at, self._progress_at + self._dead_after)
        if self._pending and self._next < self._base + self._window:
            return self._data(self._cut_frame(), now), self._unacked[self._next - 1], wake_at
        if self._fin_due and not self._unacked:
            self._fin_due = False
            return self._control(FIN), None, wake_at
        if self._ack_again_at is not None:
            if now >= self._ack_again_at:
                self._ack_again_gap *= 2
                again = self._ack_again_gap <= 4 * self._timing.floor
                self._ack_again_at = now + self._ack_again_gap if again else None
                return self._control(ACK), None, wake_at
            wake_at = min(wake_at, self._ack_again_at)
        if now - self._last_sent >= self._keepalive:
            return self._control(ACK), None, wake_at
        return None, None, wake_at

    def _cut_frame(self) -> _Outgoing:
        message, start = self._pending[0], self._pending_at
        payload = message[start : start + self._sizer.size]
        self._pending_at += len(payload)
        last = self._pending_at >= len(message)
        if last:
            self._pending.popleft()
            self._pending_at = 0
        self._pending_bytes -= len(payload)
        outgoing = _Outgoing(self._next, payload, last)
        self._unacked[self._next] = outgoing
        self._next += 1
        self._cond.notify_all()  # send() may be waiting for the backlog to shrink
        return outgoing

    def _pick_repeat(self, now: float) -> tuple[_Outgoing | None, float]:
        repeat, retry_at = self._find_lost(now)
        if repeat is not None:
            self._sizer.record(repeat.wire, arrived=False)
        return repeat, retry_at

    def _find_lost(self, now: float) -> tuple[_Outgoing | None, float]:
        oldest: _Outgoing | None = None
        retry_at = now + self._keepalive
        for outgoing in self._unacked.values():
            if outgoing.sacked:
                continue
            if outgoing.order < self._seen_order:
                return outgoing, now  # a later transmission arrived, so this one was lost
            if outgoing.order == self._suspect:
                self._suspect = None
                return outgoing, now
            if oldest is None:
                oldest = outgoing
        if oldest is None:
            return None, retry_at
        timeout_at = oldest.sent_at + self._timing.current
        if now >= timeout_at:
            self._timing.backoff = min(self._timing.backoff * 2, 4)  # no congestion to yield to
            return oldest, now
        return None, min(retry_at, timeout_at)

    def _data(self, outgoing: _Outgoing, now: float) -> bytes:
        ack, sack = self._receiver_state()  # riding along; acks proper also echo ``tx``
        self._order += 1
        outgoing.order = self._order
        outgoing.sent_at = now
        self._sent_at[self._order] = now
        self._sent_at.pop(self._order - 4 * SEQ_MOD, None)  # keep the recent ones
        kind = DATA_LAST if outgoing.last else DATA
        tx = self._order % TX_MOD
        frame = Frame(kind, outgoing.seq % SEQ_MOD, ack, tx, sack, outgoing.payload)
        wire = encode_frame(frame, self.session)
        outgoing.wire = len(wire)
        return wire

    def _control(self, kind: int, payload: bytes = b"") -> bytes:
        if kind in (ACK, NAK):
            self._ack_due = self._damaged = False
            if self._echoed_tx == self._last_tx:
                kind |= REPEAT
            self._echoed_tx = self._last_tx
        ack, sack = self._receiver_state()
        return encode_frame(Frame(kind, 0, ack, self._last_tx, sack, payload), self.session)


# --- the handshake ------------------------------------------------------------------------------


def _read(stream: Stream) -> bytes:
    try:
        return bytes(stream.read(READ_SIZE))
    except OSError as error:
        raise SyncError(f"the serial line failed: {error}") from None


def _write(stream: Stream, data: bytes) -> None:
    try:
        stream.write(data)
    except OSError as error:
        raise SyncError(f"the serial line failed: {error}") from None


def _agree(ours: LinkSettings, params: bytes, peer: str) -> LinkSettings | None:
    """Our settings narrowed to what the peer offers; None for a malformed offer."""
    if len(params) != PARAMS.size:
        return None
    version, window, payload_size = PARAMS.unpack(params)
    if version != VERSION:
        raise SyncError(
            f"the {peer} speaks serial link version {version}, this side version {VERSION}"
        )
    if not 1 <= window <= WINDOW or payload_size < 1:
        return None
    return LinkSettings(
        window=min(ours.window, window),
        payload_size=min(ours.payload_size, payload_size),
        dead_after=ours.dead_after,
        baud=ours.baud,
    )


def connect_link(
    stream: Stream, settings: LinkSettings | None = None, *, timeout: float | None = None
) -> SerialLink:
    """Desktop side: open a session on ``stream`` and return its link.

    Sends SYN five times a second until the device answers; raises
    SyncError after ``timeout`` seconds (default: the dead-line time) without an answer.
    """
    settings = settings or LinkSettings()
    settings.check()
    timeout = settings.dead_after if timeout is None else timeout
    session = secrets.randbits(32)
    offer = NONCE.pack(session) + PARAMS.pack(VERSION, settings.window, settings.payload_size)
    syn = encode_frame(Frame(SYN, payload=offer), 0)
    reader = FrameReader(session)
    sent = received = 0
    deadline = time.monotonic() + timeout
    next_syn = 0.0
    while (now := time.monotonic()) < deadline:
        if now >= next_syn:
            _write(stream, syn)
            sent += len(syn)
            next_syn = now + 0.2
        data = _read(stream)
        received += len(data)
        frames = reader.feed(data)
        for at, frame in enumerate(frames):
            if frame is None or frame.kind != SYN_ACK:
                continue  # SYN-ACKs of other sessions fail the CRC and come out as None
            agreed = _agree(settings, frame.payload, "device")
            if agreed is not None:
                return SerialLink(
                    stream, session, agreed, peer="device", reader=reader,
                    early=frames[at + 1 :], bytes_sent=sent, bytes_received=received,
                )
    raise SyncError(f"no answer from the device within {timeout:g} s (is it in its cradle?)")


def accept_link(
    stream: Stream,
    settings: LinkSettings | None = None,
    *,
    timeout: float | None = None,
    stop: threading.Event | None = None,
    reader: FrameReader | None = None,
) -> SerialLink:
    """Device side: wait for the desktop's SYN on ``stream``, answer it, return the link.

    Everything else on the line is ignored meanwhile.  Raises `AcceptTimeout` after ``timeout``
    seconds (None: wait for ever), SyncError once ``stop`` is set.  Pass the same ``reader`` to
    calls that poll one line, so that a SYN read in two parts is not lost.
    """
    settings = settings or LinkSettings()
    settings.check()
    reader = reader or FrameReader()
    reader.session = 0  # until a SYN names the session, only SYNs pass the CRC
    received = 0
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        if stop is not None and stop.is_set():
            raise SyncError("stopped waiting for the desktop")
        if deadline is not None and time.monotonic() >= deadline:
            raise AcceptTimeout(f"no desktop connected within {timeout:g} s")
        data = _read(stream)
        received += len(data)
        frames = reader.feed(data)
        for at, frame in enumerate(frames):
            if frame is None or frame.kind != SYN or len(frame.payload) != NONCE.size + PARAMS.size:
                continue
            (session,) = NONCE.unpack_from(frame.payload)
            agreed = _agree(settings, frame.payload[NONCE.size :], "desktop")
            if agreed is None:
                continue
            params = PARAMS.pack(VERSION, agreed.window, agreed.payload_size)
            syn_ack = encode_frame(Frame(SYN_ACK, payload=params), session)
            _write(stream, syn_ack)
            return SerialLink(
                stream, session, agreed, peer="desktop", reader=reader,
                early=frames[at + 1 :], bytes_sent=len(syn_ack), bytes_received=received,
            )


# --- an in-memory line, for tests and for both ends in one process ------------------------------
