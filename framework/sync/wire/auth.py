"""Mutual challenge-response with the pairing secret, bound to the channel it runs on.

Each end picks a fresh random nonce; a proof is an HMAC of both nonces and the *channel binding*
under the secret, with a label naming the prover, so neither proof can be replayed as the other,
in another session, or on another connection.  Both ends then derive the session key that seals
every later message.

The channel binding is what the link says about itself (`Link.channel_binding`): on ``tcps://``
the SHA-256 of the device's TLS certificate, as each end sees it (tls-server-end-point, RFC 5929);
empty on a link without TLS.  A relay in the middle of a TLS link shows the desktop its own
certificate, so the desktop's binding differs from the device's and neither proof verifies: the
relay learns nothing and passes nothing on, even when the desktop checks no certificate.

A peer without the secret sees one HMAC over nonces it partly chose; guessing the secret offline
from it is hopeless only when the secret is strong, so the command line refuses weak secrets
(`check_strength`) and ``salesmgr pair`` makes strong ones.  (A password-authenticated key
exchange would protect a short secret on a live link, but the drops of ``folder://`` and the
seals of pipeline files are HMACs anyone who reads the folder can test guesses against: there is
no live peer to rate-limit guesses, so only a strong secret protects them.)
"""

from __future__ import annotations

import hmac
import io
import math
import secrets
import time
from collections.abc import Callable
from functools import partial
from hashlib import sha256
from typing import IO, Protocol, TypeVar, cast

from salesmgr import storage
from salesmgr.errors import ConfigError, ErrorCode, SessionError, SyncError
from salesmgr.model.pipeline import Pipeline
from salesmgr.plugin.manager import Registry, get_registry
from salesmgr.sync.wire.protocol import NONCE_SIZE, Challenge, Hello, Message, Proof

DEVICE_LABEL = b"salesmgr device proof\x00"
DESKTOP_LABEL = b"salesmgr desktop proof\x00"
SESSION_LABEL = b"salesmgr session key\x00"
SEAL_LABEL = b"salesmgr file seal\x00"
SEAL_ENTRY = "seal"  # the pipeline file header entry (`extra`) that holds a file's seal
# Seconds a device gives a peer to prove it knows the secret (TLS, HELLO and PROOF together),
# whatever the session's own timeout: a silent or slow connection cannot hold the device.
HANDSHAKE_DEADLINE = 5.0
# The weakest pairing secret the command line accepts, by the estimate of `strength_bits`.
MIN_STRENGTH_BITS = 128
# What `strength_bits` counts per character class present (every other character: 100).
CLASSES = (
    (str.islower, 26),
    (str.isupper, 26),
    (str.isdigit, 10),
    (lambda c: c.isascii() and not c.isalnum(), 33),
)
M = TypeVar("M", bound=Message)


class Messages(Protocol):
    """What a handshake needs of a session's channel: numbered messages, and the key slot."""

    key: bytes | None

    def send(self, message: Message) -> None: ...

    def receive(self, kind: type[M], timeout: float | None = None) -> M: ...


def secret_bytes(secret: str | bytes) -> bytes:
    raw = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    if not raw:
        raise SyncError("the pairing secret is empty")
    return raw


def strength_bits(secret: str) -> float:
    """An upper estimate of a secret's strength: length × log2(the size of the character classes
    it uses).  Words and patterns make a real secret weaker than this, never stronger."""
    pool = sum(size for test, size in CLASSES if any(map(test, secret)))
    if any(not c.isascii() for c in secret):
        pool += 100
    distinct = len(set(secret))
    return min(len(secret), 2 * distinct) * math.log2(pool) if pool > 1 else 0.0


def check_strength(secret: str) -> str:
    """``secret``, or ConfigError when it is below `MIN_STRENGTH_BITS`."""
    bits = strength_bits(secret)
    if bits < MIN_STRENGTH_BITS:
        raise ConfigError(
            f"the pairing secret is too weak ({bits:.0f} bits, at least {MIN_STRENGTH_BITS} "
            "needed): make one with `salesmgr pair` and give it to both ends"
        )
    return secret


def new_secret() -> str:
    """A fresh pairing secret: 32 random bytes, URL-safe base64 (43 characters, 256 bits)."""
    while True:
        secret = secrets.token_urlsafe(32)
        if strength_bits(secret) >= MIN_STRENGTH_BITS:  # all but never fails the first time
            return secret


def new_nonce() -> bytes:
    return secrets.token_bytes(NONCE_SIZE)


def certificate_binding(der: bytes) -> bytes:
    """The channel binding of a TLS link: SHA-256 of the device's certificate (DER)."""
    return sha256(der).digest()


def _mac(
    secret: bytes, label: bytes, desktop_nonce: bytes, device_nonce: bytes, binding: bytes
) -> bytes:
    return hmac.new(secret, label + desktop_nonce + device_nonce + binding, sha256).digest()


def device_proof(
    secret: bytes, desktop_nonce: bytes, device_nonce: bytes, binding: bytes = b""
) -> bytes:
    return _mac(secret, DEVICE_LABEL, desktop_nonce, device_nonce, binding)


def desktop_proof(
    secret: bytes, desktop_nonce: bytes, device_nonce: bytes, binding: bytes = b""
) -> bytes:
    return _mac(secret, DESKTOP_LABEL, desktop_nonce, device_nonce, binding)


