"""The run contract: what one data-plane command reports, in each form it takes across processes.

- `RunReport`: the whole result. The jobs build it, `orgpipeline ingest|load|run -o json` prints it.
- `TerminationReport`: its compact form, the pod's termination message the operator reads. The
  kubelet keeps 4096 bytes of it at most: `RunReport.termination_message()` cuts file names and
  the error until it fits, `TerminationReport.from_message()` refuses what does not.
- `RunReport.run_row()`: the columns of its `pipeline_runs` row; `RunRow` reads the row back.
- `assess()`: the one rule set from a run (and the runs before it) to threshold breaches and
  alerts, used by the jobs (breaches in the report), the operator (status alerts) and the CLI
  (alerts from `pipeline_runs` when no cluster answers).
Accounting: rows_read == inserted + updated + unchanged + rejected (deleted counts snapshot DELETE
versions, which no row produced; blank lines are not rows).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, computed_field, field_validator
from pydantic.alias_generators import to_camel

from orgpipeline_api.triggers import MAX_USER, Trigger
from orgpipeline_api.v1alpha1 import QualityThresholds

TERMINATION_LOG_LIMIT = 4096
"""Bytes of a termination message the kubelet keeps."""
ERROR_LIMIT = 1000
"""Characters of a run's error the compact form carries."""
MESSAGE_LIMIT = 1024
"""Characters of an alert's message."""
TRIGGER_REASON_LIMIT = 256
"""Characters of a run's trigger reason the compact form carries (the whole one is in pipeline_runs)."""


class TolerantModel(BaseModel):
    """camelCase on the wire (snake_case accepted), tolerant of fields a newer writer may add."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)


class RunResult(StrEnum):
    Succeeded = "Succeeded"
    Failed = "Failed"
    NoNewFiles = "NoNewFiles"


FAILED_RESULTS = frozenset({RunResult.Failed.value, "Interrupted"})
"""Results of a run that did not finish its work (`Interrupted`: pipeline_runs only, a killed run)."""


class AlertType(StrEnum):
    """Alert types shared by the jobs (threshold breaches), the operator (status) and the CLI."""

    RunFailed = "RunFailed"
    QualityBelowThreshold = "QualityBelowThreshold"
    CompletenessBelowThreshold = "CompletenessBelowThreshold"
    ErrorRateAboveThreshold = "ErrorRateAboveThreshold"
    # Against the table's own history (`orgpipeline_api.anomaly`), reported by the jobs.
    VolumeAnomaly = "VolumeAnomaly"
    QualityAnomaly = "QualityAnomaly"
    # A file of the table whose content the stores refused (pipeline_files status quarantined):
    # reported by every run while one is, so the alert lasts until the file is retried.
    FileQuarantined = "FileQuarantined"
    # Raised once per finding (the org's pipeline_notices), warnings: a detected business key that
    # a later file repeats (the key is kept), a column that looks like personal data while
    # classified public or internal.
    BusinessKeyNotUnique = "BusinessKeyNotUnique"
    UnclassifiedPersonalData = "UnclassifiedPersonalData"


class AlertSeverity(StrEnum):
    warning = "warning"
    critical = "critical"


ALERT_SEVERITY: dict[str, AlertSeverity] = {
    AlertType.RunFailed: AlertSeverity.critical,
    AlertType.QualityBelowThreshold: AlertSeverity.critical,
    AlertType.FileQuarantined: AlertSeverity.critical,
}
"""Severity of each alert type that is not a warning."""


STANDING_BREACHES = frozenset({AlertType.FileQuarantined.value})
"""Breaches that describe the table as the run left it (not the rows it read): every run reports
them, one that read no rows too, and the newest run's say whether they still hold."""


