"""The org's read-only role (issue 13): provisioned by the operator with its Secret, it sees the
org's data only through masked views: no raw pii or sensitive value of its org in any relation it
can read, and nothing of another org."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from operator_helpers import (
    Kubectl,
    Operator,
    apply_ready,
    condition,
    get_pipeline,
    pipeline,
    wait_for,
    wait_ready,
)
from orgpipeline_api import store_names
from orgpipeline_api.v1alpha1 import parse_manifest
from orgpipeline_jobs import pipeline as dataplane
from orgpipeline_jobs.settings import Settings
from orgpipeline_operator import kube
from orgpipeline_operator import reader as reader_mod

ORDERS = {
    "name": "orders",
    "businessKeys": ["order_id"],
    "mode": "snapshot",
    "columns": [
        {"name": "order_id", "type": "text", "required": True},
        {"name": "email", "type": "text", "classification": "pii"},
        {"name": "card", "type": "text", "classification": "sensitive"},
        {"name": "amount", "type": "decimal(10,2)", "classification": "public"},
    ],
}
CUSTOMERS = {  # the business key itself is pii: the composite key is masked too
    "name": "customers",
    "businessKeys": ["email"],
    "columns": [
        {"name": "email", "type": "text", "required": True, "classification": "pii"},
        {"name": "birthday", "type": "date", "classification": "sensitive"},
        {"name": "country", "type": "text"},
    ],
}
CRD = Path(__file__).resolve().parents[3] / "crds" / "orgpipeline.io_orgpipelines.yaml"


@pytest.fixture(autouse=True)
def this_crd(kubectl: Kubectl) -> None:
    """This checkout's CRD (with `classification`): the session installed it, but a shared API server
    may have been given another checkout's since. Only then is it applied again (a CRD change makes
    the API server re-initialise the resource's storage and drop every watch of it)."""
    installed = kubectl("get", "crd/orgpipelines.orgpipeline.io", "-o", "json", check=False).stdout
    if '"classification"' in installed:
        return
    kubectl(
        "apply", "--server-side", "--force-conflicts", "--field-manager=orgpipeline-tests", "-f", str(CRD)
    )
    kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/orgpipelines.orgpipeline.io")
    wait_for(
        lambda: kubectl("get", "orgpipelines", check=False).returncode == 0, timeout=60, what="CR storage"
    )
    time.sleep(15)  # the operator's watch backs off while the storage re-initialises


RAW_VALUES = ["alice@secret.example", "bob@secret.example", "4111-1111", "5500-0000", "1980-02-03"]


def _reader_dsn(kubectl: Kubectl, org: str, stack: Any) -> str:
    def found() -> dict[str, Any] | None:
        done = kubectl("get", "secret", reader_mod.SECRET, "-n", f"org-{org}", "-o", "json", check=False)
        return json.loads(done.stdout) if done.returncode == 0 else None

    secret = wait_for(found, what=f"reader Secret of {org}")
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data["PGUSER"] == store_names.pg_reader_role(org)
    info = psycopg.conninfo.conninfo_to_dict(stack.postgres_dsn)
    return psycopg.conninfo.make_conninfo(
        stack.postgres_dsn, user=data["PGUSER"], password=data["PGPASSWORD"], dbname=info["dbname"]
    )


def _load(manifest: dict[str, Any], tmp: Path) -> None:
    _, spec = parse_manifest(manifest)
    source = tmp / spec.org_id
    source.mkdir()
    (source / "orders_1.csv").write_text(
        "order_id,email,card,amount\nO1,alice@secret.example,4111-1111,10\nO2,bob@secret.example,5500-0000,20\n"
    )
    (source / "customers_1.csv").write_text(
        "email,birthday,country\nalice@secret.example,1980-02-03,NL\nbob@secret.example,,DE\n"
    )
    for table in ("orders", "customers"):
        result = dataplane.run_table(Settings.from_env(), spec, table, None, str(source)).as_json()
        assert result["result"] == "Succeeded", result


