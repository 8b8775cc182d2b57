"""Data quality: per-record checks and the per-run report in the seed's shape.

A record is FAILED when a required value is missing or a value does not parse as its column type
(such a record cannot be typed into PostgreSQL, so it is rejected, with its line and reasons),
WARNING when a value breaks a min/max/allowed/pattern rule of the manifest (it is landed, with the
warnings), PASSED otherwise.

Run scores (0..1), all over the run's data rows:
- completeness: share of required values present (of all values when no column is required),
  over well-formed rows;
- validity: share of well-formed rows that break no business rule (min/max/allowed/pattern);
- consistency: share of rows that are well-formed, typed and not a repeated key in their file;
- overall: mean record score (PASSED 1, WARNING 1 - 0.1 per warning down to 0.5, FAILED or
  malformed 0);
- error_rate_percent: rejected rows (failed or malformed) per 100 rows read.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from orgpipeline_api.v1alpha1 import Table

from orgpipeline_jobs import values as values_mod
from orgpipeline_jobs.issues import Issue

__all__ = ["Issue", "QualityAccumulator", "RecordCheck", "RecordChecker"]

Status = Literal["PASSED", "WARNING", "FAILED"]

RECOMMENDATIONS = {
    "missing_required_field": "Review data source for {field} completeness",
    "invalid_type": "Check the format of {field} at the source (expected its column type)",
    "below_min": "Check {field} values below the manifest's minimum",
    "above_max": "Check {field} values above the manifest's maximum",
    "not_allowed": "Align {field} values with the manifest's allowed list",
    "pattern_mismatch": "Check {field} values against the manifest's pattern",
    "malformed_row": "Fix rows with a wrong number of fields (quote values that contain commas)",
    "duplicate_key": "Remove repeated business keys within one file (the last row wins)",
    "field_too_large": "Split or trim oversized values in {field}",
    "invalid_utf8": "Export the file as UTF-8",
    "nul_byte": "Remove NUL bytes (0x00) from {field} at the source: text cannot hold them",
    "record_too_large": "Split or trim rows whose values together pass 15 MiB",
}


@dataclass
class RecordCheck:
    """The outcome of checking one row: canonical values, status, and what is wrong."""

    values: dict[str, values_mod.Value]
    errors: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)
    required_present: int = 0

    @property
    def status(self) -> Status:
        if self.errors:
            return "FAILED"
        return "WARNING" if self.warnings else "PASSED"

    @property
    def score(self) -> float:
        if self.errors:
            return 0.0
        return max(0.5, 1.0 - 0.1 * len(self.warnings))

    def as_document(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "errors": [i.message for i in self.errors],
            "warnings": [i.message for i in self.warnings],
            "quality_score": round(self.score, 4),
        }


def required_columns(table: Table, extra_required: list[str] | None = None) -> list[str]:
    extra = set(extra_required or [])
    return [c.name for c in table.columns if c.required or c.name in extra]


def completeness_columns(table: Table, extra_required: list[str] | None = None) -> list[str]:
    """The columns completeness counts: the required ones, or every column when none is."""
    return required_columns(table, extra_required) or [c.name for c in table.columns]


class RecordChecker:
    """The manifest's rules of one table, compiled once and applied to every row."""

    def __init__(self, table: Table, extra_required: list[str] | None = None) -> None:
        """`extra_required`: business-key columns, required whatever the manifest says."""
        from orgpipeline_jobs.rules import ColumnRules  # pyarrow: only where rows are checked

        self.columns = [(c, values_mod.parser_for(c.type), ColumnRules(c)) for c in table.columns]
        self.completeness_columns = completeness_columns(table, extra_required)
        self.required = set(required_columns(table, extra_required))

    def check(self, raw: Mapping[str, str | None]) -> RecordCheck:
        result = RecordCheck(values={})
        for column, parse, rules in self.columns:
            name = column.name
            text = raw.get(name)
            if text is None or text == "":
                result.values[name] = None
                if name in self.required:
                    result.errors.append(Issue("missing_required_field", name, f"{name}: required"))
                continue
            if name in self.required or not self.required:
                result.required_present += 1
            try:
                value = parse(text)
            except values_mod.ParseError as exc:
                result.values[name] = None
                result.errors.append(Issue("invalid_type", name, f"{name}: {exc}: {text[:40]!r}"))
                continue
            result.values[name] = value
            result.warnings += rules.issues(value, text)
        return result


