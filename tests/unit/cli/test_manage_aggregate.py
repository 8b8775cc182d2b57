"""Pure parts of the management commands: the validate merge-join, quality roll-ups, run rates,
alerts from runs, charts, and PostgreSQL values back to the data plane's canonical form."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from orgpipeline_cli.manage import aggregate, charts, compare, queries
from orgpipeline_cli.manage.compare import VersionRef
from orgpipeline_jobs import values


def refs(*items: tuple[str, int, str]) -> list[VersionRef]:
    return [VersionRef(k, v, h) for k, v, h in items]


def test_compare_reports_missing_extra_and_mismatch_in_order() -> None:
    mongo = refs(("a", 1, "h1"), ("a", 2, "h2"), ("b", 1, "h3"), ("d", 1, "h5"))
    pg = refs(("a", 1, "h1"), ("a", 2, "XX"), ("c", 1, "h4"), ("d", 1, "h5"))
    diffs = [(d.kind, d.composite_key, d.version) for d in compare.compare(mongo, pg)]
    assert diffs == [("hash_mismatch", "a", 2), ("missing", "b", 1), ("extra", "c", 1)]


def test_compare_identical_and_empty_sides() -> None:
    same = refs(("k", 1, "h"), ("k", 2, "i"))
    assert list(compare.compare(same, list(same))) == []
    assert [d.kind for d in compare.compare([], same)] == ["extra", "extra"]
    assert [d.kind for d in compare.compare(same, [])] == ["missing", "missing"]


def test_compare_refuses_an_unsorted_side() -> None:
    with pytest.raises(compare.UnsortedStream):
        list(compare.compare(refs(("b", 1, "h"), ("a", 1, "h")), []))


def test_compare_streams_without_reading_ahead() -> None:
    consumed = []

    def side() -> object:
        for i in range(1_000_000):
            consumed.append(i)
            yield VersionRef(f"k{i:07d}", 1, "h")

    first = next(compare.compare(side(), iter([])))  # type: ignore[arg-type]
    assert first.kind == "missing" and len(consumed) <= 2


def report(total: int, errors: int, overall: float, issues: list[tuple[str, str, int]]) -> dict[str, object]:
    return {
        "total_records": total,
        "records_with_errors": errors,
        "records_with_warnings": 0,
        "overall_quality_score": overall,
        "completeness_score": 1.0,
        "validity_score": 1.0,
        "consistency_score": 1.0,
        "quality_issues": [{"issue_type": t, "field": f, "count": c} for t, f, c in issues],
    }


def test_combine_reports_weighs_by_records_and_sums_issues() -> None:
    combined = aggregate.combine_reports(
        [
            report(100, 5, 0.95, [("missing_required_field", "customer_id", 5)]),
            report(300, 0, 0.75, [("missing_required_field", "customer_id", 3), ("below_min", "amount", 1)]),
        ]
    )
    assert combined["total_records"] == 400 and combined["records_with_errors"] == 5
    assert combined["overall_quality_score"] == pytest.approx((100 * 0.95 + 300 * 0.75) / 400, abs=1e-4)
    assert combined["error_rate_percent"] == pytest.approx(1.25)
    top = combined["quality_issues"][0]
    assert (top["issue_type"], top["field"], top["count"], top["percentage"]) == (
        "missing_required_field",
        "customer_id",
        8,
        2.0,
    )
    assert "Review data source for customer_id completeness" in combined["recommendations"]


def test_combine_no_reports_is_a_perfect_empty_report() -> None:
    empty = aggregate.combine_reports([])
    assert empty["total_records"] == 0 and empty["overall_quality_score"] == 1.0
    assert empty["quality_issues"] == [] and empty["recommendations"] == []


def test_daily_trend_has_every_day_and_gaps() -> None:
    today = date(2024, 1, 10)
    at = datetime(2024, 1, 9, 12, tzinfo=UTC)
    samples = [
        queries.QualitySample("orders", at, report(10, 1, 0.9, [])),
        queries.QualitySample("orders", at + timedelta(hours=1), report(30, 0, 1.0, [])),
    ]
    trend = aggregate.daily_trend(samples, 3, today)
    assert [d["day"] for d in trend] == ["2024-01-08", "2024-01-09", "2024-01-10"]
    assert trend[0]["overall_quality_score"] is None and trend[2]["total_records"] == 0
    assert trend[1]["total_records"] == 40 and trend[1]["overall_quality_score"] == pytest.approx(0.975)


def run(status: str, minutes_ago: int, **fields: object) -> dict[str, object]:
    start = datetime(2024, 1, 10, 12, tzinfo=UTC) - timedelta(minutes=minutes_ago)
    base: dict[str, object] = {
        "run_id": f"r{minutes_ago}",
        "table_name": "orders",
        "command": "run",
        "status": status,
        "started_at": start,
        "finished_at": start + timedelta(seconds=30),
        "rows_read": 0,
        "rejected": 0,
        "breaches": [],
        "error": None,
    }
    return {**base, **fields}


def test_run_stats_rates() -> None:
    runs = [
        run("Succeeded", 10, rows_read=100, rejected=2),
        run("Failed", 20, rows_read=50, error="boom"),
        run("Running", 0),
        run("Succeeded", 30, command="load"),
    ]
    stats = aggregate.run_stats(runs)
    assert stats["runs"] == 4 and stats["running"] == 1
    assert stats["succeeded"] == 2 and stats["failed"] == 1
    assert stats["success_rate_percent"] == pytest.approx(66.67)
    assert stats["error_rate_percent"] == pytest.approx(100 * 2 / 150, abs=1e-4)
    assert stats["ingestion_rows_per_minute"] == pytest.approx(150.0)  # 150 rows in two 30 s runs


def test_alerts_from_runs_failure_breaches_and_since() -> None:
    breach = [{"type": "CompletenessBelowThreshold", "message": "completeness 0.5 is below 0.98"}]
    runs = [  # newest first
        run("Failed", 1, error="S3 unreachable"),
        run("Succeeded", 5, command="load"),
        run("Succeeded", 10, rows_read=5, breaches=breach),
        run("Succeeded", 20, rows_read=5, breaches=breach),
        run("Succeeded", 30, rows_read=5),
    ]
    alerts = {a["type"]: a for a in aggregate.alerts_from_runs("o1", runs)}
    assert set(alerts) == {"RunFailed", "CompletenessBelowThreshold"}
    assert (
        alerts["RunFailed"]["severity"] == "critical" and "S3 unreachable" in alerts["RunFailed"]["message"]
    )
    assert alerts["CompletenessBelowThreshold"]["severity"] == "warning"
    assert alerts["CompletenessBelowThreshold"]["since"] == runs[3]["finished_at"].isoformat()  # type: ignore[union-attr]
    assert aggregate.alerts_from_runs("o1", [run("Succeeded", 1, rows_read=5)]) == []
    assert aggregate.filter_severity(alerts.values(), "critical") == [alerts["RunFailed"]]


def test_sparkline_and_bar() -> None:
    assert charts.sparkline([0.0, 0.5, 1.0, None]) == "▁▅█ "
    assert charts.sparkline([0.9, 0.9]) == "██"
    assert charts.sparkline([None]) == " "
    assert charts.bar(0.5, 10) == "█████     " and charts.bar(1.5, 4) == "████"


@pytest.mark.parametrize(
    ("column_type", "text", "pg_value", "precision"),
    [
        ("decimal(10,2)", "99.99", Decimal("99.99"), 10),
        ("decimal(10,2)", "5", Decimal("5.00"), 10),
        ("decimal(20,4)", "1.5", Decimal("1.5000"), 20),
        ("date", "2024-01-15", date(2024, 1, 15), None),
        ("timestamp", "2024-01-15T10:30:00", datetime(2024, 1, 15, 10, 30), None),
        (
            "timestamptz",
            "2024-01-15T10:30:00+02:00",
            datetime(2024, 1, 15, 9, 30, tzinfo=timezone(timedelta(hours=1))),
            None,
        ),
        ("integer", "042", 42, 32),
        ("boolean", "yes", True, None),
    ],
)
def test_canonical_inverts_what_postgres_returns(
    column_type: str, text: str, pg_value: object, precision: int | None
) -> None:
    assert queries.canonical(pg_value, precision) == values.parser_for(column_type)(text)
