"""Errors of the source stage."""

from __future__ import annotations

from orgpipeline_api.errors import PipelineError


class SourceError(PipelineError):
    """A file cannot be found or read (bad path, missing bucket, permission)."""

    stage = "source"


class FileRejected(PipelineError):
    """The file as a whole cannot be ingested (binary, empty, header missing required columns).

    Nothing of it is landed; the file is recorded as rejected with this reason and is not retried
    until its content (etag/size) changes.
    """

    stage = "source"


class BlockTooSmall(PipelineError):
    """A row is larger than the parser's block: the caller retries the file with larger blocks."""

    stage = "source"


class FileQuarantined(PipelineError):
    """A store refused the file's content half way (a PostgreSQL data exception or program limit,
    a document MongoDB refuses): the part being written is rolled back, the file is recorded as
    quarantined with this reason (no stored value in it) and later files of the table load. It
    is not retried until `orgpipeline files retry` re-queues it or its content changes."""

    stage = "warehouse"
