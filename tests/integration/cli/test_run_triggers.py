"""Who and why of a run, as the Jobs pass it (environment) and as a user finds it again.

`orgpipeline run` runs as a Job's container would (the console script, with the trigger variables),
then the stores and `orgpipeline audit` are read: pipeline_runs, each version's audit trail
(PostgreSQL and MongoDB), the change log.
"""

# ruff: noqa: F811  (the `org` fixture is imported from test_manage_commands and named by the tests)
from __future__ import annotations

import json
import os
import subprocess
from typing import Any

from orgpipeline_api import store_names, triggers
from test_manage_commands import CLI, FILE_1, FILE_2, Org, org  # noqa: F401 (the fixture)


def run(org: Org, name: str, text: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    (org.source / name).write_text(text)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ORGPIPELINE_TRIG")}
    return subprocess.run(
        [CLI, "run", "-f", str(org.path), "--table", "orders", "--source-dir", str(org.source), *args],
        capture_output=True,
        text=True,
        env={**clean, **env},
        timeout=300,
        check=False,
    )  # fmt: skip


def test_a_run_now_jobs_trigger_reaches_runs_versions_change_log_and_audit(org: Org) -> None:
    done = run(
        org,
        "orders_1.csv",
        FILE_1,
        "-o",
        "json",
        **{
            triggers.ENV_TRIGGER: "run-now",
            triggers.ENV_TRIGGERED_BY: "alice",
            triggers.ENV_TRIGGER_REASON: "corrected upload",
        },
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["trigger"], report["triggered_by"], report["trigger_reason"]) == (
        "run-now",
        "alice",
        "corrected upload",
    )
    expected = {"type": "run-now", "user": "alice", "reason": "corrected upload"}
    assert org.sql("SELECT trigger, user_id, trigger_reason FROM {schema}.pipeline_runs") == [
        ("run-now", "alice", "corrected upload")
    ]
    raw = org.sql(
        "SELECT DISTINCT changed_by_user_id, audit_trail->'processing_metadata'->'trigger'"
        " FROM {schema}.raw_orders"
    )
    assert raw == [("alice", expected)]
    log = org.sql(
        "SELECT DISTINCT changed_by_user_id, change_metadata->'trigger' FROM {schema}.raw_orders_change_log"
    )
    assert log == [("alice", expected)]
    doc = org.collection.find_one({"order_id": "O1"})
    assert (
        doc["changed_by_user_id"] == "alice"
        and doc["audit_trail"]["processing_metadata"]["trigger"] == expected
    )

    audit = org.json("audit", "--org-id", org.org_id)
    assert {json.dumps(c["trigger"]) for c in audit["changes"]} == {json.dumps(expected)}
    assert {c["changed_by_user_id"] for c in audit["changes"]} == {"alice"}
    history = org.json("audit", "--org-id", org.org_id, "--composite-key", doc["composite_key"])
    assert history["versions"][0]["trigger"] == expected
    (recent,) = org.json("status", "--org-id", org.org_id)["orgs"][0]["recent_runs"]
    assert (recent["trigger"], recent["user_id"], recent["trigger_reason"]) == (
        "run-now",
        "alice",
        "corrected upload",
    )
    table = org.cli("audit", "--org-id", org.org_id)
    assert "run-now:" in table.stdout and "alice" in table.stdout  # the reason may wrap


def test_scheduled_and_manual_runs_say_so(org: Org) -> None:
    schedule = {triggers.ENV_TRIGGER: "schedule", triggers.ENV_TRIGGERED_BY: "system:schedule:ingest-orders"}
    assert run(org, "orders_1.csv", FILE_1, **schedule).returncode == 0
    assert run(org, "orders_2.csv", FILE_2, "--user-id", "bob").returncode == 0
    rows = org.sql("SELECT trigger, user_id, trigger_reason FROM {schema}.pipeline_runs ORDER BY started_at")
    assert rows == [("schedule", "system:schedule:ingest-orders", None), ("manual", "bob", None)]
    updated = org.sql(
        "SELECT change_metadata->'trigger'->>'type', changed_by_user_id FROM {schema}.raw_orders_change_log"
        " WHERE change_type = 'UPDATE'"
    )
    assert updated == [("manual", "bob")]
    inserted = org.sql(
        "SELECT changed_by_user_id, count(*) FROM {schema}.raw_orders WHERE version = 1 GROUP BY 1 ORDER BY 1"
    )
    assert inserted == [("bob", 1), ("system:schedule:ingest-orders", 3)]


def test_a_manual_run_without_user_id_names_its_caller(org: Org) -> None:
    """Issue 26: a manual run wrote changed_by_user_id null on every version."""
    assert run(org, "orders_1.csv", FILE_1).returncode == 0
    caller = triggers.caller()
    assert org.sql("SELECT DISTINCT changed_by_user_id FROM {schema}.raw_orders") == [(caller,)]
    assert org.sql("SELECT trigger, user_id FROM {schema}.pipeline_runs") == [("manual", caller)]
    assert org.collection.count_documents({"changed_by_user_id": None}) == 0


def test_a_file_arrival_records_each_files_uploader(org: Org) -> None:
    """The operator passes the S3 events' principals; each file's versions name its own uploader,
    a file no event named the run's user."""
    (org.source / "orders_1.csv").write_text(FILE_1)
    uploaders = {str(org.source / "orders_1.csv"): "acct-alice", str(org.source / "orders_2.csv"): "acct-bob"}
    env = {e["name"]: e["value"] for e in triggers.file_arrival(uploaders, "2 new objects").job_env()}
    assert run(org, "orders_2.csv", FILE_2, **env).returncode == 0
    rows = org.sql("SELECT changed_by_user_id, count(*) FROM {schema}.raw_orders GROUP BY 1 ORDER BY 1")
    assert rows == [("acct-alice", 3), ("acct-bob", 2)]  # orders_1's 3 accepted rows, orders_2's 2
    assert org.sql("SELECT user_id FROM {schema}.pipeline_runs") == [("acct-alice, acct-bob",)]


def test_an_unknown_trigger_is_one_line_and_exit_2(org: Org) -> None:
    done = run(org, "orders_1.csv", FILE_1, **{triggers.ENV_TRIGGER: "cron"})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "orgpipeline: error: ORGPIPELINE_TRIGGER='cron' is not a trigger"
        " (one of schedule, run-now, file-arrival, manual)"
    ]


def test_a_runs_table_made_before_triggers_gains_the_columns(org: Org) -> None:
    assert run(org, "orders_1.csv", FILE_1).returncode == 0
    schema = store_names.pg_schema(org.org_id)
    org.pg.execute(f'ALTER TABLE "{schema}".pipeline_runs DROP COLUMN trigger, DROP COLUMN trigger_reason')
    (old,) = org.json("status", "--org-id", org.org_id)["orgs"][0]["recent_runs"]  # read before any run
    assert old["trigger"] is None
    assert run(org, "orders_2.csv", FILE_2, **{triggers.ENV_TRIGGER: "schedule"}).returncode == 0
    rows: list[Any] = org.sql("SELECT trigger FROM {schema}.pipeline_runs ORDER BY started_at")
    assert rows == [(None,), ("schedule",)]