def test_reader_role_sees_masked_views_of_its_org_only(
    operator: Operator,
    kubectl: Kubectl,
    api: kube.Kube,
    stack: Any,
    mongo: Any,
    unique_id: str,
    tmp_path: Path,
    cleanup_pipelines: list[str],
) -> None:
    a, b = f"rda{unique_id}", f"rdb{unique_id}"
    manifests = {org: pipeline(org, tables=["orders"]) for org in (a, b)}
    for manifest in manifests.values():
        manifest["spec"]["tables"] = [ORDERS, CUSTOMERS]
        apply_ready(kubectl, api, cleanup_pipelines, manifest)
    dsn_a = _reader_dsn(kubectl, a, stack)
    try:
        for manifest in manifests.values():
            _load(manifest, tmp_path)
        with psycopg.connect(dsn_a, autocommit=True) as conn:
            # The views: current rows, masked; the role's search path is the view schema.
            rows = conn.execute(
                "SELECT email, card, amount::text, is_current FROM orders ORDER BY amount"
            ).fetchall()
            assert [(r[1], r[2], r[3]) for r in rows] == [
                ("[REDACTED]", "10.00", True),
                ("[REDACTED]", "20.00", True),
            ]
            assert all(r[0].startswith("sha256:") for r in rows) and rows[0][0] != rows[1][0]
            customers = conn.execute(
                "SELECT composite_key, email, birthday, country FROM customers"
            ).fetchall()
            assert {r[3] for r in customers} == {"NL", "DE"} and {r[2] for r in customers} == {
                "[REDACTED]",
                None,
            }
            assert all(r[0].startswith("sha256:") for r in customers)  # the key is an email
            # Same value, same pseudonym, across tables: joins still work.
            joined = conn.execute("SELECT count(*) FROM orders o JOIN customers c USING (email)").fetchone()
            assert joined == (2,)

            # Every relation the reader can read, of any schema: only its org's views, and no raw value.
            readable = conn.execute(
                "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f')"
                " AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
                " AND has_table_privilege(c.oid, 'SELECT')"
            ).fetchall()
            assert sorted(readable) == [
                (store_names.pg_view_schema(a), "customers"),
                (store_names.pg_view_schema(a), "orders"),
            ]
            for schema, name in readable:
                dump = conn.execute(
                    f'SELECT string_agg(t::text, \'|\') FROM "{schema}"."{name}" t'
                ).fetchone()
                text = str(dump[0]) if dump else ""
                for value in RAW_VALUES:
                    assert value not in text, f"{value} readable in {schema}.{name}"

            # The raw tables, the bookkeeping (heads hold every value), the masking key: refused.
            for org in (a, b):
                schema = store_names.pg_schema(org)
                for relation in (
                    "raw_orders",
                    "raw_orders_heads",
                    "raw_orders_rejected_rows",
                    "pipeline_mask_key",
                    "raw_customers_change_log",
                ):
                    with pytest.raises(psycopg.errors.InsufficientPrivilege):
                        conn.execute(f'SELECT * FROM "{schema}"."{relation}"')
            # The other org's views: refused.
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f'SELECT * FROM "{store_names.pg_view_schema(b)}".orders')
            # Read-only: by default (its sessions are read-only) and by privilege, when it turns that off.
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                conn.execute("CREATE TEMP TABLE scratch (v text)")
            conn.execute("SET default_transaction_read_only = off")
            for view in ("orders", "customers"):
                granted = conn.execute(
                    "SELECT has_table_privilege(%s, 'INSERT,UPDATE,DELETE,TRUNCATE')", (view,)
                )
                assert granted.fetchone() == (False,)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f'CREATE TABLE "{store_names.pg_view_schema(a)}".x (v text)')
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f'CREATE VIEW "{store_names.pg_view_schema(a)}".x AS SELECT 1')

        # The compliance report shows the role, its views and the classification the operator recorded.
        cli = str(Path(sys.executable).parent / "orgpipeline")
        done = subprocess.run(
            [cli, "compliance", "--org-id", a, "-o", "json"], capture_output=True, text=True
        )
        report = json.loads(done.stdout)
        assert report["reader"]["exists"] and report["reader"]["views"] == ["customers", "orders"]
        assert {(c["table"], c["column"], c["classification"]) for c in report["columns"]} >= {
            ("orders", "email", "pii"),
            ("orders", "card", "sensitive"),
            ("customers", "country", "internal"),
        }

        # The pipeline's own role keeps the raw values.
        owner = kubectl.json("get", "secret", "orgpipeline-credentials", "-n", f"org-{a}")
        password = base64.b64decode(owner["data"]["ORGPIPELINE_POSTGRES_PASSWORD"]).decode()
        dsn_owner = psycopg.conninfo.make_conninfo(dsn_a, user=store_names.pg_role(a), password=password)
        with psycopg.connect(dsn_owner, autocommit=True) as conn:
            emails = conn.execute(
                f'SELECT email FROM "{store_names.pg_schema(a)}".raw_orders ORDER BY 1'
            ).fetchall()
            assert emails == [("alice@secret.example",), ("bob@secret.example",)]

        # A classification change re-makes the views: email public, the reader sees it.
        manifest = manifests[a]
        manifest["spec"]["tables"] = [
            {
                **ORDERS,
                "columns": [
                    {**c, "classification": "public"} if c["name"] == "email" else c
                    for c in ORDERS["columns"]
                ],
            },
            CUSTOMERS,
        ]
        kubectl.apply(manifest)

        def email_visible() -> bool:
            with psycopg.connect(dsn_a, autocommit=True) as conn:
                rows = conn.execute("SELECT email FROM orders ORDER BY 1").fetchall()
            return rows == [("alice@secret.example",), ("bob@secret.example",)]

        wait_for(email_visible, what="the views to follow the new classification")
    finally:
        for org in (a, b):
            for table in ("orders", "customers"):
                mongo[store_names.mongo_database(org)][store_names.mongo_collection(org, table)].drop()


