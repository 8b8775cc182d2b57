"""Deciding a batch's new versions from its records and the heads that `warehouse.heads.classify`
returned: pure, so the rules read in one place and tests call them without a server.

Rows are applied in file order, so a key repeated in one file gives the same result every time
(each later row compares with the earlier one, the last wins) and counts as a duplicate. A row whose
key's head already points at this file and at a line at or after the row's own was applied by an
interrupted attempt of this file: the rerun counts it as it was counted then and writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from orgpipeline_jobs.records import CheckedBatch
from orgpipeline_jobs.warehouse.heads import Head, HeadRow


@dataclass
class NewVersion:
    index: int
    """The record's index in its CheckedBatch."""
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


def repeated_keys(keys: list[str]) -> list[bool]:
    """Whether each row's key occurs more than once in the batch."""
    seen: dict[str, int] = {}
    for key in keys:
        seen[key] = seen.get(key, 0) + 1
    if len(seen) == len(keys):
        return [False] * len(keys)
    return [seen[k] > 1 for k in keys]


def plan(batch: CheckedBatch, candidates: dict[int, Head | None], file_id: str, snapshot: bool) -> Plan:
    """The new versions and head updates of a batch; rows not among `candidates` are unchanged."""
    result = Plan(unchanged=len(batch) - len(candidates))
    overlay: dict[str, tuple[Head, int]] = {}
    seen = file_id if snapshot else None
    for index in sorted(candidates):
        ck, line, data_hash = batch.composite_keys[index], batch.lines[index], batch.data_hashes[index]
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
        result.versions.append(NewVersion(index, ck, version, change, head, previous_data))
        overlay[ck] = (Head(version, data_hash, change, file_id, line), index)
        if change == "INSERT":
            result.inserted += 1
        else:
            result.updated += 1
    for ck, (head, index) in overlay.items():
        result.heads.append(
            (
                ck,
                head.version,
                head.data_hash,
                head.change_type,
                batch.data_json[index],
                file_id,
                head.line,
                seen,
            )
        )
    return result
