"""The serial cradle transport: URL forms, a real pseudo-terminal opened with pyserial, a cradle
behind a terminal server (socket://), pacing to the line speed, and faults on the line."""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import serial

from salesmgr.errors import SyncError
from salesmgr.plugin.interfaces import STREAM_FILTER
from salesmgr.plugin.manager import Registry, make_plugin_manager
from salesmgr.plugins.serial_link import SerialLink, accept_link
from salesmgr.plugins.transport_serial import (
    PacedStream,
    PortStream,
    PtyTransport,
    SerialAddress,
    SerialListener,
    SerialTransport,
    parse_url,
)
from salesmgr.sync.transports import transport_for
from salesmgr.testing.faults import Faults

transport = SerialTransport()
QUICK = {"timeout": 2}  # dead-line time for tests that expect the line to work


@pytest.fixture
def closing() -> Iterator[list[Any]]:
    """Listeners and links a test opens, closed afterwards whatever happens."""
    things: list[Any] = []
    yield things
    for thing in reversed(things):
        thing.close()


def serve(listener: SerialListener, closing: list[Any], reply: bool = True) -> threading.Thread:
    """The device: accept one session and answer each message with its reverse."""

    def run() -> None:
        link = listener.accept(timeout=10)
        closing.append(link)
        while reply:
            try:
                message = link.receive(timeout=10)
            except SyncError:
                return
            link.send(message[::-1])

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def round_trips(link: SerialLink, messages: list[bytes]) -> None:
    for message in messages:
        link.send(message)
        assert link.receive(timeout=30) == message[::-1]


# --- URLs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("serial:///dev/ttyUSB0", SerialAddress("/dev/ttyUSB0")),
        ("serial:///dev/ttyUSB0?baud=115200", SerialAddress("/dev/ttyUSB0", 115200)),
        ("serial://COM3?baud=9600&timeout=30", SerialAddress("COM3", 9600, 30.0)),
        ("serial://loop://", SerialAddress("loop://")),
        ("serial://socket://10.0.0.5:7000?baud=5", SerialAddress("socket://10.0.0.5:7000", 5)),
        (
            "serial://rfc2217://cradles:2217?ign_set_control&baud=38400",
            SerialAddress("rfc2217://cradles:2217?ign_set_control", 38400),
        ),
        ("serial-pty", SerialAddress("")),
        ("serial-pty://?baud=115200", SerialAddress("", 115200)),
    ],
)
def test_every_url_form_names_its_port_and_options(url: str, address: SerialAddress) -> None:
    assert parse_url(url) == address


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("serial://", "names no port"),
        ("serial://?baud=9600", "names no port"),
        ("serial:///dev/ttyS0?baud=fast", "baud must be a positive whole number"),
        ("serial:///dev/ttyS0?baud=-5", "baud must be a positive whole number"),
        ("serial:///dev/ttyS0?timeout=0", "timeout must be a positive number"),
        ("serial:///dev/ttyS0?parity=E", "unknown option 'parity'"),
        ("serial-pty/dev/pts/3", "serial-pty takes no port"),
        ("tcp://host:1", "is not a serial URL"),
    ],
)
def test_a_bad_url_is_refused_with_a_one_line_error(url: str, message: str) -> None:
    with pytest.raises(SyncError, match=message) as caught:
        parse_url(url)
    assert "\n" not in str(caught.value)


def test_the_plugin_registers_the_serial_and_serial_pty_schemes() -> None:
    registry = Registry(make_plugin_manager(entry_points=False))
    assert isinstance(registry.transport("serial"), SerialTransport)
    assert isinstance(registry.transport("serial-pty"), PtyTransport)
    provides = registry.plugins["salesmgr.plugins.transport_serial"].provides
    assert ("transport", "serial") in provides and ("transport", "serial-pty") in provides


def test_a_url_that_is_only_a_registered_scheme_names_that_transport() -> None:
    # ``--on serial-pty`` is routed like any URL: the serial plugin registered the scheme, the
    # core knows no transport by name.
    registry = Registry(make_plugin_manager(entry_points=False))
    assert isinstance(transport_for("serial-pty", registry), PtyTransport)
    assert isinstance(transport_for("serial-pty?baud=9600", registry), PtyTransport)
    with pytest.raises(SyncError, match="'nowhere' is not a device URL"):
        transport_for("nowhere", registry)


def test_a_port_that_does_not_exist_is_a_clear_error() -> None:
    with pytest.raises(SyncError, match="cannot open serial port /dev/no-such-cradle"):
        transport.connect("serial:///dev/no-such-cradle", {})


def test_the_desktop_cannot_connect_to_serial_pty_itself() -> None:
    with pytest.raises(SyncError, match="connect to the serial:///dev/pts/N it printed"):
        transport.connect("serial-pty", {})


def test_bad_options_are_refused() -> None:
    with pytest.raises(SyncError, match="baud option: baud must be a positive whole number"):
        transport.listen("serial-pty", {"baud": "quick"})