# Where the stores' own error texts quote a stored value: PostgreSQL's data exceptions end in
# `: "<value>"` (`invalid input syntax for type integer: "..."`), its DETAIL lines show keys and
# rows (`Key (email)=(...) already exists`, `Failing row contains (...)`), MongoDB shows the key of
# a duplicate (`dup key: { ... }`) and whole documents (`full error: {...}`).
_VALUES = (
    (re.compile(r'(: )".*"(?=\s*(?:$|;))', re.MULTILINE), r'\1"…"'),
    (re.compile(r"DETAIL:.*$", re.MULTILINE), "DETAIL: …"),
    (re.compile(r"(dup key: )\{.*?\}(?=[^}]*$)", re.MULTILINE), r"\1{…}"),
    (re.compile(r"(full error: ).*$", re.MULTILINE), r"\1…"),
)


def without_values(text: str) -> str:
    """`text` with the stored values the stores' messages quote replaced by `…`: what reaches a
    cluster-wide object (conditions, lastRun, Events) or a job's log names tables, columns, lines
    and reasons, whatever the column's classification. The operator's status and the jobs' error
    lines both use it."""
    for pattern, replacement in _VALUES:
        text = pattern.sub(replacement, text)
    return text


def severity_of(alert_type: str) -> AlertSeverity:
    return ALERT_SEVERITY.get(alert_type, AlertSeverity.warning)


class Breach(TolerantModel):
    """A rule a run did not meet, such as a quality threshold."""

    type: Annotated[str, Field(max_length=128, description="Alert type, for example QualityBelowThreshold.")]
    message: Annotated[str, Field(max_length=1024, description="What was breached.")] = ""
    value: Annotated[float | None, Field(description="The measured value.")] = None
    threshold: Annotated[float | None, Field(description="The configured threshold.")] = None

    @property
    def severity(self) -> AlertSeverity:
        return severity_of(self.type)

    def alert_message(self) -> str:
        return (self.message or f"{self.type}: {self.value} vs threshold {self.threshold}")[:MESSAGE_LIMIT]


ROW_COUNT_FIELDS = ("rows_read", "inserted", "updated", "deleted", "unchanged", "rejected")
"""The row counts of a run and of each of its files (the accounting above)."""


class Counts(BaseModel):
    """What a run (or one of its files) did to rows; the jobs add to it as they go."""

    rows_read: int = 0
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    rejected: int = 0
    blank_lines: int = 0
    duplicates: int = 0
    loaded: int = 0

    def add(self, other: Counts) -> None:
        for name in Counts.model_fields:
            setattr(self, name, getattr(self, name) + getattr(other, name))


class FileSummary(Counts):
    """One file of a run."""

    model_config = ConfigDict(frozen=True)

    name: str
    uri: str
    file_id: str
    status: str
    """ingested | rejected | skipped (already ingested or rejected earlier)"""
    error: str | None = None
    notes: list[str] = Field(default_factory=list)


