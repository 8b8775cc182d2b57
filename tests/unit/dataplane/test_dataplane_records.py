"""The column-wise checks give byte for byte what the scalar definitions give, row by row.

Existing data keeps matching only if composite keys, data hashes, canonical values, issues and the
quality report of the batch path equal those of `RecordChecker`, `keys.composite_key` and
`hashing.data_hash` applied to each row: this holds them equal over a hypothesis corpus of ordinary
and hostile texts and over the fixture files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from orgpipeline_api.v1alpha1 import Table
from orgpipeline_jobs import hashing, keys, quality, records, versions
from orgpipeline_jobs.source.configuration import SourceConfig
from orgpipeline_jobs.source.csvstream import Batch, CsvStream
from orgpipeline_jobs.values import key_text

pytestmark = pytest.mark.unit

TABLE = Table.model_validate(
    {
        "name": "orders",
        "businessKeys": ["id", "n"],
        "columns": [
            {"name": "id", "type": "text", "required": True},
            {"name": "n", "type": "integer", "min": 0, "max": 1000},
            {"name": "amount", "type": "decimal(10,2)", "min": 0},
            {"name": "small", "type": "decimal(4,4)"},
            {"name": "big", "type": "decimal(20,4)"},
            {"name": "bi", "type": "bigint"},
            {"name": "dbl", "type": "double precision", "max": 1e6},
            {"name": "d", "type": "date"},
            {"name": "ts", "type": "timestamptz"},
            {"name": "t", "type": "timestamp"},
            {"name": "flag", "type": "boolean"},
            {"name": "code", "type": "text", "allowed": ["a", "b", "c"]},
            {"name": "email", "type": "text", "pattern": "^[^@]+@[^@]+$"},
            {"name": "num_code", "type": "integer", "allowed": ["1", "2"]},
        ],
    }
)
HEADER = [c.name for c in TABLE.columns]

EDGES = [
    "",
    " ",
    "0",
    "-0",
    "042",
    "+5",
    "1_000",
    "12.5",
    "12.345",
    "12.355",
    "-0.00",
    ".5",
    "1.",
    "1e3",
    "1e-05",
    "0.00001",
    "nan",
    "inf",
    "2147483648",
    "-2147483649",
    "99999999.99",
    "100000000",
    "9223372036854775808",
    "2024-02-29",
    "2024-02-30",
    "20240101",
    "2024-01-01T10:00:00+02:00",
    "2024-01-01 10:00",
    "true",
    " Yes ",
    "F",
    "a",
    "b",
    "x@y",
    "no-at",
    "a_b",
    "%_~",
    'quote"back\\slash',
    "tab\tnew\nline\r\x01\x1f",
    "Zoë ✓ 東京",
    "x" * 250,
]
texts = st.one_of(
    st.sampled_from(EDGES),
    st.from_regex(r"-?[0-9]{1,9}(\.[0-9]{1,3})?", fullmatch=True),
    st.text(max_size=12),
)
rows = st.lists(st.lists(texts, min_size=len(HEADER), max_size=len(HEADER)), min_size=1, max_size=40)


def scalar(table: Table, header: list[str], data: list[list[str]], org: str) -> dict[str, Any]:
    """The row-by-row reference: what the pipeline computed before the batch path existed."""
    checker = quality.RecordChecker(table, extra_required=list(table.business_keys))
    acc = quality.QualityAccumulator(len(checker.completeness_columns))
    out: dict[str, Any] = {"keys": [], "hashes": [], "values": [], "rejected": [], "warnings": []}
    for line, row in enumerate(data, start=2):
        check = checker.check(dict(zip(header, row, strict=True)))
        acc.add_record(check)
        if check.errors:
            out["rejected"].append(
                (line, check.errors[0].issue_type, "; ".join(e.message for e in check.errors))
            )
            continue
        out["keys"].append(
            keys.composite_key(org, table.name, [key_text(check.values[k]) for k in table.business_keys])
        )
        out["hashes"].append(hashing.data_hash(check.values))
        out["values"].append(check.values)
        out["warnings"].append([w.message for w in check.warnings])
    out["report"] = acc.report()
    return out


def batched(table: Table, header: list[str], data: list[list[str]], org: str) -> dict[str, Any]:
    """The batch path over two consecutive batches of one checker (what it remembers from the
    first must not change the second)."""
    checker = records.BatchChecker(table, list(table.business_keys))
    acc = quality.QualityAccumulator(len(checker.scalar.completeness_columns))
    out: dict[str, Any] = {name: [] for name in ("keys", "hashes", "values", "rejected", "warnings")}
    out["json_matches_hash"] = []
    half = len(data) // 2
    for first, part in ((0, data[:half]), (half, data[half:])):
        columns = [pa.array([row[j] for row in part], pa.string()) for j in range(len(header))]
        batch = Batch(columns, pa.array(range(first + 2, first + len(part) + 2), pa.int64()))
        checked = checker.check(header, batch, org, acc)
        values = checked.python_values(range(len(checked)))
        out["keys"] += checked.key_array.to_pylist()
        out["hashes"] += checked.data_hashes
        out["values"] += values
        out["rejected"] += [(r.line, r.issue_type, r.reason) for r in checked.rejected]
        out["warnings"] += [
            [w.message for w in checked.checks[i].warnings] if i in checked.checks else []
            for i in range(len(checked))
        ]
        out["json_matches_hash"] += [
            hashing.data_hash(v) == h for v, h in zip(values, checked.data_hashes, strict=True)
        ]
    out["report"] = acc.report()
    return out


def same(table: Table, header: list[str], data: list[list[str]], org: str = "o_1") -> None:
    expected = scalar(table, header, data, org)
    got = batched(table, header, data, org)
    assert all(got.pop("json_matches_hash"))
    for name in expected:
        assert got[name] == expected[name], name


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows)
def test_batch_checks_equal_the_scalar_checks(data: list[list[str]]) -> None:
    same(TABLE, HEADER, data)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.from_regex(r"-?[0-9]{1,8}(\.[0-9]{1,2})?", fullmatch=True), min_size=1, max_size=200))
def test_plain_decimals_cast_exactly(amounts: list[str]) -> None:
    """The pyarrow cast path for plain decimals gives Python's float and repr, bit for bit."""
    data = [[f"id{i}", "1", a, "", "", "", "", "", "", "", "", "", "", ""] for i, a in enumerate(amounts)]
    same(TABLE, HEADER, data)


