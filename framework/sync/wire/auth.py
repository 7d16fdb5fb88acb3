"""Mutual challenge-response with the pairing secret: each end proves it knows the secret
without sending it, and both derive a session key that seals every later message.

Each end picks a fresh random nonce; a proof is an HMAC of both nonces under the secret, with a
label naming the prover, so neither proof can be replayed as the other or in another session.
A peer without the secret learns nothing but one HMAC over nonces — use a long random secret so
that an offline guess is hopeless.
"""

from __future__ import annotations

import hmac
import secrets
from hashlib import sha256

from salesmgr.errors import SyncError
from salesmgr.sync.wire.protocol import NONCE_SIZE

DEVICE_LABEL = b"salesmgr device proof\x00"
DESKTOP_LABEL = b"salesmgr desktop proof\x00"
SESSION_LABEL = b"salesmgr session key\x00"


def secret_bytes(secret: str | bytes) -> bytes:
    raw = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    if not raw:
        raise SyncError("the pairing secret is empty")
    return raw


def new_nonce() -> bytes:
    return secrets.token_bytes(NONCE_SIZE)


def _mac(secret: bytes, label: bytes, desktop_nonce: bytes, device_nonce: bytes) -> bytes:
    return hmac.new(secret, label + desktop_nonce + device_nonce, sha256).digest()


def device_proof(secret: bytes, desktop_nonce: bytes, device_nonce: bytes) -> bytes:
    return _mac(secret, DEVICE_LABEL, desktop_nonce, device_nonce)


def desktop_proof(secret: bytes, desktop_nonce: bytes, device_nonce: bytes) -> bytes:
    return _mac(secret, DESKTOP_LABEL, desktop_nonce, device_nonce)


def session_key(secret: bytes, desktop_nonce: bytes, device_nonce: bytes) -> bytes:
    return _mac(secret, SESSION_LABEL, desktop_nonce, device_nonce)


def proof_matches(expected: bytes, received: bytes) -> bool:
    """Constant-time comparison, so timing tells an attacker nothing about the proof."""
    return hmac.compare_digest(expected, received)
