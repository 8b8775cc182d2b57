"""Fixtures of the data-plane integration tests: a fresh org per test, with its bucket and manifest.

`org` gives a manifest (orders: incremental, customers: snapshot) for a unique org id and bucket,
helpers to upload files, run the commands in-process or through the real `orgpipeline` script, and
read back the state of MongoDB and PostgreSQL; it drops the org's schema and collections after.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from orgpipeline_api import store_names
from orgpipeline_api.v1alpha1 import OrgPipelineSpec, load_manifest
from orgpipeline_jobs import pipeline
from orgpipeline_jobs.settings import Settings

CASES = Path(__file__).parent / "cases"
CLI = str(Path(sys.executable).parent / "orgpipeline")

ORDERS_HEADER = "order_id,customer_id,product_id,order_date,amount,status,email,note"


def manifest(org_id: str, bucket: str, **table_overrides: Any) -> dict[str, Any]:
    doc = yaml.safe_load((Path(__file__).parents[3] / "examples" / "org-123.yaml").read_text())
    doc["metadata"]["name"] = f"org-{org_id}"
    doc["spec"]["orgId"] = org_id
    doc["spec"]["source"] = {"bucket": bucket, "prefix": f"org-{org_id}/"}
    for table in doc["spec"]["tables"]:
        table.update(table_overrides.get(table["name"], {}))
    return dict(doc)


@dataclass
class Org:
    org_id: str
    bucket: str
    path: Path
    s3: Any
    mongo: Any
    pg: Any

    @property
    def spec(self) -> OrgPipelineSpec:
        return load_manifest(self.path)[1]

    def settings(self, **env: str) -> Settings:
        return Settings.from_env({**os.environ, **env})

    def rewrite(self, **table_overrides: Any) -> None:
        self.path.write_text(yaml.safe_dump(manifest(self.org_id, self.bucket, **table_overrides)))

    def upload(self, name: str, data: bytes | str) -> str:
        raw = data.encode() if isinstance(data, str) else data
        key = f"org-{self.org_id}/{name}"
        self.s3.put_object(self.bucket, key, io.BytesIO(raw), len(raw))
        return f"s3://{self.bucket}/{key}"

    def run(self, table: str = "orders", **env: str) -> dict[str, Any]:
        return pipeline.run_table(self.settings(**env), self.spec, table).as_json()

    def cli(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        full_env = {**os.environ, **(env or {})}
        return subprocess.run([CLI, *args], capture_output=True, text=True, env=full_env, timeout=timeout)

    def cli_json(self, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        done = self.cli(*args, "-f", str(self.path), "-o", "json", env=env)
        return done.returncode, json.loads(done.stdout) if done.stdout.strip() else {}

    @property
    def schema(self) -> str:
        return store_names.pg_schema(self.org_id)

    def collection(self, table: str = "orders") -> Any:
        return self.mongo[store_names.mongo_database(self.org_id)][
            store_names.mongo_collection(self.org_id, table)
        ]

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        return list(self.pg.execute(query.replace("{schema}", f'"{self.schema}"'), params).fetchall())

    def state(self, table: str = "orders") -> dict[str, Any]:
        """Everything a run leaves, minus timestamps and run ids, with the org id taken out of keys."""
        prefix = f"org_{self.org_id}_"
        columns = [c.name for c in self.spec.table(table).columns]  # type: ignore[union-attr]

        def key(ck: str) -> str:
            return ck.removeprefix(prefix)

        docs = [
            (
                key(d["composite_key"]),
                d["version"],
                d["data_hash"],
                d["change_type"],
                tuple(d["changed_fields"]),
                d["previous_version"],
                d["postgres_status"],
                d["is_active"],
                tuple(str(d.get(c)) for c in columns),
                d["audit_trail"]["source_file"]["line"],
            )
            for d in self.collection(table).find({})
        ]
        raw = [
            (key(r[0]), *r[1:])
            for r in self.sql(
                "SELECT composite_key, version, data_hash, change_type, changed_fields::text, is_active "
                f"FROM {{schema}}.raw_{table}"
            )
        ]
        log = [
            (key(r[0]), *r[1:])
            for r in self.sql(
                "SELECT composite_key, old_version, new_version, change_type "
                f"FROM {{schema}}.raw_{table}_change_log"
            )
        ]
        heads = [
            (key(r[0]), *r[1:])
            for r in self.sql(
                f"SELECT composite_key, version, data_hash, change_type FROM {{schema}}.raw_{table}_heads"
            )
        ]
        rejected = self.sql(f"SELECT line, issue_type, reason FROM {{schema}}.raw_{table}_rejected_rows")
        outbox = self.sql(f"SELECT count(*) FROM {{schema}}.raw_{table}_outbox")[0][0]
        parts = {"docs": docs, "raw": raw, "log": log, "heads": heads, "rejected": rejected}
        return {**{k: sorted(v, key=repr) for k, v in parts.items()}, "outbox": outbox}


def make_org(stack: Any, s3: Any, mongo: Any, pg: Any, unique_id: str, tmp_path: Path) -> Org:
    bucket = f"dp-{unique_id}"
    if not s3.bucket_exists(bucket):
        s3.make_bucket(bucket)
    path = tmp_path / f"org-{unique_id}.yaml"
    org = Org(f"t{unique_id}", bucket, path, s3, mongo, pg)
    org.rewrite()
    return org


def drop_org(org: Org) -> None:
    org.pg.execute(f'DROP SCHEMA IF EXISTS "{org.schema}" CASCADE')
    for table in ("orders", "customers"):
        org.collection(table).drop()


@pytest.fixture()
def org(stack: Any, s3: Any, mongo: Any, pg: Any, unique_id: str, tmp_path: Path) -> Iterator[Org]:
    made = make_org(stack, s3, mongo, pg, unique_id, tmp_path)
    yield made
    drop_org(made)


@pytest.fixture()
def twin(stack: Any, s3: Any, mongo: Any, pg: Any, tmp_path: Path) -> Iterator[Org]:
    """A second org, for comparing an interrupted run with an uninterrupted one."""
    import uuid

    made = make_org(stack, s3, mongo, pg, uuid.uuid4().hex[:8], tmp_path)
    yield made
    drop_org(made)


def orders_csv(rows: list[tuple[Any, ...]], header: str = ORDERS_HEADER) -> str:
    return header + "\n" + "".join(",".join(str(v) for v in row) + "\n" for row in rows)


def order(i: int, amount: str = "10.00", status: str = "pending", note: str = "n") -> tuple[Any, ...]:
    return (f"O{i}", f"C{i % 7}", f"P{i % 5}", "2024-01-15", amount, status, f"u{i}@example.com", note)