def test_a_loop_with_no_device_on_it_gives_up_with_a_clear_error() -> None:
    started = time.monotonic()
    with pytest.raises(SyncError, match="serial://loop://: no answer from the device"):
        transport.connect("serial://loop://", {"timeout": 0.5})
    assert time.monotonic() - started < 5


# --- a pseudo-terminal, as the emulator serves it ----------------------------------------------


def test_the_device_listens_on_a_pty_the_desktop_opens_with_pyserial(closing: list[Any]) -> None:
    listener = transport.listen("serial-pty", {})
    closing.append(listener)
    assert re.fullmatch(r"serial:///dev/pts/\d+", listener.url)
    serve(listener, closing)
    desktop = transport.connect(listener.url, QUICK)
    closing.append(desktop)
    round_trips(desktop, [b"hello", b"", os.urandom(70_000), bytes(range(256)) * 3])
    assert desktop.bytes_sent > 70_000 and desktop.bytes_received > 70_000


def test_one_pty_serves_session_after_session(closing: list[Any]) -> None:
    listener = transport.listen("serial-pty", {})
    closing.append(listener)
    for number in range(3):
        serve(listener, closing)
        desktop = transport.connect(listener.url, QUICK)
        round_trips(desktop, [f"sync number {number}".encode()])
        desktop.close()


def test_line_noise_on_the_pty_is_invisible_to_the_session(closing: list[Any]) -> None:
    faults = Faults(noise=0.01, drop=0.01, seed=8)
    line = {STREAM_FILTER: faults.stream_filter(), "timeout": 5}
    listener = transport.listen("serial-pty", line)
    closing.append(listener)
    serve(listener, closing)
    desktop = transport.connect(listener.url, line)
    closing.append(desktop)
    round_trips(desktop, [os.urandom(2_000) for _ in range(3)])


def test_a_paced_device_still_delivers_everything(closing: list[Any]) -> None:
    listener = transport.listen("serial-pty?baud=115200", {})
    closing.append(listener)
    serve(listener, closing)
    desktop = transport.connect(listener.url, QUICK)
    closing.append(desktop)
    round_trips(desktop, [os.urandom(3_000)])  # a quarter of a second of line time


def test_a_device_that_goes_silent_ends_the_desktop_session_in_bounded_time(
    closing: list[Any],
) -> None:
    stall = Faults(stall_after=300).stream_filter()
    listener = transport.listen("serial-pty", {STREAM_FILTER: stall})
    closing.append(listener)
    serve(listener, closing)
    desktop = transport.connect(listener.url, {"timeout": 1})
    closing.append(desktop)
    started = time.monotonic()
    with pytest.raises(SyncError, match="the serial line is dead"):
        round_trips(desktop, [os.urandom(2_000)])
    assert time.monotonic() - started < 5


def test_a_cable_pulled_on_the_device_side_fails_both_ends(closing: list[Any]) -> None:
    cut = Faults(disconnect_after=400).stream_filter()
    listener = transport.listen("serial-pty", {STREAM_FILTER: cut})
    closing.append(listener)
    failures: list[SyncError] = []

    def device() -> None:
        link = listener.accept(timeout=10)
        closing.append(link)
        try:
            while True:
                link.send(link.receive(timeout=10)[::-1])
        except SyncError as problem:
            failures.append(problem)

    thread = threading.Thread(target=device, daemon=True)
    thread.start()
    desktop = transport.connect(listener.url, {"timeout": 1})
    closing.append(desktop)
    with pytest.raises(SyncError, match="the serial line is dead"):
        round_trips(desktop, [os.urandom(2_000)])
    thread.join(timeout=10)
    assert failures and "disconnect-after=400" in str(failures[0])


def test_accept_gives_up_after_its_timeout_like_a_socket(closing: list[Any]) -> None:
    listener = transport.listen("serial-pty", {})
    closing.append(listener)
    with pytest.raises(TimeoutError, match="no desktop connected within 0.2 s") as caught:
        listener.accept(timeout=0.2)
    assert isinstance(caught.value, SyncError)


def test_a_device_polling_accept_in_short_slices_still_meets_the_desktop(
    closing: list[Any],
) -> None:
    listener = transport.listen("serial-pty", {})
    closing.append(listener)
    accepted: list[SerialLink] = []

    def poll() -> None:  # as the emulator does, to notice its stop flag in between
        deadline = time.monotonic() + 10
        while not accepted and time.monotonic() < deadline:
            try:
                accepted.append(listener.accept(timeout=0.01))
            except TimeoutError:
                continue
        closing.extend(accepted)
        accepted[0].send(accepted[0].receive(timeout=10)[::-1])

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    desktop = transport.connect(listener.url, QUICK)
    closing.append(desktop)
    round_trips(desktop, [b"found you"])


def test_closing_the_listener_stops_a_waiting_accept() -> None:
    listener = transport.listen("serial-pty", {})
    errors: list[SyncError] = []

    def wait() -> None:
        try:
            listener.accept()
        except SyncError as problem:
            errors.append(problem)

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.1)
    listener.close()
    thread.join(timeout=5)
    assert not thread.is_alive() and errors


