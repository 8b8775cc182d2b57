"""Record checks and the run report, with the manifest's rules."""

from __future__ import annotations

import pytest
from orgpipeline_api.run_report import RunReport, RunResult, assess
from orgpipeline_api.v1alpha1 import QualityThresholds, Table
from orgpipeline_jobs import quality, values

TABLE = Table.model_validate(
    {
        "name": "orders",
        "businessKeys": ["order_id"],
        "columns": [
            {"name": "order_id", "required": True},
            {"name": "amount", "type": "decimal(10,2)", "required": True, "min": 0, "max": 1000},
            {"name": "status", "allowed": ["pending", "shipped"]},
            {"name": "email", "pattern": "^[^@]+@[^@]+$"},
            {"name": "qty", "type": "integer"},
            {"name": "when", "type": "timestamptz"},
        ],
    }
)


def check(**raw: str | None) -> quality.RecordCheck:
    return quality.RecordChecker(TABLE).check(raw)


def test_passed() -> None:
    result = check(order_id="O1", amount="10.5", status="pending", email="a@b", qty="3")
    assert result.status == "PASSED" and result.score == 1.0
    assert result.values["amount"] == 10.5 and result.values["qty"] == 3


def test_rules_give_warnings() -> None:
    result = check(order_id="O1", amount="-1", status="lost", email="nope")
    assert result.status == "WARNING"
    assert {i.issue_type for i in result.warnings} == {"below_min", "not_allowed", "pattern_mismatch"}
    assert result.score == pytest.approx(0.7)


def test_missing_required_and_wrong_type_fail() -> None:
    result = check(order_id="", amount="abc", qty="1.5")
    assert result.status == "FAILED" and result.score == 0.0
    kinds = [(i.issue_type, i.field) for i in result.errors]
    assert ("missing_required_field", "order_id") in kinds
    assert ("invalid_type", "amount") in kinds and ("invalid_type", "qty") in kinds


@pytest.mark.parametrize(
    ("kind", "text", "expected"),
    [
        ("integer", "2147483648", None),
        ("bigint", "2147483648", 2147483648),
        ("boolean", "Yes", True),
        ("date", "2024-02-30", None),
        ("timestamptz", "2024-01-15T10:30:00+02:00", "2024-01-15T08:30:00+00:00"),
        ("timestamp", "2024-01-15 10:30:00", "2024-01-15T10:30:00"),
        ("decimal(4,2)", "99.999", None),
        ("decimal(20,2)", "123456789012345678.125", "123456789012345678.13"),
        ("double precision", "nan", None),
    ],
)
def test_type_parsing(kind: str, text: str, expected: object) -> None:
    parse = values.parser_for(kind)
    if expected is None:
        with pytest.raises(values.ParseError):
            parse(text)
    else:
        assert parse(text) == expected


def test_report_shape_and_breaches() -> None:
    checker = quality.RecordChecker(TABLE)
    acc = quality.QualityAccumulator(len(checker.completeness_columns))
    for i in range(97):
        acc.add_record(checker.check({"order_id": f"O{i}", "amount": "1"}))
    acc.add_record(checker.check({"order_id": "X", "amount": ""}))
    acc.add_record(checker.check({"order_id": "Y", "amount": "5", "status": "odd"}))
    acc.add_rejected("malformed_row")
    report = acc.report()
    assert report["total_records"] == 100
    assert report["records_with_errors"] == 2 and report["records_with_warnings"] == 1
    assert report["error_rate_percent"] == 2.0
    assert report["completeness_score"] == pytest.approx(1 - 1 / (99 * 2), abs=1e-4)
    issue = next(i for i in report["quality_issues"] if i["issue_type"] == "missing_required_field")
    assert issue == {"issue_type": "missing_required_field", "field": "amount", "count": 1, "percentage": 1.0}
    assert "Review data source for amount completeness" in report["recommendations"]
    run = RunReport(
        run_id="r1",
        org_id="o1",
        table="orders",
        result=RunResult.Succeeded,
        rows_read=report["total_records"],
        quality_score=report["overall_quality_score"],
        completeness_score=report["completeness_score"],
        error_rate_percent=report["error_rate_percent"],
        started_at="s",
        finished_at="f",
    )
    found = [b.model_dump() for b in assess(run, QualityThresholds()).breaches]
    assert {b["type"] for b in found} == {"ErrorRateAboveThreshold"}
    assert all(set(b) == {"type", "message", "value", "threshold"} for b in found)
