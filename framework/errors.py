"""The one exception hierarchy of salesmgr.

The command line turns a `SalesmgrError` into a one-line message on stderr and a non-zero exit;
anything else is a bug and is allowed to show its traceback.
"""

from __future__ import annotations


class SalesmgrError(Exception):
    """Base of every error a user can cause; `str(error)` is the one-line message."""

    exit_code = 1


class ValidationError(SalesmgrError):
    """A field value is impossible (probability 140, stage "Maybe", a bad date...)."""

    exit_code = 2


class PipelineFileError(SalesmgrError):
    """A pipeline file is missing, unreadable, corrupt, truncated or of a newer format."""

    exit_code = 3

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


class MergeError(SalesmgrError):
    """Two pipelines cannot be merged as asked (no shared history, mass change...)."""

    exit_code = 6


class SyncError(SalesmgrError):
    """A sync session failed: refused by the peer, authentication, timeout, broken link."""

    exit_code = 7