class RunReport(Counts):
    """The result of one `ingest`, `load` or `run` of one table (snake_case, as `-o json` prints it).

    result Failed: a file was rejected as a whole, or the run stopped on an error. The quality
    report has the seed's shape (`orgpipeline_jobs.quality`).
    """

    model_config = ConfigDict(frozen=True)

    run_id: str | None
    org_id: str
    table: str
    command: str = "run"
    result: RunResult
    quality_score: float | None = None
    completeness_score: float | None = None
    validity_score: float | None = None
    consistency_score: float | None = None
    error_rate_percent: float | None = None
    business_keys: list[str] = Field(default_factory=list)
    duration_seconds: float | None = None
    error: str | None = None
    files: list[FileSummary] = Field(default_factory=list)
    quality_report: dict[str, Any] | None = None
    breaches: list[Breach] = Field(default_factory=list)
    business_keys_detected: bool = False
    started_at: str
    finished_at: str
    trigger: Trigger = Trigger.manual
    """What started the run: schedule, run-now, file-arrival or manual (`orgpipeline_api.triggers`)."""
    triggered_by: str | None = None
    """Who: the run-now requester, the `--user-id` of a manual run; None when unknown."""
    trigger_reason: str | None = None
    """Why, in the requester's words (run-now), or the object keys (file-arrival)."""
    postgres_bytes: int | None = None
    """The table's PostgreSQL size when the run ended, as measured (`orgpipeline_jobs.storage`)."""
    mongo_bytes: int | None = None
    """The table's MongoDB collection size (data and indexes) when the run ended."""

    DETAIL_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {
            "files",
            "quality_report",
            "breaches",
            "business_keys_detected",
            "started_at",
            "finished_at",
            "postgres_bytes",
            "mongo_bytes",
        }
    )
    """Fields a one-screen summary leaves out (printed apart, or not at all)."""
    RUN_ROW_JSON_COLUMNS: ClassVar[frozenset[str]] = frozenset(
        {"files", "quality_report", "breaches", "business_keys"}
    )
    RUN_ROW_COLUMNS: ClassVar[tuple[str, ...]] = (
        "status",
        "finished_at",
        "files",
        *ROW_COUNT_FIELDS,
        "loaded",
        "quality_score",
        "completeness_score",
        "validity_score",
        "consistency_score",
        "error_rate_percent",
        "quality_report",
        "breaches",
        "business_keys",
        "error",
    )
    """The pipeline_runs columns a run's end writes (the rest are written when it starts)."""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def status(self) -> str:
        """The result under its pipeline_runs column name."""
        return self.result.value

    @property
    def label(self) -> str:
        return f"{self.command} run {self.run_id}"

    @classmethod
    def summary_fields(cls) -> list[str]:
        """Who ran what and how it ended, the counts, then the rest (details left out)."""
        counts = list(Counts.model_fields)
        own = [name for name in cls.model_fields if name not in counts and name not in cls.DETAIL_FIELDS]
        return [*own[:5], *counts, *own[5:]]

    def as_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def run_row(self) -> dict[str, Any]:
        """The pipeline_runs values of the finished run, JSON columns as JSON text."""
        data = self.as_json()
        return {
            column: json.dumps(data[column]) if column in self.RUN_ROW_JSON_COLUMNS else data[column]
            for column in self.RUN_ROW_COLUMNS
        }

    def termination_report(self) -> TerminationReport:
        """The compact form: the fields it shares with the report, files by name (skipped ones
        left out), the error cut to ERROR_LIMIT, the trigger reason to TRIGGER_REASON_LIMIT."""
        shared = self.model_dump(
            include=set(TerminationReport.model_fields) - {"files", "error", "trigger", "trigger_reason"}
        )
        return TerminationReport(
            **shared,
            files=[f.name for f in self.files if f.status != "skipped"],
            error=self.error[:ERROR_LIMIT] if self.error else self.error,
            trigger=self.trigger.value,
            trigger_reason=self.trigger_reason[:TRIGGER_REASON_LIMIT] if self.trigger_reason else None,
        )

    def termination_message(self) -> str:
        """The compact JSON, file names cut (`... N more`) until it is under the kubelet's limit."""
        compact = self.termination_report()
        names = compact.files
        keep = len(names)
        text = compact.to_message()
        while len(text.encode()) >= TERMINATION_LOG_LIMIT and keep:
            keep //= 2
            compact = compact.model_copy(update={"files": [*names[:keep], f"... {len(names) - keep} more"]})
            text = compact.to_message()
        return text


class UnreadableReport(ValueError):
    """A termination message that is meant as a run report but cannot be read as one."""


