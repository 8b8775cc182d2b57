#!/usr/bin/env python3
"""The landing store's readers at scale (issue 25): `audit --composite-key` and `validate` on a
collection of --rows versions, with the operator's indexes and without them.

    eval "$(hack/stack env)"; .venv/bin/python bench/landing_readers.py [--rows 1000000] [--keep]
    .venv/bin/python bench/landing_readers.py --org cost1a2b3c     # again, on a kept org

Provisions an org as the operator does (bench/runcost.py's `Org`: its role, database, collections
and their indexes), lands --rows orders with one real `orgpipeline run` (its process wall and peak
RSS are printed too), then times, each as the command line a person runs (process wall, median):

  - `orgpipeline audit --org-id O --table orders --composite-key K -o json` for --keys random keys,
    and the MongoDB query it makes alone (`queries.version_history`, in this process);
  - `orgpipeline validate --org-id O --table orders -o json`, once;

first with the indexes, then with them dropped (ANALYZEd both times), and then the time the
operator's next provisioning takes to build them again on the full collection (CREATE INDEX
CONCURRENTLY). Prints which index PostgreSQL's plan used (FerretDB's explain). A script, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import run_process
from dataplane import generate, stack_env
from runcost import CLI, Org


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(process wall s, the child's peak RSS MB, stdout) of one command line."""
    done = run_process(argv, env)
    return done.wall, done.rss_mb, done.stdout


def ferret(env: dict[str, str]) -> Any:
    import psycopg

    dsn = psycopg.conninfo.make_conninfo(env["ORGPIPELINE_POSTGRES_DSN"], dbname="ferretdb")
    return psycopg.connect(dsn, autocommit=True)


def collection_table(env: dict[str, str], org_id: str) -> tuple[str, str]:
    from orgpipeline_api import store_names
    from orgpipeline_operator.database import FERRETDB_METADATA
    from psycopg import sql

    schema = store_names.mongo_database(org_id)
    with ferret(env) as conn:
        row = conn.execute(
            sql.SQL("SELECT _jsonb ->> 'table' FROM {} WHERE _jsonb ->> '_id' = %s").format(
                sql.Identifier(schema, FERRETDB_METADATA)
            ),
            (store_names.mongo_collection(org_id, "orders"),),
        ).fetchone()
    assert row is not None
    return schema, str(row[0])


def analyze(env: dict[str, str], org_id: str) -> None:
    from psycopg import sql

    schema, table = collection_table(env, org_id)
    with ferret(env) as conn:
        conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(schema, table)))


def drop_indexes(env: dict[str, str], org_id: str) -> None:
    from orgpipeline_api import stores
    from psycopg import sql

    schema, table = collection_table(env, org_id)
    with ferret(env) as conn:
        for index in stores.LANDING_INDEXES:
            name = stores.ferretdb_index_name(table, index)
            conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(schema, name)))


def sample_keys(env: dict[str, str], org_id: str, n: int) -> list[str]:
    import psycopg
    from orgpipeline_api import store_names
    from psycopg import sql

    with psycopg.connect(env["ORGPIPELINE_POSTGRES_DSN"]) as conn:
        rows = conn.execute(
            sql.SQL("SELECT composite_key FROM {} TABLESAMPLE SYSTEM (1) LIMIT %s").format(
                sql.Identifier(store_names.pg_schema(org_id), store_names.pg_table("orders"))
            ),
            (n,),
        ).fetchall()
    return [str(r[0]) for r in rows]


def readers(
    env: dict[str, str], org_id: str, keys: list[str], label: str, validate: bool = True
) -> dict[str, Any]:
    import pymongo
    from orgpipeline_api import store_names
    from orgpipeline_cli.manage import queries

    analyze(env, org_id)
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(env["ORGPIPELINE_MONGO_URI"])
    coll = client[store_names.mongo_database(org_id)][store_names.mongo_collection(org_id, "orders")]
    plan = coll.find({"composite_key": keys[0]}).explain().get("queryPlanner", {})
    used = sorted(set(_index_names(plan))) or ["none (sequential scan)"]
    queries.version_history(coll, keys[0])  # connection made, catalogue read
    query_seconds = []
    for key in keys:
        started = time.monotonic()
        found = queries.version_history(coll, key)
        query_seconds.append(time.monotonic() - started)
        assert found, key
    client.close()
    walls = []
    for key in keys[:5]:
        argv = [CLI, "audit", "--org-id", org_id, "--table", "orders", "--composite-key", key, "-o", "json"]
        walls.append(timed(argv, env)[0])
    figures = {
        "audit_query_ms": round(statistics.median(query_seconds) * 1000, 2),
        "audit_query_ms_max": round(max(query_seconds) * 1000, 2),
        "audit_wall_s": round(statistics.median(walls), 3),
        "plan_indexes": used,
    }
    print(
        f"{label}: audit query median {figures['audit_query_ms']:.1f} ms,"
        f" max {figures['audit_query_ms_max']:.1f}"
        f" (of {len(keys)}; plan: {', '.join(used)}), `orgpipeline audit --composite-key` process wall"
        f" median {statistics.median(walls):.2f} s",
        flush=True,
    )
    if validate:
        validate_argv = [CLI, "validate", "--org-id", org_id, "--table", "orders", "-o", "json"]
        validate_wall, validate_rss, out = timed(validate_argv, env)
        checked = json.loads(out)["tables"][0]
        print(
            f"{label}: `orgpipeline validate` {validate_wall:.1f} s ({checked['mongo_versions']:,} versions,"
            f" peak RSS {validate_rss:.0f} MB)",
            flush=True,
        )
        figures.update(validate_wall_s=round(validate_wall, 2), validate_versions=checked["mongo_versions"])
    return figures


