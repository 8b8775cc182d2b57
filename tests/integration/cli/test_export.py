"""`orgpipeline export` and `compliance` against the real servers, on data the pipeline produced.

The org's orders table is a snapshot table: a first file inserts O1..O3 (O4 is rejected), a second
file changes O1, drops O2 (a DELETE version) and adds O5. The tests export it as of a moment between
the two runs and as of now, with and without history, in every format, to a file and to S3, masked
and not, and check what a data engineer and a compliance officer rely on.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from orgpipeline_api import store_names
from orgpipeline_api.orgschema import privacy
from orgpipeline_api.v1alpha1 import load_manifest
from orgpipeline_jobs import export as exporting
from orgpipeline_jobs import pipeline
from orgpipeline_jobs.settings import Settings

REPO = Path(__file__).resolve().parents[3]
CLI = str(Path(sys.executable).parent / "orgpipeline")
HEADER = "order_id,customer_id,product_id,order_date,amount,status,email,note\n"
FILE_1 = HEADER + (
    "O1,C1,P1,2024-01-15,10.00,pending,a@x.com,secret one\n"
    "O2,C2,P2,2024-01-15,20.50,shipped,b@x.com,secret two\n"
    "O3,C3,P3,2024-01-16,30,pending,c@x.com,\n"
    "O4,,P4,2024-01-16,7,pending,d@x.com,n\n"  # missing customer_id: rejected
)
FILE_2 = HEADER + (
    "O1,C1,P1,2024-01-15,11.00,shipped,a@x.com,secret one changed\n"
    "O3,C3,P3,2024-01-16,30,pending,c@x.com,\n"
    "O5,C5,P5,2024-01-17,99.99,delivered,e@x.com,secret five\n"
)


@dataclass
class Org:
    org_id: str
    manifest: Path
    tmp: Path
    pg: psycopg.Connection[Any]
    between: datetime  # after the first run, before the second
    after: datetime

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([CLI, *args], capture_output=True, text=True, env=dict(os.environ), timeout=120)

    def export(self, *args: str, fmt: str = "csv", name: str | None = None) -> Path:
        out = self.tmp / (name or f"out-{time.monotonic_ns()}.{fmt}")
        done = self.cli(
            "export",
            "--org-id",
            self.org_id,
            "--table",
            "orders",
            "--format",
            fmt,
            "--output",
            str(out),
            *args,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("exported ") and done.stderr == ""
        return out

    def rows(self, *args: str) -> list[dict[str, str]]:
        return list(csv.DictReader(self.export(*args).open(newline="")))


@pytest.fixture(scope="module")
def org(stack: Any, mongo: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Org]:
    tmp = tmp_path_factory.mktemp("export")
    org_id = f"exp{os.urandom(4).hex()}"
    doc = yaml.safe_load((REPO / "examples" / "org-123.yaml").read_text())
    doc["metadata"]["name"] = f"org-{org_id}"
    doc["spec"]["orgId"] = org_id
    doc["spec"]["source"]["prefix"] = f"org-{org_id}/"
    orders = doc["spec"]["tables"][0]
    orders["mode"] = "snapshot"
    for column in orders["columns"]:
        if column["name"] == "email":
            column["classification"] = "pii"
        if column["name"] == "note":
            column["classification"] = "sensitive"
        if column["name"] == "product_id":
            column["classification"] = "public"
    manifest = tmp / "org.yaml"
    manifest.write_text(yaml.safe_dump(doc))
    _, spec = load_manifest(manifest)
    source = tmp / "source"
    source.mkdir()
    conn = psycopg.connect(stack.postgres_dsn, autocommit=True)
    try:
        (source / "orders_1.csv").write_text(FILE_1)
        assert (
            pipeline.run_table(Settings.from_env(), spec, "orders", None, str(source)).result == "Succeeded"
        )
        time.sleep(0.05)
        between = datetime.now(UTC)
        time.sleep(0.05)
        (source / "orders_1.csv").unlink()
        (source / "orders_2.csv").write_text(FILE_2)
        assert (
            pipeline.run_table(Settings.from_env(), spec, "orders", None, str(source)).result == "Succeeded"
        )
        after = datetime.now(UTC)
        yield Org(org_id, manifest, tmp, conn, between, after)
    finally:
        conn.execute(f'DROP SCHEMA IF EXISTS "{store_names.pg_schema(org_id)}" CASCADE')
        conn.execute(f'DROP SCHEMA IF EXISTS "orgaudit_{org_id}" CASCADE')
        conn.close()
        mongo[store_names.mongo_database(org_id)][store_names.mongo_collection(org_id, "orders")].drop()  # type: ignore[index]


def _by_key(rows: list[dict[str, str]]) -> dict[str, dict[str, str]]:
    return {r["order_id"]: r for r in rows}


def test_as_of_between_runs_is_the_state_after_the_first_file(org: Org) -> None:
    rows = _by_key(org.rows("--as-of", org.between.isoformat()))
    assert sorted(rows) == ["O1", "O2", "O3"]
    assert rows["O1"]["amount"] == "10.00" and rows["O1"]["version"] == "1"
    assert rows["O1"]["change_type"] == "INSERT" and rows["O1"]["email"] == "a@x.com"
    # As the pipeline knew it then: the later version of O1 was not known, so no valid_to.
    assert {r["valid_to"] for r in rows.values()} == {""}
    assert all(datetime.fromisoformat(r["valid_from"]) <= org.between for r in rows.values())
    assert rows["O1"]["composite_key"] == f"org_{org.org_id}_orders_O1_C1_2024-01-15"
    assert rows["O1"]["source_file"].endswith("orders_1.csv")
    header = next(csv.reader(org.export("--as-of", org.between.isoformat()).open()))
    assert header[:6] == ["composite_key", "version", "change_type", "valid_from", "valid_to", "source_file"]
    assert header[6:] == [
        "order_id",
        "customer_id",
        "product_id",
        "order_date",
        "amount",
        "status",
        "email",
        "note",
    ]


def test_now_excludes_deleted_keys_and_gives_the_latest_versions(org: Org) -> None:
    rows = _by_key(org.rows())
    assert sorted(rows) == ["O1", "O3", "O5"]  # O2 was deleted by the snapshot
    assert (rows["O1"]["version"], rows["O1"]["change_type"], rows["O1"]["amount"]) == (
        "2",
        "UPDATE",
        "11.00",
    )
    assert rows["O1"]["source_file"].endswith("orders_2.csv") and rows["O1"]["valid_to"] == ""
    # Before the first run there was nothing.
    assert org.rows("--as-of", "2000-01-01") == []


def test_with_history_gives_every_version_with_its_validity(org: Org) -> None:
    rows = org.rows("--with-history")
    versions = [(r["order_id"], r["version"], r["change_type"]) for r in rows]
    assert (
        versions
        == [
            ("O1", "1", "INSERT"),
            ("O1", "2", "UPDATE"),
            ("O2", "1", "INSERT"),
            ("", "2", "DELETE"),  # a DELETE version carries no data
            ("O3", "1", "INSERT"),
            ("O5", "1", "INSERT"),
        ]
        or versions[3][1:] == ("2", "DELETE")
    )
    o1v1, o1v2 = rows[0], rows[1]
    assert o1v1["valid_to"] == o1v2["valid_from"] != ""
    assert rows[3]["composite_key"] == rows[2]["composite_key"] and rows[3]["valid_to"] == ""
    early = org.rows("--with-history", "--as-of", org.between.isoformat())
    assert [(r["order_id"], r["version"]) for r in early] == [("O1", "1"), ("O2", "1"), ("O3", "1")]
    assert {r["valid_to"] for r in early} == {""}


def test_parquet_keeps_the_column_types_and_jsonl_the_values(org: Org) -> None:
    table = pq.read_table(org.export(fmt="parquet"))
    schema = table.schema
    assert schema.field("amount").type == pa.decimal128(10, 2)
    assert schema.field("order_date").type == pa.date32()
    assert schema.field("version").type == pa.int32()
    assert schema.field("valid_from").type == pa.timestamp("us", tz="UTC")
    assert schema.field("email").type == pa.string()
    data = {r["order_id"]: r for r in table.to_pylist()}
    assert data["O5"]["amount"] == Decimal("99.99") and data["O5"]["order_date"].isoformat() == "2024-01-17"
    lines = [json.loads(x) for x in org.export(fmt="jsonl").read_text().splitlines()]
    assert {x["order_id"]: x["amount"] for x in lines} == {"O1": "11.00", "O3": "30.00", "O5": "99.99"}
    assert all(x["valid_to"] is None for x in lines)


def test_export_streams_in_batches(org: Org, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows go from a server-side cursor to the file batch by batch: with a batch of 2 rows the
    Parquet file of 6 versions has 3 row groups."""
    monkeypatch.setattr(exporting, "BATCH_ROWS", 2)
    out = org.tmp / "batched.parquet"
    request = exporting.Request(
        org.org_id, "orders", str(out), exporting.Format.parquet, with_history=True, requested_by="t"
    )
    result = exporting.run(org.pg, Settings.from_env(), request)
    assert result.rows == 6 and pq.ParquetFile(out).num_row_groups == 3


