"""The network transport: ``tcp://HOST:PORT``, and ``tcps://HOST:PORT`` with TLS.

A `StreamLink` frames whole protocol messages on a byte stream with a 4-byte big-endian length,
refusing anything larger than the protocol allows, and bounds every read by a deadline, so a
silent peer never hangs the desktop.  A ``stream-filter`` option (see
`salesmgr.plugin.interfaces.filtered_stream`) wraps the raw stream, so injected faults hit
exactly the bytes this side writes.

Options: ``timeout`` (seconds, connect and handshake), ``stream-filter``,
``tls_cert``/``tls_key`` (listening side of ``tcps``), ``tls_ca`` (connecting side of ``tcps``:
verify the device's certificate against it; without it the link is encrypted and the peer is
authenticated by the pairing secret alone).
"""

from __future__ import annotations

import re
import socket
import struct
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from salesmgr.errors import SyncError
from salesmgr.plugin.hookspecs import hookimpl
from salesmgr.plugin.interfaces import AnyTransport, Link, Transport, filtered_stream
from salesmgr.sync.wire.limits import MAX_MESSAGE

if TYPE_CHECKING:
    import ssl

LENGTH = struct.Struct(">I")
PEM_CERTIFICATE = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)
DEFAULT_TIMEOUT = 30.0
BACKLOG = 64  # connections the system queues while the device is busy accepting


class SocketStream:
    """A connected socket as the raw byte stream `FaultyStream` expects.

    Like a pyserial port it has a read ``timeout`` and a ``write_timeout``; a socket has one
    timeout for both, so each call sets the one it needs."""

    def __init__(self, sock: socket.socket, write_timeout: float = DEFAULT_TIMEOUT) -> None:
        self.sock = sock
        self.timeout: float | None = None
        self.write_timeout: float | None = write_timeout

    def read(self, size: int = 1) -> bytes:
        self.sock.settimeout(self.timeout)
        return self.sock.recv(size)

    def write(self, data: bytes) -> int:
        self.sock.settimeout(self.write_timeout)
        self.sock.sendall(data)
        return len(data)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes a read blocked in another thread
        except OSError:
            pass
        self.sock.close()


