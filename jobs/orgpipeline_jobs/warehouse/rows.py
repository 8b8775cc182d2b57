"""The raw_{table} and change-log rows of a version document (the loading of `ingest` + `load`,
the snapshot DELETE versions and the replay of a load); `versions.version_rows` builds the same rows
column-wise for `run`, and a test holds the two equal."""

from __future__ import annotations

import json
from typing import Any

from orgpipeline_api import store_names
from orgpipeline_api.orgschema.ddl import AUDIT_COLUMN_NAMES


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def pg_row(doc: dict[str, Any], columns: list[str]) -> tuple[Any, ...]:
    """The raw_{table} row of a version document, in `raw_columns(columns)` order."""
    audit = doc["audit_trail"]
    return (
        store_names.record_org_id(doc["org_id"]),  # a document of an older release: the bare id
        doc["composite_key"],
        *(doc.get(c) for c in columns),
        doc["version"],
        doc["data_hash"],
        doc["change_type"],
        _json(doc["changed_fields"]),
        doc["changed_by_user_id"],
        doc["previous_version"],
        _json(audit),
        doc["ingested_at"],
        doc["last_modified"],
        "loaded",
        doc["record_status"],
        doc["is_active"],
        _json(doc["data_quality"]),
        _json(audit["source_file"]),
        _json(audit["processing_metadata"]),
    )


def raw_columns(columns: list[str]) -> list[str]:
    """The raw_{table} columns `pg_row` fills: keys, business columns, then the DDL's audit columns."""
    return ["org_id", "composite_key", *columns, *AUDIT_COLUMN_NAMES]


CHANGE_LOG_COLUMNS = [
    "org_id",
    "composite_key",
    "old_version",
    "new_version",
    "change_type",
    "changed_fields",
    "changed_by_user_id",
    "change_timestamp",
    "old_data_hash",
    "new_data_hash",
    "change_metadata",
    "source_info",
]


def change_log_row(doc: dict[str, Any]) -> tuple[Any, ...]:
    audit = doc["audit_trail"]
    return (
        store_names.record_org_id(doc["org_id"]),  # a document of an older release: the bare id
        doc["composite_key"],
        doc["previous_version"],
        doc["version"],
        doc["change_type"],
        _json(doc["changed_fields"]),
        doc["changed_by_user_id"],
        doc["ingested_at"],
        doc.get("previous_data_hash"),
        doc["data_hash"],
        _json(audit["processing_metadata"]),
        _json(audit["source_file"]),
    )
