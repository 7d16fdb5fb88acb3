"""Silent connections cannot block the device: it answers several connections at once, gives
each handshake a short deadline of its own, and locks its file only for an authenticated
desktop."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import content, desktop_file, salesmgr, self_signed_certificate

from salesmgr.emulator.device import DeviceEmulator
from salesmgr.sync.device_file import DeviceFile
from salesmgr.sync.transports import transport_for

SECRET = "idle-peers-test-secret-Wm4pX9c"


@pytest.fixture(params=["tcp", "tcps"])
def device(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    options: dict[str, object] = {"timeout": 30.0}
    if request.param == "tcps":
        cert, key = self_signed_certificate(tmp_path)
        options.update(tls_cert=str(cert), tls_key=str(key))
    url = f"{request.param}://127.0.0.1:0"
    listener = transport_for(url).listen(url, options)
    device_file = tmp_path / "device.pipe"
    emulator = DeviceEmulator(
        DeviceFile(device_file), SECRET, timeout=30.0, log=lambda _: None, complain=lambda _: None
    )
    thread = threading.Thread(target=emulator.serve, args=(listener,), daemon=True)
    thread.start()
    yield listener.url, device_file
    emulator.stop()
    thread.join(10)
    listener.close()


def idle_connections(url: str, count: int) -> list[socket.socket]:
    """Connections that say nothing at all (on tcps: never even start TLS)."""
    port = int(url.rsplit(":", 1)[1])
    return [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]


def test_fifty_silent_connections_neither_block_a_sync_nor_lock_the_device_file(
    device: tuple[str, Path], tmp_path: Path
) -> None:
    url, device_file = device
    desk = desktop_file(tmp_path)
    assert salesmgr("load", desk, "--to", url, "--secret", SECRET).exit_code == 0
    silent = idle_connections(url, 50)
    try:
        started = time.monotonic()
        edit = salesmgr("add", device_file, "--company", "Road", "--title", "x")
        assert edit.exit_code == 0, edit.output  # the file is not locked by a silent peer
        result = salesmgr("sync", desk, "--from", url, "--secret", SECRET, "--timeout", "20")
        assert result.exit_code == 0, result.output
        assert time.monotonic() - started < 5
        assert content(desk) == content(device_file)
    finally:
        for connection in silent:
            connection.close()


def test_a_silent_connection_is_dropped_after_the_handshake_deadline(
    device: tuple[str, Path],
) -> None:
    url, _ = device
    (silent,) = idle_connections(url, 1)
    silent.settimeout(15)
    started = time.monotonic()
    try:
        while silent.recv(4096):  # on tcps a TLS alert may come before the end
            pass
    except OSError:
        pass
    finally:
        silent.close()
    assert time.monotonic() - started < 8  # the deadline (5 s), not the session timeout (30 s)
