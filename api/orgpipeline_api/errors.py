"""Errors of the data plane, split by whether a retry can help and by the stage that failed.

The command line prints `str(error)` as one line; the operator reads `transient` to decide whether a
failed Job is worth retrying (a bad manifest or file is not; an unreachable server may be).
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base of every error the data plane raises on purpose; the message is one line for a user."""

    stage: str = "pipeline"
    transient: bool = False

    def __init__(self, message: str, *, stage: str | None = None, transient: bool | None = None) -> None:
        super().__init__(" ".join(message.split()))
        if stage is not None:
            self.stage = stage
        if transient is not None:
            self.transient = transient


class ConfigurationError(PipelineError):
    """Settings or manifest unusable (missing env var, unknown table, reserved column name)."""

    stage = "configuration"


class ServerUnavailable(PipelineError):
    """A server (MongoDB, PostgreSQL, S3) cannot be reached; a later retry may succeed."""

    transient = True


class LockTimeout(PipelineError):
    """Another run of the same org and table holds the run lock for longer than we wait."""

    stage = "lock"
    transient = True
