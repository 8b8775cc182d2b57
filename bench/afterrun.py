#!/usr/bin/env python3
"""What issue 26 adds to the end of every run, timed on the stack's servers (figures, no goal).

    eval "$(hack/stack env)"; .venv/bin/python bench/afterrun.py [--rows 50000]

Loads an orders table of --rows rows (one `orgpipeline run` from a local file), then times, median
of 7: the storage step of a run that wrote nothing once the day is recorded (a lookup of the
day's row), a measurement (PostgreSQL relation sizes + MongoDB $collStats + the upsert: a run that
wrote), and the classification sample of a run that wrote (200 rows of random pages, the
detectors). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from orgpipeline_api import store_names
from orgpipeline_api.v1alpha1 import load_manifest
from orgpipeline_jobs import classify, pipeline, storage
from orgpipeline_jobs.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def _median_ms(step: Callable[[], Any], trials: int = 7) -> float:
    times = []
    for _ in range(trials):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return round(statistics.median(times) * 1000, 2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=50_000)
    args = parser.parse_args()
    org = f"bench{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        doc = yaml.safe_load((ROOT / "examples" / "org-123.yaml").read_text())
        doc["metadata"]["name"], doc["spec"]["orgId"] = f"org-{org}", org
        doc["spec"]["source"]["prefix"] = f"org-{org}/"
        for column in doc["spec"]["tables"][0]["columns"]:
            if column["name"] == "email":
                column.pop("classification")  # internal: the sample has something to find
        manifest = Path(tmp) / "org.yaml"
        manifest.write_text(yaml.safe_dump(doc))
        source = Path(tmp) / "src"
        source.mkdir()
        lines = ["order_id,customer_id,product_id,order_date,amount,status,email,note"]
        lines += [
            f"O{i},C{i % 977},P{i % 31},2024-01-15,{i % 500}.25,pending,u{i}@example.com,n"
            for i in range(args.rows)
        ]
        (source / "orders_1.csv").write_text("\n".join(lines) + "\n")
        _, spec = load_manifest(manifest)
        settings = Settings.from_env()
        loaded = pipeline.run_table(settings, spec, "orders", None, str(source))
        assert loaded.result == "Succeeded", loaded.error
        with pipeline.locked_table(settings, spec, "orders") as (_table, conn, collection):
            columns = {c.name: str(c.classification) for c in spec.tables[0].columns}
            figures = {
                "rows": args.rows,
                "storage_day_recorded_ms": _median_ms(
                    lambda: storage.after_run(conn, collection, org, "orders")
                ),
                "storage_measure_and_record_ms": _median_ms(
                    lambda: storage.record(
                        conn, org, "orders", storage.measure(conn, collection.database, org, "orders")
                    )
                ),
                "classification_sample_ms": _median_ms(
                    lambda: classify.suggest_table(conn, org, "orders", columns, classify.RUN_SAMPLE_ROWS)
                ),
            }
            collection.drop()
        conn2 = pipeline.connect_postgres(settings)
        conn2.execute(f'DROP SCHEMA IF EXISTS "{store_names.pg_schema(org)}" CASCADE')
        conn2.close()
    print(json.dumps(figures))  # the org's roles and database stay (a throwaway stack's)


if __name__ == "__main__":
    main()