def test_mask_pseudonymises_pii_and_redacts_sensitive(org: Org) -> None:
    """--mask takes the classification the operator recorded, never one the exporter brings."""
    _, spec = load_manifest(org.manifest)
    privacy.record(org.pg, spec)  # what the operator records from the manifest
    plain = _by_key(org.rows())
    masked = _by_key(org.rows("--mask"))
    assert masked.keys() == plain.keys()
    for key, row in masked.items():
        assert row["email"].startswith("sha256:") and row["email"] != plain[key]["email"]
        assert plain[key]["email"] not in json.dumps(row)
        assert row["note"] == ("[REDACTED]" if plain[key]["note"] else "")
        assert row["product_id"] == plain[key]["product_id"] and row["amount"] == plain[key]["amount"]
    # Equal values give equal pseudonyms (joins and counts still work), different ones differ.
    assert len({r["email"] for r in masked.values()}) == 3
    again = _by_key(org.rows("--mask"))
    assert again["O1"]["email"] == masked["O1"]["email"]
    # A manifest of the exporter's own (where email would be public) is refused, not taken.
    doc = yaml.safe_load(org.manifest.read_text())
    for column in doc["spec"]["tables"][0]["columns"]:
        column["classification"] = "public"
    own = org.tmp / "own.yaml"
    own.write_text(yaml.safe_dump(doc))
    out = org.tmp / "with-own-manifest.csv"
    args = ("--table", "orders", "--mask", "-f", str(own), "--output", str(out))
    done = org.cli("export", "--org-id", org.org_id, *args)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "takes no -f" in done.stderr
    assert not out.exists()


