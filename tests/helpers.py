"""What many specifications need: run the command line in-process, read a one-line error, make
a small desktop file, and compare pipelines by what users see."""

from __future__ import annotations

import shutil
import subprocess
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from salesmgr import storage
from salesmgr.cli.group import cli
from salesmgr.errors import SalesmgrError
from salesmgr.model.pipeline import Pipeline, Sources
from salesmgr.plugin.manager import get_registry
from salesmgr.testing.compare import user_data


def salesmgr(*args: object, env: dict[str, str] | None = None) -> Result:
    """``salesmgr ARGS`` through click's runner (stdout and stderr kept apart)."""
    return CliRunner().invoke(cli, [str(a) for a in args], env=env, catch_exceptions=False)


def peak_memory_of(action: Callable[[], object]) -> int:
    """The most memory (bytes traced) ``action`` held at once; its SalesmgrError is expected."""
    tracemalloc.start()
    try:
        action()
    except SalesmgrError:
        pass
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak


def one_error_line(result: Result) -> str:
    """The one line a failed command wrote on stderr (and no traceback anywhere)."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def desktop_file(folder: Path, count: int = 5, name: str = "Spring") -> Path:
    pipeline = Pipeline.create(name, "ana")
    rtype = get_registry().record_type("opportunity")
    for i in range(count):
        pipeline.add(rtype, {"company": f"Company {i}", "title": f"Deal {i}", "notes": "met"})
    path = folder / f"{name.lower()}.pipe"
    storage.save(pipeline, path)
    return path


def content(path: Path) -> dict[str, Any]:
    """A pipeline file's user data (no versions, no hidden fields)."""
    return user_data(storage.load(path))


class Ticking(Sources):
    """Real ids; a wall clock that moves on a second at every write, as edits by hand do (so
    "the later edit" never depends on two writes falling in the same millisecond)."""

    def __init__(self) -> None:
        self.now = 1_796_000_000_000

    def now_ms(self) -> int:
        self.now += 1000
        return self.now


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "device-cert.pem", folder / "device-key.pem"
    try:
        from cryptography import x509  # noqa: F401
    except ImportError:
        pass
    else:
        return _certificate_with_cryptography(cert, key)
    if shutil.which("openssl") is None:
        pytest.skip("neither the cryptography package nor the openssl command is available")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )
    return cert, key


def _certificate_with_cryptography(cert: Path, key: Path) -> tuple[Path, Path]:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert, key
