"""A run killed at any point and rerun leaves exactly the state of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Any

import pytest
from conftest import CLI, Org, order, orders_csv
from orgpipeline_jobs import pipeline
from orgpipeline_jobs.landing import writer
from orgpipeline_jobs.warehouse import heads

ROWS = [order(i, amount=f"{i}.00") for i in range(40)]
SECOND = [order(i, amount=f"{i + (i % 3)}.00") for i in range(10, 60)]
SMALL = {"ORGPIPELINE_BATCH_ROWS": "7", "ORGPIPELINE_WRITE_ROWS": "5"}
"""Slices of 7 rows and parts of 5 versions: many parts, some spanning two slices."""


class Killed(BaseException):
    """Stands for SIGKILL: nothing of the run's own error handling may catch it."""


def fail_on_call(monkeypatch: pytest.MonkeyPatch, module: Any, name: str, n: int) -> None:
    original = getattr(module, name)
    calls = {"n": 0}

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == n:
            raise Killed()
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)


def reference(twin: Org) -> dict[str, Any]:
    twin.upload("orders_1.csv", orders_csv(ROWS))
    twin.upload("orders_2.csv", orders_csv(SECOND))
    result = twin.run(**SMALL)
    assert result["result"] == "Succeeded"
    return twin.state()


@pytest.mark.parametrize("call", [2, 5, 9])
def test_killed_between_postgres_commit_and_mongo_write(
    org: Org, twin: Org, monkeypatch: pytest.MonkeyPatch, call: int
) -> None:
    expected = reference(twin)
    org.upload("orders_1.csv", orders_csv(ROWS))
    org.upload("orders_2.csv", orders_csv(SECOND))
    fail_on_call(monkeypatch, writer, "insert_documents", call)
    with pytest.raises(Killed):
        org.run(**SMALL)
    monkeypatch.undo()
    assert org.run(**SMALL)["result"] == "Succeeded"
    assert org.state() == expected
    statuses = [r[0] for r in org.sql("SELECT status FROM {schema}.pipeline_runs ORDER BY started_at")]
    assert statuses == ["Interrupted", "Succeeded"]


@pytest.mark.parametrize("call", [1, 3])
def test_killed_in_the_landing_only_path(
    org: Org, twin: Org, monkeypatch: pytest.MonkeyPatch, call: int
) -> None:
    settings = org.settings(**SMALL)
    twin_uri = twin.upload("orders_1.csv", orders_csv(ROWS))
    pipeline.run_ingest(twin.settings(**SMALL), twin.spec, "orders", twin_uri)
    pipeline.run_load(twin.settings(), twin.spec, "orders")
    uri = org.upload("orders_1.csv", orders_csv(ROWS))
    fail_on_call(monkeypatch, heads, "upsert", call)  # MongoDB written, heads not yet
    with pytest.raises(Killed):
        pipeline.run_ingest(settings, org.spec, "orders", uri)
    monkeypatch.undo()
    assert pipeline.run_ingest(settings, org.spec, "orders", uri).result == "Succeeded"
    pipeline.run_load(settings, org.spec, "orders")
    assert org.state() == twin.state()


def test_sigkill_and_rerun(org: Org, twin: Org) -> None:
    rows = [order(i, note="x" * 50) for i in range(3000)]
    env = {**os.environ, "ORGPIPELINE_BATCH_ROWS": "100"}
    for target in (org, twin):
        target.upload("orders_1.csv", orders_csv(rows))
    started = time.monotonic()
    done = twin.cli("run", "-f", str(twin.path), "--table", "orders", "-o", "json", env=env)
    assert done.returncode == 0, done.stderr
    duration = time.monotonic() - started
    proc = subprocess.Popen(
        [CLI, "run", "-f", str(org.path), "--table", "orders"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(duration * 0.6)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rerun = org.cli("run", "-f", str(org.path), "--table", "orders", "-o", "json", env=env)
    assert rerun.returncode == 0, rerun.stderr
    assert org.state() == twin.state()
    statuses = [r[0] for r in org.sql("SELECT status FROM {schema}.pipeline_runs ORDER BY started_at")]
    assert statuses == ["Interrupted", "Succeeded"]  # the kill did land mid-run
    assert org.sql("SELECT count(*) FROM {schema}.pipeline_files")[0][0] > 0