def test_header_order_and_missing_columns() -> None:
    header = ["email", "id", "n", "amount", "extra"]
    data = [["x@y", "A_1", "5", "1.50", "ignored"], ["bad", "B", "7", "", "z"], ["x@y", "C", "", "2", ""]]
    same(TABLE, header, data)


def test_long_keys_are_hashed_like_the_scalar_path() -> None:
    data = [["k" * 300, "1", *[""] * 12], ["short", "2", *[""] * 12]]
    same(TABLE, HEADER, data)


@pytest.mark.parametrize("case", ["mixed.csv", "latin1.csv"])
def test_fixture_files(case: str) -> None:
    table = Table.model_validate(
        {
            "name": "orders",
            "businessKeys": ["order_id"],
            "columns": [
                {"name": "order_id", "type": "text", "required": True},
                {"name": "amount", "type": "decimal(10,2)"},
                {"name": "note", "type": "text"},
            ],
        }
    )
    path = Path(__file__).parent / "cases" / case
    with path.open("rb") as handle:
        stream = CsvStream(handle, SourceConfig())
        header = stream.open()
        for batch in stream.batches():
            same(table, header, batch.rows())


def test_a_plan_splits_into_parts_with_each_head_beside_its_last_version() -> None:
    table = Table.model_validate(
        {
            "name": "t",
            "businessKeys": ["id"],
            "columns": [{"name": "id", "type": "text", "required": True}, {"name": "v", "type": "text"}],
        }
    )
    checker = records.BatchChecker(table, ["id"])
    ids, values = ["a", "b", "a", "c", "d"], ["1", "1", "2", "1", "1"]
    batch = Batch([pa.array(ids), pa.array(values)], pa.array(range(2, 7), pa.int64()))
    checked = checker.check(["id", "v"], batch, "o", quality.QualityAccumulator(1))
    whole = versions.plan(checked, dict.fromkeys(range(5)), "f1", snapshot=False)
    assert [v.version for v in whole.versions] == [1, 1, 2, 1, 1]
    parts = versions.split(whole, 2)
    assert [[v.composite_key[-1] for v in p.versions] for p in parts] == [["a", "b"], ["a", "c"], ["d"]]
    assert [sorted(h[0][-1] for h in p.heads) for p in parts] == [["b"], ["a", "c"], ["d"]]
    assert versions.split(versions.Plan(), 2)[0].versions == []
