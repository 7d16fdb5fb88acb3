"""The one exception hierarchy of salesmgr, in one module.

The command line turns a `SalesmgrError` into a one-line message on stderr and its ``exit_code``;
a sync session that fails tells the other end why with its ``wire_code`` (an ERROR message, see
docs/protocol.md).  Anything else is a bug and is allowed to show its traceback.
"""

from __future__ import annotations

from enum import IntEnum


class ErrorCode(IntEnum):
    """The code an ERROR message or a mailbox REFUSAL carries; frozen across protocol versions."""

    PROTOCOL = 1  # a damaged, malformed or unexpected message
    VERSION = 2  # the two ends speak different protocol versions
    AUTH = 3  # the pairing secrets differ
    PIPELINE = 4  # the device holds another pipeline
    REFUSED = 5  # load onto a device holding changes the desktop has not seen
    MASS_CHANGE = 6  # the desktop stopped a sync that would overwrite too much
    DEVICE_FILE = 7  # the device cannot read or write its pipeline file
    ABORTED = 8  # the other end stopped (timeout, shutdown, an error of its own)


class SalesmgrError(Exception):
    """Base of every error a user can cause; `str(error)` is the one-line message."""

    exit_code = 1
    wire_code = ErrorCode.ABORTED


# --- records and files -------------------------------------------------------------------------


class ValidationError(SalesmgrError):
    """A field value is impossible (probability 140, stage "Maybe", a bad date...)."""

    exit_code = 2


class ConfigError(SalesmgrError):
    """A site config file, a ``--fault`` specification or a command's options cannot be used."""

    exit_code = 2


class PipelineFileError(SalesmgrError):
    """A pipeline file is missing, unreadable, corrupt, truncated or of a newer format."""

    exit_code = 3
    wire_code = ErrorCode.DEVICE_FILE

    def __init__(self, path: object, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class UnknownRecordError(SalesmgrError):
    """An id names no record in the pipeline."""

    exit_code = 4


class PluginError(SalesmgrError):
    """A plugin is missing, misnamed or declares something twice."""

    exit_code = 5


# --- merging -----------------------------------------------------------------------------------


class MergeError(SalesmgrError):
    """Two pipelines cannot be merged as asked (no shared history, mass change...)."""

    exit_code = 6


class MassChange(MergeError):
    """A merge would delete or overwrite too much of one side (the brake)."""

    wire_code = ErrorCode.MASS_CHANGE


# --- syncing -----------------------------------------------------------------------------------


class SyncError(SalesmgrError):
    """A sync session failed: refused by the peer, authentication, timeout, broken link."""

    exit_code = 7


class PartlySynced(SyncError):
    """A folder sync or load did what it could, and saved it, but refused some entries of the
    folder (over a cap, unsealed, damaged): not a full success, and not nothing done."""

    exit_code = 8


class Interrupted(SalesmgrError):
    """The user stopped a command (Ctrl-C); the message says what was already written."""

    exit_code = 130  # as a shell reports a command stopped by SIGINT


class AcceptTimeout(SyncError, TimeoutError):
    """No desktop came within the time given (a TimeoutError, as a socket's accept raises)."""


class ProtocolError(SyncError):
    """A message broke the protocol: damaged, malformed, unexpected, or of another version."""

    wire_code = ErrorCode.PROTOCOL


class VersionMismatch(ProtocolError):
    wire_code = ErrorCode.VERSION

    def __init__(self, message: str, peer_version: int) -> None:
        super().__init__(message)
        self.peer_version = peer_version


class PeerError(SyncError):
    """The other end stopped the session and said why (an ERROR message)."""

    def __init__(self, peer: str, code: int, text: str) -> None:
        super().__init__(f"the {peer} stopped the session: {text}")
        self.wire_code = code  # type: ignore[assignment]  # the peer's, possibly unknown to us
        self.text = text


class SessionError(SyncError):
    """This end stops the session on purpose; ``peer_text`` is what the other end is told."""

    def __init__(self, message: str, code: ErrorCode, peer_text: str | None = None) -> None:
        super().__init__(message)
        self.wire_code = code
        self.peer_text = peer_text or message


class DropError(SyncError):
    """A mailbox drop cannot be taken; ``str()`` names it and says why."""

    wire_code = ErrorCode.PROTOCOL


class IncompleteDrop(DropError):
    """Shorter than its envelope says: cut, or still being copied into the mailbox."""


class DamagedDrop(DropError):
    """Not a drop, or its bytes do not match their checksum, or its body is malformed."""


class ForeignDrop(DropError):
    """Whole and undamaged but not sealed with our secret: another pairing, or altered."""

    wire_code = ErrorCode.AUTH
