"""The command line: exit status, one-line errors, JSON output and the termination log."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from conftest import CASES, CLI, Org, order, orders_csv


def one_line_error(done: object, text: str) -> None:
    stderr = done.stderr  # type: ignore[attr-defined]
    assert done.returncode == 1, stderr  # type: ignore[attr-defined]
    assert stderr.count("\n") == 1 and stderr.startswith("orgpipeline: error: ") and text in stderr
    assert "Traceback" not in stderr


def run_orders(org: Org, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`orgpipeline run` of the orders table through the real script."""
    return org.cli("run", "-f", str(org.path), "--table", "orders", *args, env=env)


def test_run_json_and_termination_log(org: Org, tmp_path: Path) -> None:
    org.upload("orders_1.csv", orders_csv([order(1), order(2)]))
    log = tmp_path / "termination-log"
    done = run_orders(org, "-o", "json", env={"ORGPIPELINE_TERMINATION_LOG": str(log)})
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    for name in (
        "run_id",
        "rows_read",
        "inserted",
        "updated",
        "deleted",
        "unchanged",
        "rejected",
        "quality_score",
    ):
        assert name in result
    assert result["inserted"] == 2
    compact = json.loads(log.read_text())
    assert compact["runId"] == result["run_id"] and compact["result"] == "Succeeded"
    assert compact["files"] == ["orders_1.csv"] and compact["rowsRead"] == 2
    table = run_orders(org)
    assert table.returncode == 0 and "NoNewFiles" in table.stdout


def test_run_every_table(org: Org) -> None:
    org.upload("orders_1.csv", orders_csv([order(1)]))
    code, result = org.cli_json("run")
    assert code == 0 and [r["table"] for r in result["runs"]] == ["orders", "customers"]
    assert [r["result"] for r in result["runs"]] == ["Succeeded", "NoNewFiles"]


def test_rejected_file_prints_the_result_and_fails(org: Org) -> None:
    uri = org.upload("orders_bin.csv", (CASES / "binary.bin").read_bytes())
    done = org.cli("ingest", "-f", str(org.path), "--table", "orders", "--file", uri, "-o", "json")
    assert json.loads(done.stdout)["result"] == "Failed"
    one_line_error(done, "binary file")


def test_user_errors(org: Org, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: orgpipeline.io/v1alpha1\nkind: OrgPipeline\nspec: {orgId: 'Bad_Id'}\n")
    one_line_error(org.cli("run", "-f", str(bad)), "spec.orgId")
    one_line_error(org.cli("run", "-f", str(tmp_path / "nope.yaml")), "cannot read")
    one_line_error(org.cli("load", "-f", str(org.path), "--table", "invoices"), "unknown table 'invoices'")
    one_line_error(
        org.cli("ingest", "-f", str(org.path), "--table", "orders", "--file", "/no/such.csv"),
        "cannot read /no/such.csv",
    )
    one_line_error(
        org.cli(
            "ingest",
            "-f",
            str(org.path),
            "--table",
            "orders",
            "--file",
            f"s3://{org.bucket}/org-{org.org_id}/nope.csv",
        ),
        "NoSuchKey",
    )
    one_line_error(
        org.cli(
            "load",
            "-f",
            str(org.path),
            "--table",
            "orders",
            env={"ORGPIPELINE_POSTGRES_DSN": "postgresql://u:p@127.0.0.1:1/db"},
        ),
        "PostgreSQL unreachable",
    )
    one_line_error(
        org.cli(
            "load",
            "-f",
            str(org.path),
            "--table",
            "orders",
            env={"ORGPIPELINE_MONGO_URI": "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=500"},
        ),
        "MongoDB unreachable",
    )
    one_line_error(
        org.cli("load", "-f", str(org.path), "--table", "orders", env={"ORGPIPELINE_MONGO_URI": ""}),
        "missing settings: ORGPIPELINE_MONGO_URI",
    )
    usage = org.cli("load", "--table", "orders")
    assert usage.returncode == 2 and "Traceback" not in usage.stderr
    assert Path(CLI).exists()


def test_termination_log_of_a_run_that_cannot_start(org: Org, tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    done = run_orders(
        org,
        env={
            "ORGPIPELINE_TERMINATION_LOG": str(log),
            "ORGPIPELINE_POSTGRES_DSN": "postgresql://u:p@127.0.0.1:1/db",
        },
    )
    one_line_error(done, "PostgreSQL unreachable")
    compact = json.loads(log.read_text())
    assert compact["result"] == "Failed" and "PostgreSQL unreachable" in compact["error"]
    assert compact["orgId"] == org.org_id and compact["table"] == "orders"