def session_key(
    secret: bytes, desktop_nonce: bytes, device_nonce: bytes, binding: bytes = b""
) -> bytes:
    return _mac(secret, SESSION_LABEL, desktop_nonce, device_nonce, binding)


# --- seals: a pipeline file that proves it was written by a paired replica ------------------------


def seal_key(secret: bytes) -> bytes:
    """The key that seals pipeline files written by a paired replica."""
    return hmac.new(secret, SEAL_LABEL, sha256).digest()


class _Mac:
    """A stream that feeds what is written to it to a MAC, keeping nothing."""

    def __init__(self, key: bytes) -> None:
        self.mac = hmac.new(key, digestmod=sha256)

    def write(self, data: bytes) -> int:
        self.mac.update(data)
        return len(data)

    def seekable(self) -> bool:
        return False


def sealing(secret: bytes) -> storage.Signer:
    """The seal, for `storage.save`: header entry ``seal``, HMAC-SHA256 under `seal_key` of
    the file as it is written without that entry, fed to the MAC as it is built."""
    key = seal_key(secret)

    def seal(write_unsealed: Callable[[IO[bytes]], None]) -> str:
        sink = _Mac(key)
        write_unsealed(cast(IO[bytes], sink))
        return sink.mac.hexdigest()

    return SEAL_ENTRY, seal


def _seal_of(pipeline: Pipeline, secret: bytes, registry: Registry | None) -> str:
    """The seal of ``pipeline`` as it would be written without a ``seal`` entry."""
    _, seal = sealing(secret)
    codec = (registry or get_registry()).writer_codec()
    claimed = pipeline.extra.pop(SEAL_ENTRY, None)
    try:
        return seal(partial(codec.write, pipeline))
    finally:
        if claimed is not None:
            pipeline.extra[SEAL_ENTRY] = claimed


def sealed_file(pipeline: Pipeline, secret: bytes, registry: Registry | None = None) -> bytes:
    """The bytes of ``pipeline`` as a pipeline file carrying its seal (docs/file-format.md,
    "Seal"): the header entry ``seal`` holds HMAC-SHA256 under `seal_key` of the file as it is
    encoded without that entry."""
    out = io.BytesIO()
    entry, seal = sealing(secret)
    (registry or get_registry()).writer_codec().write_signed(pipeline, out, entry, seal)
    return out.getvalue()


def seal_problem(pipeline: Pipeline, secret: bytes, registry: Registry | None = None) -> str:
    """Why ``pipeline`` (as read from a file) does not prove it comes from a replica paired
    with ``secret``, or "" when its seal verifies."""
    claimed = pipeline.extra.get(SEAL_ENTRY)
    if claimed is None:
        return "it carries no seal of a paired device"
    if not hmac.compare_digest(_seal_of(pipeline, secret, registry), claimed):
        return (
            "its seal does not verify (sealed with another pairing secret, or changed since "
            "it was sealed)"
        )
    return ""


def proof_matches(expected: bytes, received: bytes) -> bool:
    """Constant-time comparison, so timing tells an attacker nothing about the proof."""
    return hmac.compare_digest(expected, received)


# --- the two halves of the handshake -------------------------------------------------------------


def desktop_handshake(
    channel: Messages,
    secret: bytes,
    software: str,
    binding: bytes,
    hello: Callable[[str], None] = lambda _: None,
) -> None:
    """HELLO, check the device's proof, PROOF; then ``channel.key`` seals every message.

    ``hello`` hears the device's software once its CHALLENGE arrived."""
    nonce = new_nonce()
    channel.send(Hello(nonce, software))
    challenge = channel.receive(Challenge)
    hello(challenge.software)
    if not proof_matches(device_proof(secret, nonce, challenge.nonce, binding), challenge.proof):
        raise SessionError(
            "authentication failed: the device does not know this pairing secret, or something "
            "between the two ends relays the connection (give both ends the same --secret or "
            "SALESMGR_SECRET)",
            ErrorCode.AUTH,
            "authentication failed: the desktop does not accept this device's pairing secret",
        )
    channel.send(Proof(desktop_proof(secret, nonce, challenge.nonce, binding)))
    channel.key = session_key(secret, nonce, challenge.nonce, binding)


def device_handshake(
    channel: Messages,
    secret: bytes,
    software: str,
    binding: bytes,
    hello: Callable[[str], None] = lambda _: None,
    deadline: float = HANDSHAKE_DEADLINE,
) -> None:
    """Answer HELLO with a CHALLENGE, check the desktop's PROOF, all within ``deadline``
    seconds; then ``channel.key`` seals every message."""
    ends = time.monotonic() + deadline
    greeting = channel.receive(Hello, deadline)
    hello(greeting.software)
    nonce = new_nonce()
    channel.send(Challenge(nonce, device_proof(secret, greeting.nonce, nonce, binding), software))
    left = ends - time.monotonic()
    if left <= 0:
        raise SyncError(f"the desktop did not authenticate within {deadline:g} s")
    proof = channel.receive(Proof, left)
    expected = desktop_proof(secret, greeting.nonce, nonce, binding)
    if not proof_matches(expected, proof.proof):
        raise SessionError(
            "authentication failed: the desktop does not know this pairing secret",
            ErrorCode.AUTH,
            "authentication failed: the device does not accept this desktop's pairing secret "
            "(give both ends the same --secret or SALESMGR_SECRET)",
        )
    channel.key = session_key(secret, greeting.nonce, nonce, binding)
