"""`orgpipeline import-schemas` as a seed user runs it: their schema files in, a manifest the API
server accepts out, and a pipeline that loads their CSV with it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from orgpipeline_api import store_names
from orgpipeline_api.v1alpha1 import parse_manifest
from orgpipeline_jobs import pipeline
from orgpipeline_jobs.settings import Settings

CLI = str(Path(sys.executable).parent / "orgpipeline")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], capture_output=True, text=True, env=dict(os.environ), timeout=120)


def test_imported_manifest_passes_server_dry_run_and_loads_the_seeds_csv(
    stack: Any, pg: Any, mongo: Any, unique_id: str, tmp_path: Path
) -> None:
    org_id = f"imp{unique_id}"
    schemas = tmp_path / "user_schemas"
    schemas.mkdir()
    (schemas / f"{org_id}_orders_schema.csv").write_text(
        "column_name,data_type\norg_id,TEXT NOT NULL\norder_id,TEXT PRIMARY KEY\ncustomer_id,TEXT\n"
        "order_date,DATE NOT NULL\namount,DECIMAL(10,2)\ncomposite_key,TEXT NOT NULL\n"
        "version,INTEGER NOT NULL DEFAULT 1\n# ... enhanced metadata columns automatically added\n"
    )
    (schemas / f"{org_id}_schema.csv").write_text(
        "table_name,column_name,data_type\ncustomers,customer_id,VARCHAR(32) PRIMARY KEY\n"
        "customers,joined,TIMESTAMP WITH TIME ZONE\n"
    )
    done = _cli("import-schemas", str(schemas), "--org-id", org_id)
    assert done.returncode == 0, done.stderr
    manifest = yaml.safe_load(done.stdout)
    applied = subprocess.run(
        ["kubectl", "apply", "--dry-run=server", "-f", "-", "-o", "yaml"],
        input=done.stdout,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert applied.returncode == 0, applied.stderr
    assert yaml.safe_load(applied.stdout)["spec"]["orgId"] == org_id
    assert (
        subprocess.run(["kubectl", "get", "orgpipeline", f"org-{org_id}"], capture_output=True).returncode
        != 0
    )

    # The manifest works: the seed's CSV loads into the typed columns.
    _, spec = parse_manifest(manifest)
    source = tmp_path / "source"
    source.mkdir()
    (source / "orders_1.csv").write_text(
        "order_id,customer_id,order_date,amount\nO1,C1,2024-01-15,99.99\nO2,C2,2024-01-16,5\n"
    )
    try:
        result = pipeline.run_table(Settings.from_env(), spec, "orders", None, str(source)).as_json()
        assert result["result"] == "Succeeded" and result["inserted"] == 2, result
        schema = store_names.pg_schema(org_id)
        rows = pg.execute(
            f'SELECT order_id, order_date::text, amount::text FROM "{schema}".raw_orders ORDER BY 1'
        ).fetchall()
        assert rows == [("O1", "2024-01-15", "99.99"), ("O2", "2024-01-16", "5.00")]
    finally:
        pg.execute(f'DROP SCHEMA IF EXISTS "{store_names.pg_schema(org_id)}" CASCADE')
        mongo[store_names.mongo_database(org_id)][store_names.mongo_collection(org_id, "orders")].drop()


def test_bad_schema_files_exit_2_with_file_and_line(stack: Any, tmp_path: Path) -> None:
    (tmp_path / "123_orders_schema.csv").write_text("column_name,data_type\norder_id,TEXT\npayload,JSONB\n")
    done = _cli("import-schemas", str(tmp_path), "--org-id", "123")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (
        f"orgpipeline: error: {tmp_path / '123_orders_schema.csv'}:3: column payload: unknown type 'JSONB':"
        " the manifest takes TEXT, VARCHAR(n), INTEGER, BIGINT, SMALLINT, DOUBLE PRECISION, REAL, BOOLEAN,"
        " DATE, TIMESTAMP, TIMESTAMPTZ, DECIMAL(p,s)\n"
    )
    missing = _cli("import-schemas", str(tmp_path / "nope"), "--org-id", "123")
    assert missing.returncode == 2 and missing.stderr.strip().endswith("is not a directory")
    assert "Traceback" not in missing.stderr
