"""OrgPipeline v1alpha1 status: what the operator writes back through the status subresource.

The operator is the only writer. The models are tolerant (unknown fields are ignored) so that an
older operator can read a status a newer one wrote. The CRD's status schema is generated from them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field

from orgpipeline_api.run_report import AlertSeverity, Breach, RunResult, TolerantModel


class ConditionStatus(StrEnum):
    true = "True"
    false = "False"
    unknown = "Unknown"


class Condition(TolerantModel):
    """One aspect of the pipeline's state, per the Kubernetes API conventions."""

    type: Annotated[
        str,
        Field(
            max_length=316,
            pattern=r"^[A-Za-z][A-Za-z0-9]*$",
            description="Kind of condition: Ready, DatabaseReady, ResourcesReady, Suspended or Healthy.",
        ),
    ]
    status: Annotated[ConditionStatus, Field(description="True, False or Unknown.")]
    observed_generation: Annotated[
        int | None, Field(ge=0, description="The metadata.generation the condition was set for.")
    ] = None
    last_transition_time: Annotated[
        str,
        Field(
            json_schema_extra={"format": "date-time"}, description="When the status last changed (RFC 3339)."
        ),
    ]
    reason: Annotated[
        str,
        Field(
            max_length=1024,
            pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
            description="CamelCase machine-readable reason of the last transition.",
        ),
    ]
    message: Annotated[str, Field(max_length=32768, description="Human-readable details.")] = ""


class LastRun(TolerantModel):
    """The outcome of the table's most recent finished Job (its container's termination message)."""

    job: Annotated[str, Field(max_length=63, description="Name of the Job that ran.")]
    run_id: Annotated[str | None, Field(max_length=128, description="The data plane's run id.")] = None
    result: Annotated[RunResult, Field(description="Succeeded, Failed or NoNewFiles.")]
    files: Annotated[
        list[str], Field(max_length=100, description="Files the run processed (the first 100).")
    ] = Field(default_factory=list)
    rows_read: Annotated[int, Field(ge=0, description="CSV rows read.")] = 0
    inserted: Annotated[int, Field(ge=0, description="Records inserted (version 1).")] = 0
    updated: Annotated[int, Field(ge=0, description="Records with a new version.")] = 0
    deleted: Annotated[int, Field(ge=0, description="Records given a DELETE version.")] = 0
    unchanged: Annotated[int, Field(ge=0, description="Records whose hash did not change.")] = 0
    rejected: Annotated[
        int, Field(ge=0, description="Rows rejected (recorded with file, line and reason).")
    ] = 0
    quality_score: Annotated[float | None, Field(description="Overall quality score of the run (0..1).")] = (
        None
    )
    completeness_score: Annotated[
        float | None, Field(description="Completeness score of the run (0..1).")
    ] = None
    error_rate_percent: Annotated[float | None, Field(description="Rejected or failed rows, in percent.")] = (
        None
    )
    breaches: Annotated[
        list[Breach], Field(max_length=20, description="Thresholds the run did not meet.")
    ] = Field(default_factory=list)
    started_at: Annotated[
        str | None, Field(json_schema_extra={"format": "date-time"}, description="When the run started.")
    ] = None
    finished_at: Annotated[
        str | None, Field(json_schema_extra={"format": "date-time"}, description="When the run finished.")
    ] = None
    error: Annotated[str | None, Field(max_length=4096, description="Why the run failed.")] = None
    trigger: Annotated[
        str | None,
        Field(max_length=32, description="What started the run: schedule, run-now, file-arrival or manual."),
    ] = None
    triggered_by: Annotated[
        str | None,
        Field(max_length=256, description="Who asked for the run (run-now requester); empty when unknown."),
    ] = None
    trigger_reason: Annotated[
        str | None, Field(max_length=1024, description="Why the run was asked for (run-now reason).")
    ] = None
    business_keys: Annotated[
        list[Annotated[str, Field(max_length=63)]],
        Field(max_length=8, description="The business keys the run used."),
    ] = Field(default_factory=list)
    business_keys_detected: Annotated[
        bool, Field(description="True when the run detected the business keys from the data.")
    ] = False
    postgres_bytes: Annotated[
        int | None, Field(ge=0, description="The table's PostgreSQL size in bytes when the run ended.")
    ] = None
    mongo_bytes: Annotated[
        int | None,
        Field(
            ge=0,
            description="The table's MongoDB collection size in bytes (data and indexes) when the run ended.",
        ),
    ] = None

    @property
    def label(self) -> str:
        return f"job {self.job}"


