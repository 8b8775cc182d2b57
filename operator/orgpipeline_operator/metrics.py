"""Prometheus metrics and the readiness endpoint, served from one small HTTP server.

Reconcile counts, durations and errors; API requests by verb (what "requests per idle resync"
counts); per-org gauges set from the status the operator writes (quality, rows, alerts, last
success). /readyz answers 200 once Kopf has started and listed its resources; Kopf's own liveness
endpoint (/healthz, another port) covers liveness.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import prometheus_client
from orgpipeline_api.v1alpha1_status import LastRun
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# No `<counter>_created` series: one more series per labelled child, of no use to the dashboard or
# the alert rules, and the per-org and per-table counters have thousands of children at scale.
prometheus_client.disable_created_metrics()

RECONCILES = Counter(
    "orgpipeline_reconcile_total", "Reconciles of OrgPipelines by trigger and outcome.", ["trigger", "result"]
)
RECONCILE_SECONDS = Histogram(
    "orgpipeline_reconcile_duration_seconds",
    "Duration of reconciles.",
    ["trigger"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RECONCILE_ERRORS = Counter(
    "orgpipeline_reconcile_errors_total", "Reconciles that failed, by reason.", ["reason"]
)
CHILD_WRITES = Counter(
    "orgpipeline_child_writes_total", "Children applied or deleted, by kind.", ["kind", "op"]
)
API_REQUESTS = Counter(
    "orgpipeline_api_requests_total", "Kubernetes API requests sent by the operator.", ["verb"]
)
S3_POLICY_SYNCS = Counter(
    "orgpipeline_s3_policy_syncs_total",
    "Reads of a source bucket's policy by its writer, by whether a write followed (each takes along "
    "every org's statement asked for meanwhile).",
    ["wrote"],
)
S3_POLICY_SECONDS = Counter(
    "orgpipeline_s3_policy_seconds_total", "Seconds the bucket policies' writers spent reading and writing."
)
WEBHOOK_REQUESTS = Counter(
    "orgpipeline_webhook_requests_total",
    "S3 event notifications received, by outcome (accepted, unauthorized, too_large, bad_request).",
    ["result"],
)
WEBHOOK_OBJECTS = Counter(
    "orgpipeline_webhook_objects_total",
    "Created objects reported by notifications: matched a table, ignored, ambiguous (several orgs),"
    " refused (key over 1,024 bytes); coalesced: matched ones that joined a table's pending run.",
    ["result"],
)
FILE_ARRIVAL_RUNS = Counter(
    "orgpipeline_file_arrival_runs_total", "Jobs started for arrived files, by outcome.", ["result"]
)
JOB_RESULTS = Counter("orgpipeline_job_results_total", "Finished Jobs read back, by result.", ["result"])
RUN_BREACHES = Counter(
    "orgpipeline_run_breaches_total",
    "Breaches reported by finished runs, by type (thresholds; VolumeAnomaly, QualityAnomaly).",
    ["type"],
)


class _OrgGauges(Collector):
    """The per-org gauges (`orgpipeline_org_*`), kept as a few numbers per org and turned into
    series at scrape time. As prometheus_client Gauges they were 8 labelled children per org (each
    an object with its lock and value holder): ~17 MB at 3,000 orgs, now ~1 MB."""

    FAMILIES = (
        ("orgpipeline_org_ready", "1 when the org's Ready condition is True.", ["org"]),
        ("orgpipeline_org_active_alerts", "Active alerts of the org.", ["org"]),
        ("orgpipeline_org_quality_score", "Lowest quality score of the org's last runs.", ["org"]),
        (
            "orgpipeline_org_last_success_timestamp_seconds",
            "When the org's last successful run finished.",
            ["org"],
        ),
        ("orgpipeline_org_rows", "Rows of the org's last runs, by kind.", ["org", "kind"]),
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # org -> [ready, alerts, quality, last success, *rows by ROW_KINDS]; quality and last success
        # keep their last value when a status has none (as the Gauges did)
        self._orgs: dict[str, list[float | None]] = {}

    def set(self, org: str, values: dict[str, Any]) -> None:
        rows = values.get("rows", {})
        with self._lock:
            known = self._orgs.get(org)
            quality = values.get("quality")
            last_success = values.get("lastSuccess")
            self._orgs[org] = [
                1.0 if values.get("ready") else 0.0,
                float(values.get("alerts", 0)),
                float(quality) if quality is not None else (known[2] if known else None),
                float(last_success) if last_success is not None else (known[3] if known else None),
                *(float(rows.get(kind, 0)) for kind in ROW_KINDS),
            ]

    def forget(self, org: str) -> None:
        with self._lock:
            self._orgs.pop(org, None)

    def describe(self) -> Iterator[Metric]:
        for name, documentation, labels in self.FAMILIES:
            yield GaugeMetricFamily(name, documentation, labels=labels)

    def collect(self) -> Iterator[Metric]:
        families = [GaugeMetricFamily(n, d, labels=labels) for n, d, labels in self.FAMILIES]
        ready, alerts, quality, last_success, rows = families
        with self._lock:
            orgs = [(org, list(values)) for org, values in self._orgs.items()]
        for org, values in orgs:
            ready.add_metric([org], values[0] or 0.0)
            alerts.add_metric([org], values[1] or 0.0)
            if values[2] is not None:
                quality.add_metric([org], values[2])
            if values[3] is not None:
                last_success.add_metric([org], values[3])
            for kind, value in zip(ROW_KINDS, values[4:], strict=True):
                rows.add_metric([org, kind], value or 0.0)
        yield from families


ROW_KINDS = ("rowsRead", "inserted", "updated", "deleted", "unchanged", "rejected")
ORG_GAUGES = _OrgGauges()
prometheus_client.REGISTRY.register(ORG_GAUGES)

# Per org and table: the labels stop there (no run, file or job labels), so the series grow with
# orgs x tables and not with the runs.
TABLE_LABELS = ["org", "table"]
TABLE_RUNS = Counter(
    "orgpipeline_table_runs_total",
    "Finished runs read back, by org, table and result.",
    [*TABLE_LABELS, "result"],
)
TABLE_ROWS_READ = Counter(
    "orgpipeline_table_rows_read_total", "CSV rows the table's runs read.", TABLE_LABELS
)
TABLE_ROWS_WRITTEN = Counter(
    "orgpipeline_table_rows_written_total",
    "Versions the table's runs wrote (inserted, updated and deleted records).",
    TABLE_LABELS,
)
TABLE_ROWS_REJECTED = Counter(
    "orgpipeline_table_rows_rejected_total",
    "Rows the table's runs rejected (see `orgpipeline rejected`).",
    TABLE_LABELS,
)
TABLE_RUN_SECONDS = Histogram(
    "orgpipeline_table_run_duration_seconds",
    "Duration of the table's runs, from the Job's start to its end.",
    TABLE_LABELS,
    buckets=(10, 60, 300, 900, 1800, 3600),
)
TABLE_LAST_SUCCESS = Gauge(
    "orgpipeline_table_last_success_timestamp_seconds",
    "When the table's last successful run finished.",
    TABLE_LABELS,
)
TABLE_QUALITY = Gauge(
    "orgpipeline_table_quality_score", "Overall quality score of the table's last run (0..1).", TABLE_LABELS
)
TABLE_STORAGE_BYTES = Gauge(
    "orgpipeline_table_storage_bytes",
    "The table's measured size at its last run: PostgreSQL relations (store=postgres) and MongoDB"
    " collection data and indexes (store=mongodb).",
    ["org", "table", "store"],
)
_TABLES: dict[str, set[str]] = {}  # org -> tables with series (to drop them with the org)

RETENTION_RUNS = Counter(
    "orgpipeline_retention_runs_total",
    "Finished retention Jobs read back, by org and result.",
    ["org", "result"],
)
RETENTION_VERSIONS = Counter(
    "orgpipeline_retention_versions_deactivated_total",
    "Versions the org's retention runs set inactive (beyond spec.retention.keepVersions).",
    ["org"],
)
RETENTION_AUDIT_ROWS = Counter(
    "orgpipeline_retention_audit_rows_removed_total",
    "Change-log, rejected-row, quality-metric and run rows the org's retention runs deleted.",
    ["org"],
)
RETENTION_LAST_RUN = Gauge(
    "orgpipeline_retention_last_run_timestamp_seconds", "When the org's last retention run finished.", ["org"]
)
RETENTION_LAST_SUCCESS = Gauge(
    "orgpipeline_retention_last_success_timestamp_seconds",
    "When the org's last successful retention run finished.",
    ["org"],
)

# Totals over the orgs (what a dashboard or an alert on thousands of tenants reads first; a scrape
# restricted to these names, `/metrics?name[]=orgpipeline_orgs_ready`, costs nothing per org).
_KNOWN: set[str] = set()
_READY: set[str] = set()
ORGS = Gauge("orgpipeline_orgs", "Orgs the operator has reconciled (and not seen deleted).")
ORGS.set_function(lambda: len(_KNOWN))
ORGS_READY = Gauge("orgpipeline_orgs_ready", "Orgs whose Ready condition is True.")
ORGS_READY.set_function(lambda: len(_READY))


def set_org(org: str, values: dict[str, Any]) -> None:
    """Sets the org's gauges from a summary dict (see status.gauges)."""
    _KNOWN.add(org)
    if values.get("ready"):
        _READY.add(org)
    else:
        _READY.discard(org)
    ORG_GAUGES.set(org, values)
    for table, run in (values.get("tables") or {}).items():
        _set_table(org, table, run)
    retention = values.get("retention")
    if retention is not None and retention.finished_at:
        finished = _timestamp(retention.finished_at)
        if finished is not None:
            RETENTION_LAST_RUN.labels(org=org).set(finished)
            if retention.result.value == "Succeeded":
                RETENTION_LAST_SUCCESS.labels(org=org).set(finished)


