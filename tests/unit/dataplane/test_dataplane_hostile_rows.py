"""Hostile values cost one rejected row or one warning, never the file and never unbounded time."""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa
import pytest
from orgpipeline_api.v1alpha1 import Column, Table
from orgpipeline_jobs import quality, records
from orgpipeline_jobs.landing import documents
from orgpipeline_jobs.landing.exceptions import LandingError
from orgpipeline_jobs.source.configuration import SourceConfig
from orgpipeline_jobs.source.csvstream import Batch, CsvStream
from orgpipeline_jobs.source.exceptions import FileRejected
from pydantic import ValidationError

pytestmark = pytest.mark.unit

EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
"""The example manifest's pattern: quadratic in a backtracking engine on `a@....@`."""

KILLER = "a@" + "." * 20_000 + "@"

TABLE = Table.model_validate(
    {
        "name": "orders",
        "businessKeys": ["id"],
        "columns": [
            {"name": "id", "type": "text", "required": True},
            {"name": "n", "type": "integer"},
            {"name": "email", "type": "text", "pattern": EMAIL},
            {"name": "code", "type": "integer", "pattern": "^[0-9]{3}$"},
        ],
    }
)


def read(data: bytes, tmp_path: Path, config: SourceConfig | None = None) -> tuple[list[list[str]], list]:
    path = tmp_path / "f.csv"
    path.write_bytes(data)
    rows: list[list[str]] = []
    rejected = []
    with path.open("rb") as handle:
        stream = CsvStream(handle, config or SourceConfig())
        stream.open()
        for batch in stream.batches():
            rows += batch.rows()
            rejected += batch.rejected
    return rows, rejected


def test_a_nul_past_the_first_8_kib_rejects_only_its_row(tmp_path: Path) -> None:
    lines = [f"O{i},{i},a note of row {i}" for i in range(800)]
    lines[600] = "O600,600,before\x00after"
    data = ("id,n,note\n" + "\n".join(lines) + "\n").encode()
    assert data.index(b"\x00") > 8192
    rows, rejected = read(data, tmp_path)
    assert len(rows) == 799 and all("\x00" not in v for row in rows for v in row)
    assert [(r.line, r.issue_type, r.field) for r in rejected] == [(602, "nul_byte", "note")]
    assert "NUL" in rejected[0].reason and "\x00" not in rejected[0].text


def test_a_nul_in_the_first_rows_rejects_only_its_row(tmp_path: Path) -> None:
    rows, rejected = read(b"id,n,note\nO1,1,a\x00b\nO2,2,fine\n", tmp_path)
    assert rows == [["O2", "2", "fine"]]
    assert [(r.line, r.issue_type) for r in rejected] == [(2, "nul_byte")]
    with pytest.raises(FileRejected, match="binary"):  # a NUL in the header: not a text file
        read(b"id,\x00n\nO1,1\n", tmp_path)


def test_a_record_over_its_limit_is_one_rejected_row(tmp_path: Path) -> None:
    data = b"id,a,b\nO1,1,1\nO2," + b"x" * 600 + b"," + b"y" * 600 + b"\nO3,3,3\n"
    rows, rejected = read(data, tmp_path, SourceConfig(max_field_bytes=1000, max_record_bytes=1000))
    assert [r[0] for r in rows] == ["O1", "O3"]
    assert [(r.line, r.issue_type) for r in rejected] == [(3, "record_too_large")]
    assert "1000 bytes" in rejected[0].reason


def timed_check(values: dict[str, str]) -> tuple[float, quality.RecordCheck, records.CheckedBatch]:
    header = ["id", "n", "email", "code"]
    row = [values.get(h, "") for h in header]
    batch = Batch([pa.array([v], pa.string()) for v in row], pa.array([2], pa.int64()))
    started = time.perf_counter()
    scalar = quality.RecordChecker(TABLE, ["id"]).check(dict(zip(header, row, strict=True)))
    checker = records.BatchChecker(TABLE, ["id"])
    acc = quality.QualityAccumulator(len(checker.scalar.completeness_columns))
    checked = checker.check(header, batch, "o_1", acc)
    return time.perf_counter() - started, scalar, checked