def test_export_to_s3(org: Org, s3: Any, unique_id: str) -> None:
    bucket = f"exports-{unique_id}"
    s3.make_bucket(bucket)
    try:
        done = org.cli(
            "export", "--org-id", org.org_id, "--table", "orders", "--output", f"s3://{bucket}/a/orders.csv"
        )
        assert done.returncode == 0, done.stderr
        body = s3.get_object(bucket, "a/orders.csv").read().decode()
        assert sorted(r["order_id"] for r in csv.DictReader(io.StringIO(body))) == ["O1", "O3", "O5"]
        missing = org.cli(
            "export", "--org-id", org.org_id, "--table", "orders", "--output", f"s3://no-{unique_id}/x.csv"
        )
        assert missing.returncode == 2
        assert missing.stderr == (
            f"orgpipeline: error: cannot write s3://no-{unique_id}/x.csv:"
            f" bucket no-{unique_id} does not exist\n"
        )
    finally:
        for obj in s3.list_objects(bucket, recursive=True):
            s3.remove_object(bucket, obj.object_name)
        s3.remove_bucket(bucket)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--as-of", "yesterday"], "--as-of 'yesterday' is not an ISO-8601 time"),
        (["--as-of", "2999-01-01T00:00:00Z"], "is in the future"),
        (["--table", "nope"], "unknown table 'nope'"),
        (["--output", "/nonexistent-dir/x.csv"], "cannot write /nonexistent-dir/x.csv: directory"),
        (["--output", "/"], "cannot write /: it is a directory"),
        (["--output", "s3://b/"], "expected s3://<bucket>/<key>"),
        (["--org-id", "nosuchorg"], "unknown org 'nosuchorg'"),
        (["--format", "xml"], "Invalid value for '--format'"),
    ],
)
def test_bad_requests_are_one_line_and_exit_2(org: Org, args: list[str], message: str) -> None:
    base = {"--org-id": org.org_id, "--table": "orders", "--output": str(org.tmp / "bad.csv")}
    flags = dict(zip(args[::2], args[1::2], strict=True))
    merged = [x for k, v in {**base, **flags}.items() for x in (k, v)]
    done = org.cli("export", *merged)
    assert done.returncode == 2 and message in done.stderr
    assert "Traceback" not in done.stderr and not (org.tmp / "bad.csv").exists()
    if "--format" not in flags:
        assert done.stderr.count("\n") == 1 and done.stderr.startswith("orgpipeline: error: ")