def record_run(org: str, table: str, run: LastRun) -> None:
    """Counts one finished run of the table (read once: the status remembers the Job)."""
    _TABLES.setdefault(org, set()).add(table)
    TABLE_RUNS.labels(org=org, table=table, result=run.result.value).inc()
    TABLE_ROWS_READ.labels(org=org, table=table).inc(run.rows_read)
    TABLE_ROWS_WRITTEN.labels(org=org, table=table).inc(run.inserted + run.updated + run.deleted)
    TABLE_ROWS_REJECTED.labels(org=org, table=table).inc(run.rejected)
    started, finished = _timestamp(run.started_at or ""), _timestamp(run.finished_at or "")
    if started is not None and finished is not None and finished >= started:
        TABLE_RUN_SECONDS.labels(org=org, table=table).observe(finished - started)


def record_retention_run(org: str, result: str, versions: int, audit_rows: int) -> None:
    """Counts one finished retention Job of the org (read once: the status remembers the Job)."""
    RETENTION_RUNS.labels(org=org, result=result).inc()
    RETENTION_VERSIONS.labels(org=org).inc(versions)
    RETENTION_AUDIT_ROWS.labels(org=org).inc(audit_rows)


def _set_table(org: str, table: str, run: LastRun) -> None:
    """The table's gauges from its last run, as the status has it (so they survive a restart)."""
    _TABLES.setdefault(org, set()).add(table)
    if run.quality_score is not None:
        TABLE_QUALITY.labels(org=org, table=table).set(run.quality_score)
    finished = _timestamp(run.finished_at or "")
    if finished is not None and run.result.value != "Failed":
        TABLE_LAST_SUCCESS.labels(org=org, table=table).set(finished)
    for store, size in (("postgres", run.postgres_bytes), ("mongodb", run.mongo_bytes)):
        if size is not None:
            TABLE_STORAGE_BYTES.labels(org=org, table=table, store=store).set(size)