@pytest.mark.parametrize("size", [20_000, 1_000_000])
def test_the_example_email_pattern_runs_in_linear_time(size: int) -> None:
    killer = "a@" + "." * size + "@"
    elapsed, scalar, checked = timed_check({"id": "O1", "n": "1", "email": killer})
    assert elapsed < 0.5, f"{elapsed:.2f} s for a {size}-character value"
    assert [w.issue_type for w in scalar.warnings] == ["pattern_mismatch"]
    assert len(checked) == 1 and [w.issue_type for w in checked.checks[0].warnings] == ["pattern_mismatch"]


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        (r"^(a+)\1$", "backreference"),
        (r"^(?=a)a$", "lookaround"),
        (r"^(?<!a)b$", "lookaround"),
        (r"^a{2000}$", "repetition"),
        (r"^(a", "missing )"),
    ],
)
def test_a_pattern_the_linear_engine_cannot_run_is_refused_with_its_reason(pattern: str, reason: str) -> None:
    with pytest.raises(ValidationError) as info:
        Column.model_validate({"name": "email", "type": "text", "pattern": pattern})
    message = str(info.value)
    assert "column email: invalid pattern" in message and "RE2" in message and reason in message


def test_no_document_over_the_store_limit_is_ever_encoded_for_the_outbox() -> None:
    doc = {"_id": "k:1", "note": "x" * (17 << 20), "audit_trail": {"source_file": {"line": 7}}}
    with pytest.raises(LandingError, match=r"line 7: .* over MongoDB's 16 MiB limit"):
        documents.encode([doc])
    assert len(documents.encode([{"_id": "k:2", "note": "x" * (15 << 20)}])) == 1


def test_a_malformed_row_with_bytes_that_are_not_utf8_is_one_rejected_row(tmp_path: Path) -> None:
    """Found by the hostile-input suite: pyarrow decoded such a row strictly and failed the file."""
    rows, rejected = read(b"id,n,note\ncaf\xe9,1\nO2,2,fine\n", tmp_path)
    assert rows == [["O2", "2", "fine"]]
    assert [(r.line, r.issue_type, r.text) for r in rejected] == [(2, "malformed_row", "caf\ufffd,1")]


def test_a_nul_in_a_header_longer_than_the_sniffed_bytes_is_a_binary_file(tmp_path: Path) -> None:
    header = ",".join(f"column_{i}" for i in range(1000)) + ",x\x00y"
    assert header.index("\x00") > 8192
    with pytest.raises(FileRejected, match="binary"):
        read((header + "\n" + ",".join("v" * 1001) + "\n").encode(), tmp_path)


@pytest.mark.parametrize("moment", ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"])
def test_a_moment_that_leaves_the_calendar_in_utc_is_one_rejected_row(moment: str) -> None:
    table = Table.model_validate(
        {
            "name": "events",
            "businessKeys": ["id"],
            "columns": [
                {"name": "id", "type": "text", "required": True},
                {"name": "at", "type": "timestamptz"},
                {"name": "local", "type": "timestamp"},
            ],
        }
    )
    header = ["id", "at", "local"]
    rows = [["E1", moment, ""], ["E2", "", moment], ["E3", "2024-01-01T00:00:00Z", ""]]
    batch = Batch([pa.array([r[j] for r in rows]) for j in range(3)], pa.array([2, 3, 4], pa.int64()))
    checker = records.BatchChecker(table, ["id"])
    acc = quality.QualityAccumulator(len(checker.scalar.completeness_columns))
    checked = checker.check(header, batch, "o_1", acc)
    assert [(r.line, r.issue_type) for r in checked.rejected] == [(2, "invalid_type"), (3, "invalid_type")]
    assert "out of range" in checked.rejected[0].reason
    assert checked.line_array.to_pylist() == [4]


def test_a_long_value_of_a_wide_decimal_is_checked_not_crashed() -> None:
    """decimal(38,10) rounds in more digits than Python's default 28: it raised InvalidOperation."""
    table = Table.model_validate(
        {
            "name": "ledger",
            "businessKeys": ["id"],
            "columns": [
                {"name": "id", "type": "text", "required": True},
                {"name": "amount", "type": "decimal(38,10)"},
            ],
        }
    )
    wide = "9" * 20 + "." + "9" * 20
    batch = Batch([pa.array(["L1", "L2"]), pa.array([wide, "9" * 29])], pa.array([2, 3], pa.int64()))
    checker = records.BatchChecker(table, ["id"])
    acc = quality.QualityAccumulator(len(checker.scalar.completeness_columns))
    checked = checker.check(["id", "amount"], batch, "o_1", acc)
    assert checked.python_values([0]) == [{"id": "L1", "amount": "100000000000000000000.0000000000"}]
    assert [(r.line, r.issue_type) for r in checked.rejected] == [(3, "invalid_type")]


def test_a_nul_after_a_header_ended_by_cr_alone_rejects_only_its_row(tmp_path: Path) -> None:
    rows, rejected = read(b"id,n,note\rO1,1,a\x00b\rO2,2,fine\r", tmp_path)
    assert rows == [["O2", "2", "fine"]]
    assert [(r.line, r.issue_type) for r in rejected] == [(2, "nul_byte")]
