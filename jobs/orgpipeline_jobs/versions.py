"""Deciding a batch's new versions from its records and the heads that `warehouse.heads.classify_batch`
returned: pure, so the rules read in one place and tests call them without a server.

Rows are applied in file order, so a key repeated in one file gives the same result every time
(each later row compares with the earlier one, the last wins) and counts as a duplicate. A row whose
key's head already points at this file and at a line at or after the row's own was applied by an
interrupted attempt of this file: the rerun counts it as it was counted then and writes nothing.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from orgpipeline_api import store_names

from orgpipeline_jobs.landing import documents
from orgpipeline_jobs.records import CheckedBatch
from orgpipeline_jobs.warehouse.heads import Head, HeadRow


@dataclass
class NewVersion:
    index: int
    """The record's index in its CheckedBatch."""
    line: int
    """The record's physical line in its file."""
    composite_key: str
    version: int
    change_type: str
    previous: Head | None
    previous_data: dict[str, Any] | None
    """The values the previous version had, for changed_fields (UPDATE only)."""


@dataclass
class Plan:
    versions: list[NewVersion] = field(default_factory=list)
    heads: list[HeadRow] = field(default_factory=list)
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    duplicates: int = 0


def repeated_keys(keys: pa.Array) -> pa.Array:
    """Whether each row's key occurs more than once in the batch (bool)."""
    if pc.count_distinct(keys).as_py() == len(keys):
        return pa.repeat(pa.scalar(False, pa.bool_()), len(keys))
    counts = pc.value_counts(keys)
    repeated = pc.filter(counts.field("values"), pc.greater(counts.field("counts"), 1))
    return pc.is_in(keys, value_set=repeated)


def plan(batch: CheckedBatch, candidates: dict[int, Head | None], file_id: str, snapshot: bool) -> Plan:
    """The new versions and head updates of a batch; rows not among `candidates` are unchanged."""
    result = Plan(unchanged=len(batch) - len(candidates))
    overlay: dict[str, tuple[Head, int]] = {}
    seen = file_id if snapshot else None
    order = sorted(candidates)
    taken = pa.array(order, pa.int64())
    keys = batch.key_array.take(taken).to_pylist()  # only the candidates' (a few of a re-run's rows)
    lines = batch.line_array.take(taken).to_pylist()
    for index, ck, line in zip(order, keys, lines, strict=True):
        data_hash = batch.data_hashes[index]
        earlier = overlay.get(ck)
        head = earlier[0] if earlier else candidates[index]
        if head is not None and head.file_id == file_id:
            if earlier is None and head.line >= line:  # applied by an interrupted attempt
                if head.line == line and head.change_type == "INSERT":
                    result.inserted += 1
                elif head.line == line and head.change_type == "UPDATE":
                    result.updated += 1
                else:
                    result.unchanged += 1
                continue
            result.duplicates += 1
        if head is not None and head.change_type != "DELETE" and head.data_hash == data_hash:
            result.unchanged += 1
            continue
        change = "INSERT" if head is None or head.change_type == "DELETE" else "UPDATE"
        previous_data = None
        if change == "UPDATE" and head is not None:
            previous_data = batch.python_values([earlier[1]])[0] if earlier else (head.data or {})
        version = (head.version if head else 0) + 1
        result.versions.append(NewVersion(index, line, ck, version, change, head, previous_data))
        overlay[ck] = (Head(version, data_hash, change, file_id, line), index)
        if change == "INSERT":
            result.inserted += 1
        else:
            result.updated += 1
    data = batch.json_array.take(pa.array([index for _, index in overlay.values()], pa.int64())).to_pylist()
    for (ck, (head, _)), data_json in zip(overlay.items(), data, strict=True):
        result.heads.append(
            (ck, head.version, head.data_hash, head.change_type, data_json, file_id, head.line, seen)
        )
    return result