# --- a cradle behind a terminal server (pyserial's socket://) ----------------------------------


@pytest.fixture
def terminal_server() -> Iterator[int]:
    """A TCP port on loopback that joins its first two clients back to back, like a null modem."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(10)
    port = server.getsockname()[1]

    def pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(4096):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            sink.close()

    def run() -> None:
        try:
            first, _ = server.accept()
            second, _ = server.accept()
        except OSError:
            return
        threading.Thread(target=pump, args=(first, second), daemon=True).start()
        threading.Thread(target=pump, args=(second, first), daemon=True).start()

    threading.Thread(target=run, daemon=True).start()
    yield port
    server.close()


def test_device_and_desktop_meet_through_a_terminal_server(
    terminal_server: int, closing: list[Any]
) -> None:
    url = f"serial://socket://127.0.0.1:{terminal_server}"
    listener = transport.listen(url, QUICK)  # pyserial's socket:// is a client: so is the device
    closing.append(listener)
    assert listener.url == url
    serve(listener, closing)
    desktop = transport.connect(url, QUICK)
    closing.append(desktop)
    round_trips(desktop, [b"over the network", os.urandom(20_000)])


def test_the_desktop_reaches_a_device_behind_socket_url(closing: list[Any]) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    closing.append(server)
    port = server.getsockname()[1]

    class SocketStream:
        def __init__(self, conn: socket.socket) -> None:
            self.conn = conn
            conn.settimeout(0.05)

        def read(self, size: int) -> bytes:
            try:
                return self.conn.recv(size)
            except TimeoutError:
                return b""

        def write(self, data: bytes) -> None:
            self.conn.sendall(data)

        def close(self) -> None:
            self.conn.close()

    def device() -> None:
        conn, _ = server.accept()
        link = accept_link(SocketStream(conn), timeout=10)
        closing.append(link)
        link.send(link.receive(timeout=10)[::-1])

    threading.Thread(target=device, daemon=True).start()
    desktop = transport.connect(f"serial://socket://127.0.0.1:{port}?baud=9600", QUICK)
    closing.append(desktop)
    round_trips(desktop, [b"through a terminal server"])


def test_a_port_without_a_descriptor_still_reads_what_has_arrived() -> None:
    port = PortStream(serial.serial_for_url("loop://", timeout=0.05))  # loop:// has no fileno
    try:
        assert port.read(100) == b""  # nothing yet: gives up after the short wait
        port.write(b"abc" * 100)
        got = b""
        while len(got) < 300 and (piece := port.read(128)):
            assert len(piece) <= 128
            got += piece
        assert got == b"abc" * 100
    finally:
        port.close()


def test_closing_a_port_ends_a_read_waiting_in_another_thread_at_once() -> None:
    master, slave = os.openpty()
    try:
        port = PortStream(serial.Serial(os.ttyname(slave)), wait=10)  # a long wait for bytes
        outcome: list[object] = []

        def read() -> None:
            try:
                outcome.append(port.read(100))
            except OSError as error:
                outcome.append(error)

        reader = threading.Thread(target=read)
        reader.start()
        time.sleep(0.1)  # the reader waits for bytes now
        started = time.monotonic()
        port.close()
        reader.join(2)
        assert not reader.is_alive() and time.monotonic() - started < 1
        assert outcome in ([b""], []) or isinstance(outcome[0], OSError)
        with pytest.raises(OSError):
            port.read(100)  # a closed port's descriptor is never touched again
    finally:
        os.close(master)
        os.close(slave)


# --- pacing ----------------------------------------------------------------------------------


class FakeLine:
    """A stream and a clock: records what was written when, and sleeps without waiting."""

    def __init__(self) -> None:
        self.now = 100.0
        self.writes: list[tuple[float, int]] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def read(self, size: int) -> bytes:
        return b""

    def write(self, data: bytes) -> int:
        self.writes.append((self.now, len(data)))
        return len(data)

    def close(self) -> None:
        pass


@pytest.mark.parametrize("baud", [9600, 115200])
def test_pacing_lets_bytes_out_at_the_rate_of_a_real_line(baud: int) -> None:
    line = FakeLine()
    paced = PacedStream(line, baud, clock=line.clock, sleep=line.sleep)
    start = line.now
    for size in (1, 500, 10_000, 37):
        assert paced.write(os.urandom(size)) == size
    total = sum(size for _, size in line.writes)
    assert total == 10_538
    # 8N1: ten bits a byte; each piece leaves when its last bit would have arrived
    assert line.now - start == pytest.approx(total * 10 / baud)
    for when, _ in line.writes:
        sent_before = sum(size for at, size in line.writes if at < when)
        assert sent_before * 10 / baud <= when - start + 1e-9


def test_an_idle_line_does_not_bank_time_for_a_later_burst() -> None:
    line = FakeLine()
    paced = PacedStream(line, 9600, clock=line.clock, sleep=line.sleep)
    paced.write(b"x" * 96)  # 0.1 s of line time
    line.now += 60  # a minute of silence
    before = line.now
    paced.write(b"y" * 960)
    assert line.now - before == pytest.approx(1.0)
