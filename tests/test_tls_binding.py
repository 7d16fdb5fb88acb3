"""``tcps://`` without ``tls-ca``: the pairing handshake is bound to the TLS channel, so a relay
that terminates TLS with a certificate of its own cannot pass the handshake through, even when
the desktop checks no certificate at all."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import content, desktop_file, one_error_line, salesmgr, self_signed_certificate

from salesmgr.emulator.device import DeviceEmulator
from salesmgr.sync.device_file import DeviceFile
from salesmgr.sync.transports import transport_for
from salesmgr.sync.wire import auth

SECRET = "tls-binding-test-secret-R8kq2Zw"


class Relay:
    """A man in the middle: TLS with its own certificate towards the desktop, TLS (checking
    nothing) towards the device, and every byte copied across — and kept, as an attacker would."""

    def __init__(self, device_port: int, cert: Path, key: Path) -> None:
        self.device_port = device_port
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(str(cert), str(key))
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.seen = bytearray()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        try:
            conn, _ = self.server.accept()
        except OSError:
            return
        desktop = self.context.wrap_socket(conn, server_side=True)
        towards = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        towards.check_hostname = False
        towards.verify_mode = ssl.CERT_NONE
        device = towards.wrap_socket(socket.create_connection(("127.0.0.1", self.device_port)))
        pumps = [threading.Thread(target=self.pump, args=(a, b), daemon=True)
                 for a, b in ((desktop, device), (device, desktop))]
        for pump in pumps:
            pump.start()
        for pump in pumps:
            pump.join(20)
        desktop.close()
        device.close()

    def pump(self, source: ssl.SSLSocket, target: ssl.SSLSocket) -> None:
        try:
            while chunk := source.recv(65536):
                self.seen += chunk
                target.sendall(chunk)
        except OSError:
            pass
        for end in (source, target):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self.server.close()
        self.thread.join(20)


@pytest.fixture
def tls_device(tmp_path: Path) -> Iterator[tuple[DeviceEmulator, str, Path]]:
    cert, key = self_signed_certificate(tmp_path)
    device_file = tmp_path / "device.pipe"
    options = {"tls_cert": str(cert), "tls_key": str(key), "timeout": 20.0}
    listener = transport_for("tcps://x").listen("tcps://127.0.0.1:0", options)
    emulator = DeviceEmulator(
        DeviceFile(device_file), SECRET, timeout=20.0, log=lambda _: None, complain=print
    )
    thread = threading.Thread(target=emulator.serve, args=(listener,), daemon=True)
    thread.start()
    yield emulator, listener.url, device_file
    emulator.stop()
    thread.join(10)
    listener.close()


def test_a_relay_with_its_own_certificate_fails_the_handshake_and_reads_no_record(
    tls_device: tuple[DeviceEmulator, str, Path], tmp_path: Path
) -> None:
    _, url, device_file = tls_device
    desk = desktop_file(tmp_path)
    assert salesmgr("load", desk, "--to", url, "--secret", SECRET).exit_code == 0
    assert content(device_file) == content(desk)  # straight to the device, no CA: it works
    secret_company = "Company 3"

    relay_folder = tmp_path / "relay"
    relay_folder.mkdir()
    relay = Relay(int(url.rsplit(":", 1)[1]), *self_signed_certificate(relay_folder))
    before = (desk.read_bytes(), device_file.read_bytes())
    try:
        result = salesmgr(
            "sync", desk, "--from", f"tcps://127.0.0.1:{relay.port}", "--secret", SECRET,
            "--timeout", "20",
        )
    finally:
        relay.close()
    assert result.exit_code == 7
    # The desktop either reads the device's refusal or sees the device hang up first (the
    # device closes as soon as the proof fails); either way the relay learns nothing.
    error = one_error_line(result)
    assert "authentication failed" in error or "closed the connection" in error, error
    assert (desk.read_bytes(), device_file.read_bytes()) == before
    assert relay.seen and secret_company.encode() not in relay.seen


def test_proofs_and_session_key_cover_the_channel_binding() -> None:
    secret, a, b = b"pairing secret", b"a" * 32, b"b" * 32
    device, relay = auth.certificate_binding(b"device cert"), auth.certificate_binding(b"relay")
    for make in (auth.device_proof, auth.desktop_proof, auth.session_key):
        assert make(secret, a, b, device) != make(secret, a, b, relay)
        assert make(secret, a, b, device) != make(secret, a, b, b"")