def _timestamp(value: str) -> float | None:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def forget_org(org: str) -> None:
    """Drops the org's series when its OrgPipeline is gone."""
    _KNOWN.discard(org)
    _READY.discard(org)
    ORG_GAUGES.forget(org)
    for metric in (RETENTION_VERSIONS, RETENTION_AUDIT_ROWS, RETENTION_LAST_RUN, RETENTION_LAST_SUCCESS):
        with contextlib.suppress(KeyError):
            metric.remove(org)
    for result in ("Succeeded", "Failed"):
        with contextlib.suppress(KeyError):
            RETENTION_RUNS.remove(org, result)
    for table in _TABLES.pop(org, set()):
        for table_metric in (
            TABLE_ROWS_READ,
            TABLE_ROWS_WRITTEN,
            TABLE_ROWS_REJECTED,
            TABLE_RUN_SECONDS,
            TABLE_LAST_SUCCESS,
            TABLE_QUALITY,
        ):
            with contextlib.suppress(KeyError):
                table_metric.remove(org, table)
        for result in ("Succeeded", "Failed", "NoNewFiles"):
            with contextlib.suppress(KeyError):
                TABLE_RUNS.remove(org, table, result)
        for store in ("postgres", "mongodb"):
            with contextlib.suppress(KeyError):
                TABLE_STORAGE_BYTES.remove(org, table, store)


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class _ThreadingServer(WSGIServer):
    daemon_threads = True


def serve(port: int, ready: threading.Event) -> WSGIServer:
    """Starts /metrics and /readyz on the port in a daemon thread; returns the server."""
    metrics_app = prometheus_client.make_wsgi_app()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/readyz":
            ok = ready.is_set()
            start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"ok\n" if ok else b"starting\n"]
        return metrics_app(environ, start_response)

    server = make_server("0.0.0.0", port, app, server_class=_ThreadingServer, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