def test_refused_type_change_is_a_condition_and_a_fixed_value_lets_it_through(
    operator: Operator,
    kubectl: Kubectl,
    api: kube.Kube,
    stack: Any,
    pg: Any,
    mongo: Any,
    unique_id: str,
    tmp_path: Path,
    cleanup_pipelines: list[str],
) -> None:
    org = f"rty{unique_id}"
    manifest = pipeline(org, tables=["orders"])
    manifest["spec"]["tables"] = [ORDERS, CUSTOMERS]
    apply_ready(kubectl, api, cleanup_pipelines, manifest)
    try:
        _load(manifest, tmp_path)
        schema = store_names.pg_schema(org)
        pg.execute(f"UPDATE \"{schema}\".raw_orders SET card = 'n/a' WHERE order_id = 'O2'")
        pg.execute(f"UPDATE \"{schema}\".raw_orders SET card = '41' WHERE order_id = 'O1'")
        # card: text -> integer; 'n/a' does not convert.
        manifest["spec"]["tables"] = [
            {
                **ORDERS,
                "columns": [
                    {**c, "type": "integer"} if c["name"] == "card" else c for c in ORDERS["columns"]
                ],
            },
            CUSTOMERS,
        ]
        kubectl.apply(manifest)

        def refused() -> dict[str, Any] | None:
            c = condition(get_pipeline(api, f"org-{org}"), "DatabaseReady")
            return c if c.get("reason") == "ColumnTypeChangeRefused" else None

        found = wait_for(refused, what="the refusal condition")
        assert found["status"] == "False"
        assert "column card cannot change type from text to integer: 1 stored value" in found["message"]
        assert "n/a" not in found["message"]  # a stored value stays in the org's schema
        assert condition(get_pipeline(api, f"org-{org}"), "Ready")["status"] == "False"
        types = pg.execute(
            "SELECT data_type FROM information_schema.columns WHERE table_schema = %s"
            " AND table_name = 'raw_orders' AND column_name = 'card'",
            (schema,),
        ).fetchone()
        assert types == ("text",)
        # The reader's view is still there, as it was.
        assert pg.execute(
            "SELECT 1 FROM pg_views WHERE schemaname = %s AND viewname = 'orders'",
            (store_names.pg_view_schema(org),),
        ).fetchone()

        # The value fixed: the next reconcile applies the change.
        pg.execute(f"UPDATE \"{schema}\".raw_orders SET card = NULL WHERE order_id = 'O2'")
        kubectl("annotate", "orgpipeline", f"org-{org}", f"test/nudge={unique_id}", "--overwrite")
        wait_ready(api, f"org-{org}", timeout=60)
        kind = pg.execute(
            "SELECT data_type FROM information_schema.columns WHERE table_schema = %s"
            " AND table_name = 'orders' AND column_name = 'card'",
            (store_names.pg_view_schema(org),),
        ).fetchone()
        assert kind == ("text",)  # sensitive: the reader sees [REDACTED], whatever the type
        stored = pg.execute(f'SELECT card FROM "{schema}".raw_orders ORDER BY order_id').fetchall()
        assert stored == [(41,), (None,)]
    finally:
        for table in ("orders", "customers"):
            mongo[store_names.mongo_database(org)][store_names.mongo_collection(org, table)].drop()