class TableStatus(TolerantModel):
    """Per-table state: its CronJob and its last run."""

    name: Annotated[str, Field(max_length=40, description="The table's name.")]
    cron_job: Annotated[
        str, Field(max_length=52, description="Name of the table's CronJob in the org's namespace.")
    ]
    schedule: Annotated[str, Field(max_length=256, description="The CronJob's schedule.")]
    suspended: Annotated[bool, Field(description="Whether the CronJob is suspended.")] = False
    business_keys: Annotated[
        list[Annotated[str, Field(max_length=63)]],
        Field(
            max_length=8,
            description="The business keys in use: spec.tables[].businessKeys, or those the last run "
            "detected from the data.",
        ),
    ] = Field(default_factory=list)
    business_keys_detected: Annotated[
        bool,
        Field(description="True when the business keys were detected from the data, not given in the spec."),
    ] = False
    last_run: Annotated[LastRun | None, Field(description="The most recent finished run.")] = None


class RetentionRun(TolerantModel):
    """The outcome of the org's most recent finished retention Job."""

    job: Annotated[str, Field(max_length=63, description="Name of the Job that ran.")]
    result: Annotated[RunResult, Field(description="Succeeded or Failed.")]
    versions_deactivated: Annotated[
        int, Field(ge=0, description="Versions beyond retention.keepVersions set inactive.")
    ] = 0
    audit_rows_removed: Annotated[
        int,
        Field(
            ge=0,
            description="Change-log, rejected-row, quality-metric and run rows older than "
            "retention.auditLogDays deleted.",
        ),
    ] = 0
    started_at: Annotated[
        str | None, Field(json_schema_extra={"format": "date-time"}, description="When the run started.")
    ] = None
    finished_at: Annotated[
        str | None, Field(json_schema_extra={"format": "date-time"}, description="When the run finished.")
    ] = None
    error: Annotated[str | None, Field(max_length=4096, description="Why the run failed.")] = None


class RetentionStatus(TolerantModel):
    """The org's retention CronJob and its last run."""

    cron_job: Annotated[str, Field(max_length=52, description="Name of the retention CronJob.")]
    schedule: Annotated[str, Field(max_length=256, description="The CronJob's schedule.")]
    suspended: Annotated[bool, Field(description="Whether the CronJob is suspended.")] = False
    last_run: Annotated[RetentionRun | None, Field(description="The most recent finished run.")] = None


class Alert(TolerantModel):
    """An active alert: a failed run or a breached quality threshold, until a later run clears it."""

    severity: Annotated[AlertSeverity, Field(description="warning or critical.")]
    type: Annotated[
        str,
        Field(
            max_length=128,
            description="RunFailed, QualityBelowThreshold, "
            "ErrorRateAboveThreshold, CompletenessBelowThreshold, ...",
        ),
    ]
    table: Annotated[str, Field(max_length=40, description="The table the alert is about.")]
    message: Annotated[str, Field(max_length=1024, description="What happened.")]
    since: Annotated[
        str, Field(json_schema_extra={"format": "date-time"}, description="When the alert first fired.")
    ]


class OrgPipelineStatus(TolerantModel):
    """What the operator observed: conditions, tables and their last runs, alerts, and a summary."""

    observed_generation: Annotated[
        int | None, Field(ge=0, description="The metadata.generation the operator last reconciled.")
    ] = None
    namespace: Annotated[str | None, Field(max_length=63, description="The org's namespace.")] = None
    conditions: Annotated[
        list[Condition],
        Field(
            max_length=16,
            description="Ready, DatabaseReady, ResourcesReady, Suspended and Healthy.",
            json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
        ),
    ] = Field(default_factory=list)
    tables: Annotated[list[TableStatus], Field(max_length=50, description="Per-table state.")] = Field(
        default_factory=list
    )
    alerts: Annotated[list[Alert], Field(max_length=200, description="Active alerts.")] = Field(
        default_factory=list
    )
    retention: Annotated[
        RetentionStatus | None, Field(description="The retention CronJob and its last run.")
    ] = None
    table_count: Annotated[int, Field(ge=0, description="Number of tables (a printer column).")] = 0
    quality_score: Annotated[
        float | None,
        Field(description="Lowest quality score among the tables' last runs (a printer column)."),
    ] = None
    active_alerts: Annotated[int, Field(ge=0, description="Number of active alerts (a printer column).")] = 0
    last_run_time: Annotated[
        str | None,
        Field(
            json_schema_extra={"format": "date-time"},
            description="When the most recent run finished (a printer column).",
        ),
    ] = None
    last_success_time: Annotated[
        str | None,
        Field(
            json_schema_extra={"format": "date-time"},
            description="When the most recent successful run finished.",
        ),
    ] = None
    children_hash: Annotated[
        str | None,
        Field(
            max_length=64,
            description="Hash of the namespace-level objects last applied (namespace, service account, "
            "quota, limits, network policy, manifest); equal hash: nothing to write.",
        ),
    ] = None

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)

    def table(self, name: str) -> TableStatus | None:
        return next((t for t in self.tables if t.name == name), None)
