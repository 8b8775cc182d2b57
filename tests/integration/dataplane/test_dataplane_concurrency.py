"""Two runs of the same org and table never interleave."""

from __future__ import annotations

import os
import subprocess

from conftest import CLI, Org, order, orders_csv
from orgpipeline_api.orgschema import lock


def test_concurrent_runs_give_the_state_of_one(org: Org, twin: Org) -> None:
    for target in (org, twin):
        target.upload("orders_1.csv", orders_csv([order(i) for i in range(500)]))
        target.upload("orders_2.csv", orders_csv([order(i, amount="20.00") for i in range(250, 800)]))
    env = {**os.environ, "ORGPIPELINE_BATCH_ROWS": "50"}
    assert twin.cli("run", "-f", str(twin.path), "--table", "orders", env=env).returncode == 0
    procs = [
        subprocess.Popen(
            [CLI, "run", "-f", str(org.path), "--table", "orders", "-o", "json"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert org.state() == twin.state()
    statuses = sorted(r[0] for r in org.sql("SELECT status FROM {schema}.pipeline_runs"))
    assert statuses == ["NoNewFiles", "Succeeded"]


def test_a_held_lock_times_out_with_one_line(org: Org) -> None:
    org.upload("orders_1.csv", orders_csv([order(1)]))
    org.run()  # creates the schema
    org.pg.execute("SELECT pg_advisory_lock(%s)", (lock.key("run", org.org_id, "orders"),))
    try:
        done = org.cli("run", "-f", str(org.path), "--table", "orders", env={"ORGPIPELINE_LOCK_TIMEOUT": "1"})
    finally:
        org.pg.execute("SELECT pg_advisory_unlock(%s)", (lock.key("run", org.org_id, "orders"),))
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "another run of org" in done.stderr