class StreamLink:
    """Whole messages over a byte stream: a 4-byte length, then the message."""

    def __init__(
        self, stream: Any, peer: str, max_message: int = MAX_MESSAGE, channel_binding: bytes = b""
    ) -> None:
        self.stream = stream
        self.peer = peer
        self.max_message = max_message
        # tcps: SHA-256 of the device's certificate, which the handshake's proofs cover
        self.channel_binding = channel_binding
        self.bytes_sent = 0
        self.bytes_received = 0
        self.closed = False

    def send(self, message: bytes) -> None:
        if len(message) > self.max_message:
            raise SyncError(f"a message of {len(message)} bytes is too large to send")
        if self.closed:
            raise SyncError(f"the connection to {self.peer} is closed")
        data = LENGTH.pack(len(message)) + message  # one write: fault offsets stay exact
        try:
            self.stream.write(data)
        except TimeoutError:
            raise SyncError(f"{self.peer} takes no more data (the line is stalled)") from None
        except OSError as problem:
            raise SyncError(
                f"connection to {self.peer} lost while sending ({problem.strerror or problem})"
            ) from None
        self.bytes_sent += len(data)

    def receive(self, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        (length,) = LENGTH.unpack(self._read_exact(LENGTH.size, deadline, timeout))
        if length > self.max_message:
            raise SyncError(
                f"{self.peer} announced a message of {length} bytes, more than the protocol "
                f"allows ({self.max_message}): is it a salesmgr peer?"
            )
        return self._read_exact(length, deadline, timeout)

    def _read_exact(self, size: int, deadline: float, timeout: float) -> bytes:
        chunks: list[bytes] = []
        missing = size
        while missing:
            left = deadline - time.monotonic()
            if left <= 0:
                raise SyncError(f"no answer from {self.peer} within {timeout:.3g} s")
            try:
                self.stream.timeout = left
                chunk = self.stream.read(missing)
            except TimeoutError:
                raise SyncError(f"no answer from {self.peer} within {timeout:.3g} s") from None
            except (OSError, ValueError) as problem:
                if self.closed:
                    raise SyncError(f"the connection to {self.peer} was closed") from None
                reason = getattr(problem, "strerror", None) or problem
                raise SyncError(f"connection to {self.peer} lost ({reason})") from None
            if not chunk:
                raise SyncError(f"{self.peer} closed the connection")
            self.bytes_received += len(chunk)
            chunks.append(chunk)
            missing -= len(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.stream.close()


def host_port(url: str, *, listening: bool = False) -> tuple[str, int]:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise SyncError(f"{url!r}: the port is not a number between 0 and 65535") from None
    host = parts.hostname or ("127.0.0.1" if listening else "")
    if not host:
        raise SyncError(f"{url!r} names no host (expected {parts.scheme}://HOST:PORT)")
    if port is None or (port == 0 and not listening):
        raise SyncError(f"{url!r} names no port (expected {parts.scheme}://HOST:PORT)")
    return host, port


def url_of(scheme: str, host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}"


def timeout_of(options: Mapping[str, Any]) -> float:
    return float(options.get("timeout") or DEFAULT_TIMEOUT)


class TcpListener:
    """Waits for desktops on a bound socket; ``url`` has the port the system picked."""

    concurrent = True  # every desktop has a connection of its own

    def __init__(
        self, scheme: str, sock: socket.socket, options: Mapping[str, Any],
        context: ssl.SSLContext | None,
    ) -> None:
        self.sock = sock
        self.options = options
        self.context = context
        self.binding = b"" if context is None else own_certificate_binding(options)
        host, port = sock.getsockname()[:2]
        self.url = url_of(scheme, host, port)

    def accept(self, timeout: float | None = None) -> Link:
        """The next desktop's link; raises TimeoutError when none came within ``timeout``."""
        import ssl  # only a tcps:// link needs it: imported by the commands that open one

        self.sock.settimeout(timeout)
        conn, address = self.sock.accept()  # socket.timeout is TimeoutError
        peer = url_of("tcp", address[0], address[1])
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.context is not None:
            # The TLS handshake happens at the first read, in the session and within its
            # handshake deadline, so a peer that never starts TLS holds nothing but itself.
            try:
                conn = self.context.wrap_socket(
                    conn, server_side=True, do_handshake_on_connect=False
                )
            except (ssl.SSLError, OSError) as problem:
                conn.close()
                raise SyncError(f"TLS with {peer} failed ({problem})") from None
        stream = SocketStream(conn, timeout_of(self.options))
        return StreamLink(
            filtered_stream(stream, self.options), f"the desktop at {peer}",
            channel_binding=self.binding,
        )

    def close(self) -> None:
        self.sock.close()


class TcpTransport(Transport):
    scheme = "tcp"
    help = "network link: tcp://HOST:PORT (the emulator listens, the desktop connects)"
    tls = False

    def connect(self, url: str, options: Mapping[str, Any]) -> Link:
        import ssl

        host, port = host_port(url)
        timeout = timeout_of(options)
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except ConnectionRefusedError:
            raise SyncError(
                f"cannot connect to {url}: connection refused (is the device listening?)"
            ) from None
        except socket.gaierror as problem:
            raise SyncError(f"cannot connect to {url}: unknown host ({problem.strerror})") from None
        except TimeoutError:
            raise SyncError(f"cannot connect to {url}: no answer within {timeout:.3g} s") from None
        except OSError as problem:
            raise SyncError(
                f"cannot connect to {url}: {problem.strerror or problem}"
            ) from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        binding = b""
        if self.tls:
            try:
                tls = client_context(options).wrap_socket(sock, server_hostname=host)
            except (ssl.SSLError, OSError) as problem:
                sock.close()
                raise SyncError(f"TLS handshake with {url} failed ({problem})") from None
            certificate = tls.getpeercert(binary_form=True)
            if not certificate:
                tls.close()
                raise SyncError(f"TLS with {url} failed: the device sent no certificate")
            from salesmgr.sync.wire.auth import certificate_binding  # tcps:// only

            binding = certificate_binding(certificate)
            sock = tls
        stream = SocketStream(sock, timeout)
        return StreamLink(
            filtered_stream(stream, options), f"the device at {url}", channel_binding=binding
        )

    def listen(self, url: str, options: Mapping[str, Any]) -> TcpListener:
        host, port = host_port(url, listening=True)
        context = server_context(url, options) if self.tls else None
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as problem:
            raise SyncError(f"cannot listen on {url}: {problem.strerror or problem}") from None
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(BACKLOG)
        except OSError as problem:
            sock.close()
            raise SyncError(f"cannot listen on {url}: {problem.strerror or problem}") from None
        return TcpListener(self.scheme, sock, options, context)


class TlsTcpTransport(TcpTransport):
    scheme = "tcps"
    help = "network link with TLS: tcps://HOST:PORT (listener needs --tls-cert/--tls-key)"
    tls = True


def client_context(options: Mapping[str, Any]) -> ssl.SSLContext:
    import ssl

    ca = options.get("tls_ca")
    if ca:
        try:
            return ssl.create_default_context(cafile=str(ca))
        except (ssl.SSLError, OSError) as problem:
            raise SyncError(f"cannot use the TLS CA file {ca}: {problem}") from None
    # No CA given: encrypt, and let the pairing secret's challenge-response authenticate.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def own_certificate_binding(options: Mapping[str, Any]) -> bytes:
    """The channel binding of the listening side: SHA-256 of its own certificate (the first in
    the ``tls_cert`` file), which is what a desktop connected straight to it sees."""
    import ssl

    cert = str(options.get("tls_cert"))
    try:
        with open(cert, encoding="ascii") as handle:
            pem = PEM_CERTIFICATE.search(handle.read())
    except (OSError, UnicodeDecodeError) as problem:
        raise SyncError(f"cannot read the TLS certificate {cert}: {problem}") from None
    if pem is None:
        raise SyncError(f"the TLS certificate file {cert} holds no PEM certificate")
    from salesmgr.sync.wire.auth import certificate_binding  # tcps:// only

    return certificate_binding(ssl.PEM_cert_to_DER_cert(pem.group(0)))


def server_context(url: str, options: Mapping[str, Any]) -> ssl.SSLContext:
    import ssl

    cert, key = options.get("tls_cert"), options.get("tls_key")
    if not cert:
        raise SyncError(f"{url}: tcps:// needs a certificate (--tls-cert, and --tls-key)")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(str(cert), str(key) if key else None)
    except (ssl.SSLError, OSError) as problem:
        raise SyncError(f"cannot load the TLS certificate {cert}: {problem}") from None
    return context


@hookimpl
def salesmgr_register_transports(register: Callable[[AnyTransport], None]) -> None:
    register(TcpTransport())
    register(TlsTcpTransport())