def _index_names(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [str(node["Index Name"])] if "Index Name" in node else []
        return own + [n for v in node.values() for n in _index_names(v)]
    if isinstance(node, list):
        return [n for v in node for n in _index_names(v)]
    return []


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=20, help="random keys the audit is timed with")
    parser.add_argument("--org", help="an org a previous --keep run left (skips the load)")
    parser.add_argument("--keep", action="store_true", help="keep the org (its id is printed)")
    parser.add_argument("--no-validate", action="store_true", help="time the audit only")
    args = parser.parse_args()

    env = stack_env()
    os.environ.update({k: v for k, v in env.items() if k.startswith("ORGPIPELINE_")})
    tag = uuid.uuid4().hex[:6]
    work = Path(tempfile.mkdtemp(prefix="orgpipeline-readers-"))
    from minio import Minio

    url = env["ORGPIPELINE_S3_ENDPOINT"].split("://", 1)
    s3 = Minio(
        url[1],
        access_key=env["ORGPIPELINE_S3_ACCESS_KEY"],
        secret_key=env["ORGPIPELINE_S3_SECRET_KEY"],
        secure=url[0] == "https",
    )
    bucket = f"readers-{args.org or tag}"
    org_id = args.org or f"cost{tag}"
    if not s3.bucket_exists(bucket):
        s3.make_bucket(bucket)
    org = Org(env, org_id, bucket, work)  # idempotent: a kept org is provisioned again
    figures: dict[str, Any] = {"rows": args.rows, "org": org_id}
    try:
        if not args.org:
            csv_path = work / "orders.csv"
            generate(csv_path, args.rows)
            s3.fput_object(bucket, f"org-{org_id}/orders_0001.csv", str(csv_path))
            csv_path.unlink()
            print(f"loading {args.rows:,} rows with `orgpipeline run` ...", flush=True)
            argv = [CLI, "run", "-f", str(org.manifest), "--table", "orders", "-o", "json"]
            wall, rss, out = timed(argv, org.env)
            result = json.loads(out)
            figures["first_load"] = {
                "wall_s": round(wall, 1),
                "rss_mb": round(rss),
                "inserted": result["inserted"],
            }
            print(
                f"first load: {wall:.1f} s, peak RSS {rss:.0f} MB, {result['inserted']:,} versions",
                flush=True,
            )
        keys = sample_keys(env, org_id, args.keys)
        figures["indexed"] = readers(env, org_id, keys, "with the indexes", validate=not args.no_validate)
        drop_indexes(env, org_id)
        # validate reads every loaded version, which no index makes cheaper: timed once.
        figures["unindexed"] = readers(env, org_id, keys, "without them", validate=False)
        started = time.monotonic()
        org.db.provision_mongo(org_id, ["orders"], None)  # the operator's next reconcile
        figures["index_build_s"] = round(time.monotonic() - started, 1)
        print(f"the next provisioning built them again (CONCURRENTLY) in {figures['index_build_s']} s")
        load = os.getloadavg()
        figures["load_average"] = [round(x, 2) for x in load]
        print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores")
        print(json.dumps(figures, separators=(",", ":")))
    finally:
        if args.keep:
            print(f"kept org {org_id} (bucket {bucket}): --org {org_id} measures it again")
        else:
            org.close()
            for obj in s3.list_objects(bucket, recursive=True):
                s3.remove_object(bucket, obj.object_name)
            s3.remove_bucket(bucket)


if __name__ == "__main__":
    main()