class TerminationReport(TolerantModel):
    """The compact run report in a pod's termination message (camelCase; the operator's input)."""

    run_id: str | None = None
    org_id: str | None = None
    table: str | None = None
    result: RunResult
    files: list[str] = Field(default_factory=list)
    rows_read: Annotated[int, Field(ge=0)] = 0
    inserted: Annotated[int, Field(ge=0)] = 0
    updated: Annotated[int, Field(ge=0)] = 0
    deleted: Annotated[int, Field(ge=0)] = 0
    unchanged: Annotated[int, Field(ge=0)] = 0
    rejected: Annotated[int, Field(ge=0)] = 0
    quality_score: float | None = None
    completeness_score: float | None = None
    error_rate_percent: float | None = None
    breaches: list[Breach] = Field(default_factory=list)
    started_at: str | None = None
    finished_at: str | None = None
    error: str | None = None
    trigger: str | None = None
    triggered_by: Annotated[str | None, Field(max_length=MAX_USER)] = None
    trigger_reason: Annotated[str | None, Field(max_length=TRIGGER_REASON_LIMIT)] = None
    business_keys: list[str] = Field(default_factory=list)
    business_keys_detected: bool = False
    postgres_bytes: Annotated[int | None, Field(ge=0)] = None
    mongo_bytes: Annotated[int | None, Field(ge=0)] = None

    @field_validator("files", mode="before")
    @classmethod
    def _file_names(cls, value: Any) -> Any:
        # The full report (printed to the log, which FallbackToLogsOnError may hand over) lists files
        # as objects; the compact form lists their names.
        if isinstance(value, list):
            return [f.get("name", "") if isinstance(f, dict) else f for f in value]
        return value

    def to_message(self) -> str:
        return json.dumps(self.model_dump(mode="json", by_alias=True), separators=(",", ":"))

    @classmethod
    def from_message(cls, message: str | None) -> TerminationReport | None:
        """The report in a termination message; None when the message holds none (log lines only).

        Raises UnreadableReport for a report that is cut (over the kubelet's limit), not JSON, or
        not of this shape.
        """
        text = (message or "").strip()
        start = text.find("{")  # FallbackToLogsOnError may put log lines before it
        if start < 0:
            return None
        candidate = text[start:]
        meant = '"result"' in candidate or '"runId"' in candidate
        size = len(text.encode())
        if meant and size >= TERMINATION_LOG_LIMIT:
            limit = TERMINATION_LOG_LIMIT
            raise UnreadableReport(f"the report has {size} bytes, over the {limit}-byte limit")
        try:
            value = json.loads(candidate)
        except ValueError as exc:
            if meant:
                raise UnreadableReport(f"the report is not JSON: {exc}") from None
            return None
        if not isinstance(value, dict) or "result" not in value:
            return None
        try:
            return cls.model_validate(value)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise UnreadableReport(f"{where}: {first['msg']}" if where else first["msg"]) from None