@dataclass
class QualityAccumulator:
    """Sums a run's (or file's) record checks into the seed's quality report."""

    completeness_columns: int
    rows_read: int = 0
    well_formed: int = 0
    malformed: int = 0
    records_with_errors: int = 0
    records_with_warnings: int = 0
    rows_with_rule_violations: int = 0
    rows_with_type_errors: int = 0
    duplicates: int = 0
    score_sum: float = 0.0
    required_present: int = 0
    issues: Counter[tuple[str, str | None]] = field(default_factory=Counter)

    def add_record(self, check: RecordCheck) -> None:
        self.rows_read += 1
        self.well_formed += 1
        self.score_sum += check.score
        self.required_present += check.required_present
        if check.errors:
            self.records_with_errors += 1
        elif check.warnings:
            self.records_with_warnings += 1
        if check.warnings:
            self.rows_with_rule_violations += 1
        if any(i.issue_type == "invalid_type" for i in check.errors):
            self.rows_with_type_errors += 1
        for issue in (*check.errors, *check.warnings):
            self.issues[(issue.issue_type, issue.field)] += 1

    def add_clean(self, count: int, required_present: int) -> None:
        """`count` records that PASSED, with `required_present` completeness values between them."""
        self.rows_read += count
        self.well_formed += count
        self.score_sum += count
        self.required_present += required_present

    def add_rejected(self, issue_type: str, field_name: str | None = None) -> None:
        """A data row rejected before its values could be checked (malformed, not UTF-8, too large)."""
        self.rows_read += 1
        self.malformed += 1
        self.records_with_errors += 1
        self.issues[(issue_type, field_name)] += 1

    def add_duplicate(self) -> None:
        self.duplicates += 1
        self.issues[("duplicate_key", None)] += 1

    def merge(self, other: QualityAccumulator) -> None:
        for name in [
            "rows_read",
            "well_formed",
            "malformed",
            "records_with_errors",
            "records_with_warnings",
            "rows_with_rule_violations",
            "rows_with_type_errors",
            "duplicates",
            "score_sum",
            "required_present",
        ]:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.issues.update(other.issues)

    def report(self) -> dict[str, Any]:
        rows = self.rows_read
        cells = self.well_formed * self.completeness_columns

        def share(bad: int, total: int) -> float:
            return round(1.0 - bad / total, 4) if total else 1.0

        issues = [
            {
                "issue_type": kind,
                "field": name,
                "count": count,
                "percentage": round(100.0 * count / rows, 2) if rows else 0.0,
            }
            for (kind, name), count in sorted(
                self.issues.items(), key=lambda kv: (-kv[1], kv[0][0], kv[0][1] or "")
            )
        ]
        recommendations = []
        for item in issues:
            text = RECOMMENDATIONS.get(str(item["issue_type"]), "Review {field}")
            line = text.format(field=item["field"] or "the file")
            if line not in recommendations:
                recommendations.append(line)
        return {
            "total_records": rows,
            "records_with_errors": self.records_with_errors,
            "records_with_warnings": self.records_with_warnings,
            "overall_quality_score": round(self.score_sum / rows, 4) if rows else 1.0,
            "completeness_score": share(cells - self.required_present, cells),
            "validity_score": share(self.rows_with_rule_violations, self.well_formed),
            "consistency_score": share(self.malformed + self.rows_with_type_errors + self.duplicates, rows),
            "error_rate_percent": round(100.0 * self.records_with_errors / rows, 4) if rows else 0.0,
            "quality_issues": issues,
            "recommendations": recommendations[:10],
        }
