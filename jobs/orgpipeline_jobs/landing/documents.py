"""The version document of the seed's "MongoDB Record Format".

`_id` is `{composite_key}|v{version}`: deterministic, so a replayed batch cannot add a second copy
of a version (MongoDB refuses the duplicate `_id` and the landing ignores exactly that error).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import bson
from bson.raw_bson import RawBSONDocument
from orgpipeline_api import store_names, triggers

from orgpipeline_jobs.landing.exceptions import LandingError
from orgpipeline_jobs.quality import RecordCheck

PIPELINE_VERSION = "2.0"
LINEAGE = "S3 -> MongoDB -> PostgreSQL"


@dataclass(frozen=True)
class VersionContext:
    """What every document of one file shares."""

    org_id: str
    """The bare id, as in the manifest: the documents hold `store_names.record_org_id` of it."""
    table: str
    run_id: str
    user_id: str | None
    source_file: dict[str, Any]
    now: datetime
    trigger: triggers.RunTrigger = triggers.MANUAL
    """What started the run (who and why): recorded with every version."""


def processing_metadata(ctx: VersionContext, batch_id: str) -> dict[str, Any]:
    """The run's side of a version: pipeline, run, batch and trigger ({"type", "user", "reason"}).

    It is the audit trail's `processing_metadata` (MongoDB and raw_T) and the change log's
    `change_metadata`, so who and why reach both without a column of their own.
    """
    return {
        "ingestion_pipeline_version": PIPELINE_VERSION,
        "data_lineage": LINEAGE,
        "run_id": ctx.run_id,
        "batch_id": batch_id,
        "trigger": ctx.trigger.as_document(),
    }


def version_id(composite_key: str, version: int) -> str:
    return f"{composite_key}|v{version}"


@dataclass(frozen=True)
class Part:
    """What every document of one written part shares: its batch, status and run metadata, built
    once per part (the documents share these objects; BSON encoding only reads them)."""

    ctx: VersionContext
    batch_id: str
    postgres_status: str
    processing: dict[str, Any]
    timestamp: str
    """`ctx.now` as ISO text: the audit trail's change_timestamp."""
    processing_bson: RawBSONDocument
    """`processing` encoded once: the BSON encoder copies it into every document as it is."""

    @classmethod
    def of(cls, ctx: VersionContext, batch_id: str, postgres_status: str) -> Part:
        processing = processing_metadata(ctx, batch_id)
        return cls(
            ctx,
            batch_id,
            postgres_status,
            processing,
            ctx.now.isoformat(),
            RawBSONDocument(bson.encode(processing)),
        )


def build(
    part: Part,
    *,
    composite_key: str,
    values: dict[str, Any],
    version: int,
    data_hash: str,
    change_type: str,
    changed_fields: list[str],
    previous_version: int | None,
    previous_data_hash: str | None,
    line: int | None,
    check: RecordCheck | None,
    for_bson: bool = False,
) -> dict[str, Any]:
    """The version document. `for_bson`: for encoding only, its shared sub-documents (the run's
    processing metadata, the quality of a record without issues) are given encoded once, which
    halves the encoding's time and gives the same bytes."""
    ctx = part.ctx
    quality = check.as_document() if check else PASSED
    quality_doc: Mapping[str, Any] = PASSED_BSON if for_bson and check is None else quality
    processing: Mapping[str, Any] = part.processing_bson if for_bson else part.processing
    source = {**ctx.source_file, "line": line}
    return {
        "_id": version_id(composite_key, version),
        "org_id": store_names.record_org_id(ctx.org_id),
        "composite_key": composite_key,
        "table": ctx.table,
        **values,
        "version": version,
        "data_hash": data_hash,
        "change_type": change_type,
        "changed_fields": changed_fields,
        "changed_by_user_id": ctx.user_id,
        "previous_version": previous_version,
        "previous_data_hash": previous_data_hash,
        "audit_trail": {
            "change_type": change_type,
            "changed_fields": changed_fields,
            "previous_version": previous_version,
            "change_timestamp": part.timestamp,
            "source_file": source,
            "validation_status": quality["status"],
            "validation_errors": quality["errors"],
            "data_quality_score": quality["quality_score"],
            "processing_metadata": processing,
        },
        "data_quality": quality_doc,
        "ingested_at": ctx.now,
        "last_modified": ctx.now,
        "postgres_status": part.postgres_status,
        "record_status": "deleted" if change_type == "DELETE" else "active",
        "is_active": True,
        "file_id": ctx.source_file["file_id"],
        "batch_id": part.batch_id,
        "run_id": ctx.run_id,
    }


PASSED = {"status": "PASSED", "errors": [], "warnings": [], "quality_score": 1.0}
"""The quality document of a record without issues (shared: BSON encoding only reads it)."""

PASSED_BSON = RawBSONDocument(bson.encode(PASSED))


MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
"""MongoDB's document limit: a larger document committed to the outbox would be refused at every
replay, so none is ever encoded (the source rejects such rows first, see `max_record_bytes`)."""


def encode(docs: list[dict[str, Any]]) -> list[RawBSONDocument]:
    """Each document as BSON once: the same bytes go to the outbox and to MongoDB. Raises
    LandingError, before anything of the part is written, for a document over the limit."""
    encoded = [RawBSONDocument(bson.encode(d)) for d in docs]
    for doc, raw in zip(docs, encoded, strict=True):
        if len(raw.raw) > MAX_DOCUMENT_BYTES:
            line = doc.get("audit_trail", {}).get("source_file", {}).get("line")
            raise LandingError(
                f"line {line}: its document is {len(raw.raw)} bytes, over MongoDB's"
                f" {MAX_DOCUMENT_BYTES >> 20} MiB limit"
            )
    return encoded