def test_a_tables_first_run_makes_it_and_the_readers_view_of_it(
    operator: Operator,
    kubectl: Kubectl,
    api: kube.Kube,
    stack: Any,
    pg: Any,
    mongo: Any,
    unique_id: str,
    tmp_path: Path,
    cleanup_pipelines: list[str],
) -> None:
    """A new org gets its roles, its schemas and its classification record from the operator; each
    table, and the reader's view of it, comes with the table's first run (made by whoever runs it,
    they belong to the org's role)."""
    org = f"rfr{unique_id}"
    manifest = pipeline(org, tables=["orders"])
    manifest["spec"]["tables"] = [ORDERS, CUSTOMERS]
    apply_ready(kubectl, api, cleanup_pipelines, manifest)
    schema, views, role = (
        store_names.pg_schema(org),
        store_names.pg_view_schema(org),
        store_names.pg_role(org),
    )

    def relations(namespace: str) -> dict[str, str]:
        rows = pg.execute(
            "SELECT c.relname, pg_get_userbyid(c.relowner) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind IN ('r', 'v')",
            (namespace,),
        ).fetchall()
        return {str(r[0]): str(r[1]) for r in rows}

    assert not [r for r in relations(schema) if r.startswith("raw_")]
    assert relations(views) == {}
    classes = pg.execute(
        f'SELECT table_name, column_name, classification FROM "{schema}".pipeline_classification'
    ).fetchall()
    assert ("orders", "email", "pii") in classes and ("customers", "birthday", "sensitive") in classes
    dsn = _reader_dsn(kubectl, org, stack)
    try:
        _, spec = parse_manifest(manifest)
        source = tmp_path / org
        source.mkdir()
        (source / "orders_1.csv").write_text(
            "order_id,email,card,amount\nO1,alice@secret.example,4111-1111,10\n"
        )
        done = dataplane.run_table(Settings.from_env(), spec, "orders", None, str(source)).as_json()
        assert done["result"] == "Succeeded", done
        assert relations(views) == {"orders": role}  # customers: no run, no table, no view
        made = relations(schema)
        assert made["raw_orders"] == role and "raw_customers" not in made
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert conn.execute("SELECT card, amount::text FROM orders").fetchall() == [
                ("[REDACTED]", "10.00")
            ]

        # A type change a run applies (the operator has not yet): the view that the change drops
        # comes back with the run.
        retyped = json.loads(json.dumps(manifest))
        retyped["spec"]["tables"][0]["columns"][3]["type"] = "decimal(12,2)"
        _, spec = parse_manifest(retyped)
        dataplane.run_table(Settings.from_env(), spec, "orders", None, str(source))
        kind = pg.execute(
            "SELECT numeric_precision FROM information_schema.columns WHERE table_schema = %s"
            " AND table_name = 'raw_orders' AND column_name = 'amount'",
            (schema,),
        ).fetchone()
        assert kind == (12,)
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert conn.execute("SELECT card, amount::text FROM orders").fetchall() == [
                ("[REDACTED]", "10.00")
            ]
    finally:
        mongo[store_names.mongo_database(org)][store_names.mongo_collection(org, "orders")].drop()
