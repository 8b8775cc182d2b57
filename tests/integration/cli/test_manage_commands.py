"""The management commands against the real servers, on data the data plane itself produced.

Each test gets a fresh org (unique id, its own schema and collections), runs the data plane on small
CSV files from a local folder, then runs `orgpipeline <command>` as a user would (the console
script, in a subprocess) and checks what it prints, table and JSON, against the stores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from orgpipeline_api import store_names
from orgpipeline_api.v1alpha1 import load_manifest
from orgpipeline_jobs import pipeline
from orgpipeline_jobs.settings import Settings

REPO = Path(__file__).resolve().parents[3]
CLI = str(Path(sys.executable).parent / "orgpipeline")
HEADER = "order_id,customer_id,product_id,order_date,amount,status,email,note\n"
FILE_1 = HEADER + (
    "O1,C1,P1,2024-01-15,10.00,pending,a@x.com,n\n"
    "O2,C2,P2,2024-01-15,20.50,shipped,b@x.com,n\n"
    "O3,C3,P3,2024-01-16,-5,bogus,b@x.com,n\n"  # warnings: below min, not allowed
    "O4,,P4,2024-01-16,7,pending,d@x.com,n\n"  # error: missing customer_id -> rejected
)
FILE_2 = (
    HEADER
    + "O1,C1,P1,2024-01-15,11.00,shipped,a@x.com,changed\nO5,C5,P5,2024-01-17,99.99,delivered,e@x.com,n\n"
)


@dataclass
class Org:
    org_id: str
    path: Path
    source: Path
    mongo: Any
    pg: psycopg.Connection[Any]

    def run(self, *files: tuple[str, str]) -> None:
        for name, text in files:
            (self.source / name).write_text(text)
        _, spec = load_manifest(self.path)
        result = pipeline.run_table(Settings.from_env(), spec, "orders", None, str(self.source)).as_json()
        assert result["result"] == "Succeeded", result

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([CLI, *args], capture_output=True, text=True, env=dict(os.environ), timeout=120)

    def json(self, *args: str, code: int = 0) -> Any:
        done = self.cli(*args, "-o", "json")
        assert done.returncode == code, done.stderr
        return json.loads(done.stdout)

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        text = query.replace("{schema}", f'"{store_names.pg_schema(self.org_id)}"')
        return list(self.pg.execute(text, params).fetchall())  # type: ignore[arg-type]

    @property
    def collection(self) -> Any:
        return self.mongo[store_names.mongo_database(self.org_id)][
            store_names.mongo_collection(self.org_id, "orders")
        ]


@pytest.fixture()
def org(stack: Any, mongo: Any, pg: Any, unique_id: str, tmp_path: Path) -> Iterator[Org]:
    org_id = f"cli{unique_id}"
    doc = yaml.safe_load((REPO / "examples" / "org-123.yaml").read_text())
    doc["metadata"]["name"] = f"org-{org_id}"
    doc["spec"]["orgId"] = org_id
    doc["spec"]["source"]["prefix"] = f"org-{org_id}/"
    doc["spec"]["retention"] = {"keepVersions": 1, "auditLogDays": 365}
    path = tmp_path / "org.yaml"
    path.write_text(yaml.safe_dump(doc))
    source = tmp_path / "source"
    source.mkdir()
    made = Org(org_id, path, source, mongo, pg)
    yield made
    pg.execute(f'DROP SCHEMA IF EXISTS "{store_names.pg_schema(org_id)}" CASCADE')
    pg.execute(f'DROP SCHEMA IF EXISTS "orgaudit_{org_id}" CASCADE')
    made.collection.drop()


@pytest.fixture()
def loaded(org: Org) -> Org:
    org.run(("orders_1.csv", FILE_1))
    org.run(("orders_2.csv", FILE_2))
    return org


def test_status_reports_the_runs_table(loaded: Org) -> None:
    doc = loaded.json("status", "--org-id", loaded.org_id)
    (entry,) = doc["orgs"]
    (orders,) = [t for t in entry["tables"] if t["table"] == "orders"]
    runs = loaded.sql("SELECT count(*), sum(rows_read), sum(rejected) FROM {schema}.pipeline_runs")[0]
    assert (orders["runs"], orders["rows_read"], orders["rows_rejected"]) == (runs[0], runs[1], runs[2])
    assert orders["last_result"] == "Succeeded" and orders["failed"] == 0
    assert len(entry["recent_runs"]) == runs[0]
    table = loaded.cli("status", "--org-id", loaded.org_id)
    assert table.returncode == 0 and loaded.org_id in table.stdout and "Succeeded" in table.stdout


def test_quality_report_and_trend_match_the_metrics_tables(loaded: Org) -> None:
    doc = loaded.json("quality", "--org-id", loaded.org_id, "--table", "orders", "--days", "7")
    report = doc["orgs"][0]["report"]
    total, errors = loaded.sql(
        "SELECT sum(total_records), sum(records_with_errors) FROM {schema}.raw_orders_quality_metrics"
    )[0]
    assert (report["total_records"], report["records_with_errors"]) == (total, errors) == (6, 1)
    issues = {(i["issue_type"], i["field"]): (i["count"], i["percentage"]) for i in report["quality_issues"]}
    assert issues[("missing_required_field", "customer_id")] == (1, round(100 / 6, 2))
    assert "Review data source for customer_id completeness" in report["recommendations"]
    trend = doc["orgs"][0]["trend"]
    assert len(trend) == 7 and trend[-1]["total_records"] == 6
    text = loaded.cli("quality", "--org-id", loaded.org_id, "--days", "7").stdout
    assert "Quality issues" in text and "missing_required_field" in text and "Trend" in text


def test_audit_lists_changes_and_one_record_history(loaded: Org) -> None:
    doc = loaded.json("audit", "--org-id", loaded.org_id, "--limit", "3")
    assert len(doc["changes"]) == 3
    counts = dict(loaded.sql("SELECT change_type, count(*) FROM {schema}.raw_orders_change_log GROUP BY 1"))
    assert {k: v for k, v in doc["counts"][0].items() if k.isupper()} == counts == {"INSERT": 4, "UPDATE": 1}
    key = f"org_{loaded.org_id}_orders_O1_C1_2024-01-15"
    history = loaded.json("audit", "--org-id", loaded.org_id, "--composite-key", key)
    assert [v["version"] for v in history["versions"]] == [1, 2]
    assert history["versions"][1]["changes"]["amount"] == {"old": 10.0, "new": 11.0}
    assert set(history["versions"][1]["changed_fields"]) == {"amount", "note", "status"}
    text = loaded.cli("audit", "--org-id", loaded.org_id, "--composite-key", key).stdout
    assert "amount: 10.0 → 11.0" in text
    missing = loaded.cli("audit", "--org-id", loaded.org_id, "--composite-key", key + "x")
    assert missing.returncode == 2 and missing.stderr.startswith("orgpipeline: error: no record")


def test_metrics_rates_and_storage(loaded: Org) -> None:
    (m,) = loaded.json("metrics", "--org-id", loaded.org_id, "--days", "1")["orgs"]
    assert m["runs"] == 2 and m["success_rate_percent"] == 100.0 and m["rows_read"] == 6
    assert m["error_rate_percent"] == pytest.approx(100 / 6, abs=1e-3)
    assert m["ingestion_rows_per_minute"] > 0 and m["latency_versions"] == 5
    # `run` (what the CronJobs do): each version counts with its file's time, pickup to done.
    files = loaded.sql(
        "SELECT EXTRACT(EPOCH FROM finished_at - started_at)::float8 FROM {schema}.pipeline_files"
    )
    assert 0 < m["latency_mean_seconds"] <= m["latency_max_seconds"]
    assert m["latency_max_seconds"] == pytest.approx(max(f[0] for f in files), abs=1e-3)
    size = loaded.sql(
        "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c JOIN pg_namespace n"
        " ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind = 'r'",
        store_names.pg_schema(loaded.org_id),
    )[0][0]
    assert m["storage"]["postgres_bytes"] == size and m["storage"]["mongo_bytes"] > 0
    assert m["storage"]["versions"] == m["storage"]["versions_in_period"] == 5


def test_alerts_from_runs_exit_1_and_unknown_org_exit_2(loaded: Org) -> None:
    assert loaded.json("alerts", "--org-id", loaded.org_id)["alerts"] == []  # the last file was clean
    loaded.run(
        (
            "orders_3.csv",
            HEADER + "O6,,P6,2024-01-18,1,pending,f@x.com,n\nO7,C7,P7,2024-01-18,1,x,g@x.com,n\n",
        )
    )
    doc = loaded.json("alerts", "--org-id", loaded.org_id, code=1)
    types = {a["type"]: a for a in doc["alerts"]}
    assert {"ErrorRateAboveThreshold", "CompletenessBelowThreshold"} <= set(types)
    assert all(a["source"] == "runs" and a["table"] == "orders" for a in doc["alerts"])
    critical = loaded.json("alerts", "--org-id", loaded.org_id, "--severity", "critical", code=1)
    assert critical["alerts"] and all(a["severity"] == "critical" for a in critical["alerts"])
    unknown = loaded.cli("alerts", "--org-id", "no-such-org-x")
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1 and "unknown org" in unknown.stderr


def test_alerts_prefer_the_orgpipeline_status(loaded: Org, kube_api: Any) -> None:
    import kubernetes

    api = kubernetes.client.CustomObjectsApi(kube_api)
    body = yaml.safe_load(loaded.path.read_text())
    body["spec"]["suspend"] = True
    api.create_cluster_custom_object("orgpipeline.io", "v1alpha1", "orgpipelines", body)
    name = body["metadata"]["name"]
    try:
        alert = {
            "severity": "critical",
            "type": "RunFailed",
            "table": "orders",
            "message": "job x failed",
            "since": "2024-01-01T00:00:00Z",
        }
        api.patch_cluster_custom_object_status(
            "orgpipeline.io", "v1alpha1", "orgpipelines", name, {"status": {"alerts": [alert]}}
        )
        # A running operator may rewrite the status at any moment: the command must print the status
        # as it was just before or just after it ran, never the runs' alerts.
        before = _status_alerts(api, name)
        done = loaded.cli("alerts", "--org-id", loaded.org_id, "-o", "json")
        after = _status_alerts(api, name)
        doc = json.loads(done.stdout)
        printed = [(a["type"], a["message"]) for a in doc["alerts"]]
        assert doc["cluster"] is True and all(a["source"] == "cluster" for a in doc["alerts"])
        assert printed in (before, after)
        assert done.returncode == (1 if printed else 0)
    finally:
        api.delete_cluster_custom_object("orgpipeline.io", "v1alpha1", "orgpipelines", name)


def _status_alerts(api: Any, name: str) -> list[tuple[str, str]]:
    status = api.get_cluster_custom_object("orgpipeline.io", "v1alpha1", "orgpipelines", name)
    return [(a["type"], a["message"]) for a in (status.get("status") or {}).get("alerts") or []]


def test_validate_detects_rows_changed_behind_the_pipelines_back(loaded: Org) -> None:
    clean = loaded.json("validate", "--org-id", loaded.org_id)
    assert (
        clean["ok"] and clean["tables"][0]["mongo_versions"] == clean["tables"][0]["postgres_versions"] == 5
    )
    prefix = f"org_{loaded.org_id}_orders_"
    loaded.sql(
        "UPDATE {schema}.raw_orders SET amount = 1 WHERE composite_key = %s RETURNING 1",
        prefix + "O2_C2_2024-01-15",
    )
    loaded.sql(
        "DELETE FROM {schema}.raw_orders WHERE composite_key = %s RETURNING 1", prefix + "O5_C5_2024-01-17"
    )
    loaded.sql(
        "INSERT INTO {schema}.raw_orders (org_id, composite_key, order_id, version, is_active)"
        " VALUES (%s, %s, 'O9', 1, TRUE) RETURNING 1",
        loaded.org_id,
        prefix + "O9_C9",
    )
    doc = loaded.json("validate", "--org-id", loaded.org_id, code=1)
    found = {(d["kind"], d["composite_key"].removeprefix(prefix)) for d in doc["tables"][0]["listed"]}
    assert found == {
        ("hash_mismatch", "O2_C2_2024-01-15"),
        ("missing", "O5_C5_2024-01-17"),
        ("extra", "O9_C9"),
    }
    text = loaded.cli("validate", "--org-id", loaded.org_id)
    assert text.returncode == 1 and "DIFFERS" in text.stdout and "3 difference(s)" in text.stderr


def test_retention_dry_run_changes_nothing_then_applies(loaded: Org) -> None:
    active = "SELECT count(*) FROM {schema}.raw_orders WHERE is_active"
    before = loaded.sql(active)[0][0]
    dry = loaded.json("retention", "--org-id", loaded.org_id, "-f", str(loaded.path), "--dry-run")
    orders = next(t for t in dry["tables"] if t["table"] == "orders")
    assert dry["dry_run"] and dry["policy"]["keep_versions"] == 1 and orders["versions_deactivated"] == 1
    assert loaded.sql(active)[0][0] == before
    assert loaded.collection.count_documents({"is_active": False}) == 0
    real = loaded.json("retention", "--org-id", loaded.org_id, "-f", str(loaded.path), "--table", "orders")
    assert real["tables"] == [{**orders, "table": "orders"}]
    assert loaded.sql(active)[0][0] == before - 1
    assert loaded.collection.count_documents({"is_active": False, "version": 1}) == 1
    again = loaded.json("retention", "--org-id", loaded.org_id, "-f", str(loaded.path), "--dry-run")
    assert next(t for t in again["tables"] if t["table"] == "orders")["versions_deactivated"] == 0
    assert loaded.json("validate", "--org-id", loaded.org_id)["ok"]  # both sides deactivated alike
    other = loaded.cli("retention", "--org-id", "someone-else", "-f", str(loaded.path), "--dry-run")
    assert other.returncode == 2 and "not someone-else" in other.stderr


def test_retention_without_settings_is_a_user_error(loaded: Org) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ORGPIPELINE_POSTGRES_DSN"}
    out = subprocess.run(
        [CLI, "retention", "--org-id", loaded.org_id, "-f", str(loaded.path)],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == [
        "orgpipeline: error: missing settings: ORGPIPELINE_POSTGRES_DSN"
    ]


def test_values_with_rich_markup_are_printed_as_they_are(org: Org, tmp_path: Path) -> None:
    """A key, a value or a target holding `[/]` or `[bold]` is user data: the tables of audit,
    validate and compliance print it as it is (Rich would read it as markup and crash)."""
    org.run(("orders_1.csv", HEADER + "O[/]1,C[bold]1,P1,2024-01-15,10.00,pending,a@x.com,n[/]\n"))
    key = f"org_{org.org_id}_orders_O[/]1_C[bold]1_2024-01-15"
    audit = org.cli("audit", "--org-id", org.org_id)
    assert audit.returncode == 0, audit.stderr
    assert "O[/]1" in audit.stdout.replace("\n", "")
    history = org.cli("audit", "--org-id", org.org_id, "--composite-key", key)
    assert history.returncode == 0 and "Traceback" not in history.stderr, history.stderr
    org.sql("UPDATE {schema}.raw_orders SET note = 'x' WHERE composite_key = %s RETURNING 1", key)
    validate = org.cli("validate", "--org-id", org.org_id)
    assert validate.returncode == 1 and "Traceback" not in validate.stderr, validate.stderr
    assert "DIFFERS" in validate.stdout and "C[bold]1" in validate.stdout.replace("\n", "")
    (tmp_path / "out[").mkdir()
    target = tmp_path / "out[" / "]orders.csv"
    done = org.cli("export", "--org-id", org.org_id, "--table", "orders", "--output", str(target))
    assert done.returncode == 0, done.stderr
    compliance = org.cli("compliance", "--org-id", org.org_id)
    assert compliance.returncode == 0 and "Traceback" not in compliance.stderr, compliance.stderr
    assert "out[" in compliance.stdout  # the target, folded over lines