def split(whole: Plan, size: int) -> list[Plan]:
    """The plan in parts of at most `size` new versions (at least one part, perhaps empty); each head
    goes with the part that holds its key's last version. Counts stay on the whole plan."""
    size = max(1, size)
    parts = [
        Plan(versions=whole.versions[start : start + size]) for start in range(0, len(whole.versions), size)
    ] or [Plan()]
    last = {new.composite_key: k // size for k, new in enumerate(whole.versions)}
    for row in whole.heads:
        parts[last.get(row[0], len(parts) - 1)].heads.append(row)
    return parts


# ---- the batch's PostgreSQL rows, column-wise -----------------------------------------------------


def _json_list(items: list[str]) -> str:
    return json.dumps(items, ensure_ascii=False) if items else "[]"


@dataclass
class VersionRows:
    """The raw_{table} and change-log rows of a batch's new versions, as string columns for COPY."""

    raw: dict[str, pa.Array]
    change_log: dict[str, pa.Array]


def version_rows(
    batch: CheckedBatch,
    plan_: Plan,
    part: documents.Part,
    changed: list[list[str]],
) -> VersionRows:
    """What `warehouse.rows.pg_row` and `warehouse.rows.change_log_row` give for each new version's document,
    built column by column: the audit JSON from its constant parts and the per-row values."""
    ctx, n = part.ctx, len(plan_.versions)
    index = pa.array([v.index for v in plan_.versions], pa.int64())
    const = functools.partial(_repeat, n=n)
    change = pa.array([v.change_type for v in plan_.versions], pa.string())
    previous = pa.array([v.previous.version if v.previous else None for v in plan_.versions], pa.int64())
    previous_hash = pa.array(
        [v.previous.data_hash if v.previous else None for v in plan_.versions], pa.string()
    )
    version = pa.array([v.version for v in plan_.versions], pa.int64())
    changed_json = pa.array([_json_list(c) for c in changed], pa.string())
    lines = pc.cast(pc.take(batch.line_array, index), pa.string())
    status = [documents.PASSED["status"]] * n
    errors = ["[]"] * n
    warnings = ["[]"] * n
    scores = ["1.0"] * n
    for k, new in enumerate(plan_.versions):
        check = batch.checks.get(new.index)
        if check is not None:
            doc = check.as_document()
            status[k] = doc["status"]
            errors[k] = _json_list(doc["errors"])
            warnings[k] = _json_list(doc["warnings"])
            scores[k] = repr(float(doc["quality_score"]))
    status_a, errors_a, warnings_a, scores_a = (
        pa.array(status, pa.string()),
        pa.array(errors, pa.string()),
        pa.array(warnings, pa.string()),
        pa.array(scores, pa.string()),
    )
    source = pc.binary_join_element_wise(
        json.dumps(ctx.source_file, ensure_ascii=False, default=str)[:-1] + ',"line":', lines, "}", ""
    )
    processing = json.dumps(part.processing, ensure_ascii=False)
    now = part.timestamp
    previous_text = pc.fill_null(pc.cast(previous, pa.string()), "null")
    audit = pc.binary_join_element_wise(
        '{"change_type":"', change,
        '","changed_fields":', changed_json,
        ',"previous_version":', previous_text,
        ',"change_timestamp":"' + now + '","source_file":', source,
        ',"validation_status":"', status_a,
        '","validation_errors":', errors_a,
        ',"data_quality_score":', scores_a,
        ',"processing_metadata":' + processing + "}",
        "",
    )  # fmt: skip
    quality_doc = pc.binary_join_element_wise(
        '{"status":"', status_a, '","errors":', errors_a, ',"warnings":', warnings_a,
        ',"quality_score":', scores_a, "}", "",
    )  # fmt: skip
    keys = pa.array([v.composite_key for v in plan_.versions], pa.string())
    user = const(ctx.user_id)
    raw: dict[str, pa.Array] = {"org_id": const(store_names.record_org_id(ctx.org_id)), "composite_key": keys}
    for name, values in batch.columns.items():
        raw[name] = pc.take(values, index)
    data_hash = pc.take(batch.hash_array, index)
    raw.update(
        version=version,
        data_hash=data_hash,
        change_type=change,
        changed_fields=changed_json,
        changed_by_user_id=user,
        previous_version=previous,
        audit_trail=audit,
        ingested_at=const(now),
        last_modified=const(now),
        postgres_status=const("loaded"),
        record_status=const("active"),
        is_active=const("true"),
        data_quality=quality_doc,
        source_file_metadata=source,
        processing_metadata=const(processing),
    )
    log = {
        "org_id": raw["org_id"],
        "composite_key": keys,
        "old_version": previous,
        "new_version": version,
        "change_type": change,
        "changed_fields": changed_json,
        "changed_by_user_id": user,
        "change_timestamp": const(now),
        "old_data_hash": previous_hash,
        "new_data_hash": data_hash,
        "change_metadata": const(processing),
        "source_info": source,
    }
    return VersionRows(raw, log)


def _repeat(value: str | None, n: int) -> pa.Array:
    return pa.repeat(pa.scalar(value, pa.string()), n)