def test_every_export_is_recorded_and_compliance_reports_it(org: Org) -> None:
    _, spec = load_manifest(org.manifest)
    privacy.record(org.pg, spec)  # what the operator records from the manifest
    out = org.export("--as-of", org.between.isoformat(), "--user", "alice@example.com", name="audited.csv")
    doc = json.loads(org.cli("compliance", "--org-id", org.org_id, "-o", "json").stdout)
    (entry,) = [e for e in doc["exports"] if e["target"] == str(out)]
    # Who: the user the cluster authenticates for the kubeconfig (as run-now); --user is a note.
    assert entry["requested_by"] == "orgpipeline-admin" and entry["user_note"] == "alice@example.com"
    assert entry["status"] == "succeeded" and entry["append_only"] is True
    assert entry["db_role"] and entry["os_user"] and entry["table"] == "orders"
    assert datetime.fromisoformat(entry["as_of"]) == org.between
    assert entry["rows"] == 3 and entry["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert entry["masked"] is False and entry["unmasked_protected_columns"] == ["email", "note"]
    assert abs(datetime.fromisoformat(entry["started_at"]) - datetime.now(UTC)) < timedelta(minutes=5)
    # An export without --as-of records the moment it was taken, so it can be repeated exactly.
    org.export(name="now.csv")
    (now_entry,) = [
        e
        for e in json.loads(org.cli("compliance", "--org-id", org.org_id, "-o", "json").stdout)["exports"]
        if e["target"].endswith("now.csv")
    ]
    again = org.export("--as-of", now_entry["as_of"], name="again.csv")
    assert again.read_bytes() == (org.tmp / "now.csv").read_bytes()
    # A failed export is recorded as failed.
    failed = org.cli(
        "export", "--org-id", org.org_id, "--table", "orders", "--output", "/nonexistent-dir/x.csv"
    )
    assert failed.returncode == 2
    text = org.cli("compliance", "--org-id", org.org_id)
    assert text.returncode == 0 and "orgpipeline-admin" in text.stdout and "pii" in text.stdout
    classified = {(c["column"], c["classification"]) for c in doc["columns"] if c["table"] == "orders"}
    assert ("email", "pii") in classified and ("note", "sensitive") in classified


def _load_org(stack: Any, tmp: Path, org_id: str, text: str) -> Path:
    """An org of the example's shape with one run of `orders` on `text` (with the environment's
    PostgreSQL login); returns its manifest."""
    doc = yaml.safe_load((REPO / "examples" / "org-123.yaml").read_text())
    doc["metadata"]["name"] = f"org-{org_id}"
    doc["spec"]["orgId"] = org_id
    doc["spec"]["source"]["prefix"] = f"org-{org_id}/"
    manifest = tmp / f"{org_id}.yaml"
    manifest.write_text(yaml.safe_dump(doc))
    _, spec = load_manifest(manifest)
    source = tmp / f"source-{org_id}"
    source.mkdir()
    (source / "orders_1.csv").write_text(text)
    assert pipeline.run_table(Settings.from_env(), spec, "orders", None, str(source)).result == "Succeeded"
    return manifest


def test_an_export_is_private_to_its_owner_and_replaces_the_target_whole(org: Org) -> None:
    """The file holds the org's data: 0600 whatever the umask, also over an existing file (renamed
    over it when complete, so no reader ever sees half of it)."""
    target = org.tmp / "private.csv"
    target.write_text("old content\n")
    target.chmod(0o644)
    umask = os.umask(0o002)
    try:
        org.export(name="private.csv")
        jsonl = org.export(fmt="jsonl", name="private.jsonl")
    finally:
        os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o600 and jsonl.stat().st_mode & 0o777 == 0o600
    assert target.read_text().startswith("composite_key,") and "old content" not in target.read_text()
    assert not [p for p in org.tmp.iterdir() if p.name.startswith(".orgpipeline-export-")]


def test_csv_cells_that_start_like_a_formula_are_neutralised(
    stack: Any, mongo: Any, pg: Any, tmp_path: Path, unique_id: str
) -> None:
    """A cell a spreadsheet would run (=, +, -, @, tab, CR) is written with a leading ' by default;
    numbers keep their sign; --raw-formulas writes the cells as they are (and is recorded)."""
    org_id = f"fml{unique_id}"
    text = HEADER + (
        'O1,C1,P1,2024-01-15,10,pending,a@x.com,"=HYPERLINK(""http://evil.example"",""x"")"\n'
        "O2,C2,P2,2024-01-15,20,pending,b@x.com,@SUM(A1:A9)\n"
        "O3,C3,P3,2024-01-15,-5,pending,c@x.com,+1+1\n"
        'O4,C4,P4,2024-01-15,7,pending,d@x.com,"-2+3"\n'
        "O5,C5,P5,2024-01-15,8,pending,e@x.com,plain - text\n"
        "O6,C6,P6,2024-01-15,8,pending,f@x.com,-12.5\n"
    )
    _load_org(stack, tmp_path, org_id, text)
    try:
        out = tmp_path / "safe.csv"
        base = ("export", "--org-id", org_id, "--table", "orders")
        done = subprocess.run([CLI, *base, "--output", str(out)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        notes = {r["order_id"]: r for r in csv.DictReader(out.open(newline=""))}
        assert notes["O1"]["note"] == '\'=HYPERLINK("http://evil.example","x")'
        assert notes["O2"]["note"] == "'@SUM(A1:A9)" and notes["O3"]["note"] == "'+1+1"
        assert notes["O4"]["note"] == "'-2+3" and notes["O5"]["note"] == "plain - text"
        assert notes["O3"]["amount"] == "-5.00" and notes["O6"]["note"] == "-12.5"  # numbers run nothing
        raw = tmp_path / "raw.csv"
        done = subprocess.run(
            [CLI, *base, "--output", str(raw), "--raw-formulas"], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        as_is = {r["order_id"]: r for r in csv.DictReader(raw.open(newline=""))}
        assert as_is["O2"]["note"] == "@SUM(A1:A9)" and as_is["O4"]["note"] == "-2+3"
        doc = json.loads(
            subprocess.run(
                [CLI, "compliance", "--org-id", org_id, "-o", "json"], capture_output=True, text=True
            ).stdout
        )
        assert {e["target"]: e["formulas_raw"] for e in doc["exports"]} == {str(out): False, str(raw): True}
    finally:
        pg.execute(f'DROP SCHEMA IF EXISTS "{store_names.pg_schema(org_id)}" CASCADE')
        pg.execute(f'DROP SCHEMA IF EXISTS "orgaudit_{org_id}" CASCADE')
        mongo[store_names.mongo_database(org_id)][store_names.mongo_collection(org_id, "orders")].drop()


def test_the_export_audit_is_append_only_for_the_org(
    stack: Any, mongo: Any, tmp_path: Path, unique_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With its own login, the org records its exports and reads them, and can neither delete,
    change, truncate nor drop them, nor write a row that says another role, state or org."""
    from orgpipeline_operator import database

    org_id = f"aud{unique_id}"
    db = database.Databases(stack.operator_postgres_dsn, stack.operator_mongo_uri, "orgpipeline")
    password = database.generate_password()
    try:
        db.provision(org_id, password)  # the operator's own role makes the org and its audit
        own = psycopg.conninfo.make_conninfo(
            stack.postgres_dsn, user=store_names.pg_role(org_id), password=password
        )
        monkeypatch.setenv("ORGPIPELINE_POSTGRES_DSN", own)
        _load_org(stack, tmp_path, org_id, FILE_1)
        out = tmp_path / "mine.csv"
        done = subprocess.run(
            [CLI, "export", "--org-id", org_id, "--table", "orders", "--output", str(out)],
            capture_output=True,
            text=True,
            env=dict(os.environ),
        )
        assert done.returncode == 0, done.stderr
        audit = f'"orgaudit_{org_id}".pipeline_exports'
        with psycopg.connect(own, autocommit=True) as conn:
            before = conn.execute(f"SELECT * FROM {audit}").fetchall()
            assert len(before) == 1 and before[0][-1] is None  # error: none
            export_id = str(before[0][0])
            for statement in (
                f"DELETE FROM {audit}",
                f"UPDATE {audit} SET target = 'elsewhere'",
                f"TRUNCATE {audit}",
                f"DROP TABLE {audit}",
                f'DROP SCHEMA "orgaudit_{org_id}" CASCADE',
                f"ALTER TABLE {audit} DISABLE ROW LEVEL SECURITY",
                f"INSERT INTO {audit} (export_id, table_name, as_of, with_history, format, masked,"
                " columns, target, db_role) VALUES ('x', 'orders', now(), false, 'csv', false, '[]', 't',"
                " 'someone else')",
                f"INSERT INTO {audit} (export_id, table_name, as_of, with_history, format, masked,"
                " columns, target, status) VALUES ('y', 'orders', now(), false, 'csv', true, '[]', 't',"
                " 'succeeded')",
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(statement)
            # A finished row stays as it was finished.
            assert conn.execute(
                f'SELECT "orgaudit_{org_id}".finish_export(%s, true, 0, 0, NULL, %s)', (export_id, "forged")
            ).fetchone() == (None,)
            assert conn.execute(f"SELECT * FROM {audit}").fetchall() == before
            row = conn.execute(f"SELECT db_role, status, org_id FROM {audit}").fetchone()
            assert row == (store_names.pg_role(org_id), "succeeded", org_id)
    finally:
        mongo[store_names.mongo_database(org_id)][store_names.mongo_collection(org_id, "orders")].drop()
        db.drop_postgres(org_id)
        db.close()