class RunRow(BaseModel):
    """A pipeline_runs row as the CLI reads it back (status Running while the run holds its lock)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    run_id: str
    table_name: str
    command: str
    status: str
    started_at: datetime | None = None
    finished_at: datetime | None = None
    rows_read: int = 0
    quality_score: float | None = None
    completeness_score: float | None = None
    error_rate_percent: float | None = None
    breaches: list[Breach] = Field(default_factory=list)
    error: str | None = None

    @field_validator("rows_read", mode="before")
    @classmethod
    def _zero(cls, value: Any) -> Any:
        return 0 if value is None else value

    @field_validator("breaches", mode="before")
    @classmethod
    def _listed(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return []
        return [b for b in value if isinstance(b, dict) and b.get("type")]

    @property
    def result(self) -> str:
        return self.status

    @property
    def label(self) -> str:
        return f"{self.command} run {self.run_id}"


# --- the rule set ------------------------------------------------------------------------------


class RunFacts(Protocol):
    """What the rules read of a run, in any of its forms (RunReport, RunRow, the status' LastRun)."""

    @property
    def result(self) -> str: ...
    @property
    def label(self) -> str: ...
    @property
    def rows_read(self) -> int: ...
    @property
    def quality_score(self) -> float | None: ...
    @property
    def completeness_score(self) -> float | None: ...
    @property
    def error_rate_percent(self) -> float | None: ...
    @property
    def breaches(self) -> Sequence[Breach]: ...
    @property
    def error(self) -> str | None: ...
    @property
    def finished_at(self) -> str | datetime | None: ...


@dataclass(frozen=True)
class RaisedAlert:
    """An alert a run raises; `since`: when the unbroken streak of runs raising it began."""

    type: str
    severity: AlertSeverity
    message: str
    since: str | None


@dataclass(frozen=True)
class Assessment:
    breaches: list[Breach]
    alerts: list[RaisedAlert]


@dataclass(frozen=True)
class _Threshold:
    type: AlertType
    label: str
    score: str
    upper: bool  # True: the value must not be above the limit; False: not below


_THRESHOLDS = (
    _Threshold(AlertType.QualityBelowThreshold, "overall quality score", "overall_quality_score", False),
    _Threshold(AlertType.ErrorRateAboveThreshold, "error rate percent", "error_rate_percent", True),
    _Threshold(AlertType.CompletenessBelowThreshold, "completeness score", "completeness_score", False),
)


def _measured(run: RunFacts, score: str) -> float | None:
    if score == "overall_quality_score":
        return run.quality_score
    value: float | None = getattr(run, score)
    return value


def _breaches_of(run: RunFacts, thresholds: QualityThresholds | None) -> list[Breach]:
    """The breaches the run reported, then the thresholds it breaks that it did not report.

    Only a run that read rows is judged: one that read none (a `load`, no new files) has no
    quality to speak of.
    """
    if run.rows_read <= 0:
        return [b for b in run.breaches if b.type in STANDING_BREACHES]
    found = {b.type: b for b in run.breaches}
    for rule in _THRESHOLDS if thresholds is not None else ():
        value = _measured(run, rule.score)
        limit = float(getattr(thresholds, rule.score))
        if value is None or rule.type in found or not ((value > limit) if rule.upper else (value < limit)):
            continue
        word = "above" if rule.upper else "below"
        found[rule.type] = Breach(
            type=rule.type,
            message=f"{rule.label} {value:g} is {word} {limit:g}",
            value=value,
            threshold=limit,
        )
    return list(found.values())


def _moment(run: RunFacts) -> str | None:
    value = run.finished_at
    return value.isoformat() if isinstance(value, datetime) else value


def _since(runs: Sequence[RunFacts], raises: Any) -> str | None:
    """The finish time of the oldest run of the unbroken streak (newest first) that `raises`."""
    first = runs[0]
    for older in runs[1:]:
        if not raises(older):
            break
        first = older
    return _moment(first)


def assess(
    run: RunFacts, thresholds: QualityThresholds | None = None, history: Sequence[RunFacts] = ()
) -> Assessment:
    """The breaches and alerts of a finished run; `history`: the table's earlier finished runs,
    newest first.

    RunFailed when the run failed. A run that read no rows neither raises nor clears a breach: the
    breaches are those of the newest run that read rows, except the standing ones
    (`STANDING_BREACHES`), which are this run's. Without thresholds, only the breaches the runs
    reported count.
    """
    runs = [run, *history]
    alerts = []
    if run.result in FAILED_RESULTS:
        message = f"{run.label} {run.result.lower()}: {run.error or 'no reason reported'}"
        since = _since(runs, lambda r: r.result in FAILED_RESULTS)
        failed = AlertType.RunFailed
        alerts.append(RaisedAlert(failed, severity_of(failed), message[:MESSAGE_LIMIT], since))
    reading = [r for r in runs if r.rows_read > 0]
    current = [
        b
        for b in (_breaches_of(reading[0], thresholds) if reading else [])
        if b.type not in STANDING_BREACHES
    ]
    # A standing breach is the table's state when the run ended, whether or not it read rows.
    current += [b for b in run.breaches if b.type in STANDING_BREACHES]
    for breach in sorted(current, key=lambda b: b.type):
        streak = runs if breach.type in STANDING_BREACHES else reading
        since = _since(streak, lambda r, t=breach.type: any(b.type == t for b in _breaches_of(r, thresholds)))
        alerts.append(RaisedAlert(breach.type, breach.severity, breach.alert_message(), since))
    return Assessment(breaches=_breaches_of(run, thresholds), alerts=alerts)
