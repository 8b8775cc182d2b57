"""`orgpipeline health` against the real servers: every dependency answers; an org's role logs in with
the password of its Secret; an unknown org, a missing setting and an unreachable server exit 2 or 3
with one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
from operator_helpers import Kubectl, Operator, apply_ready, free_port, pipeline
from orgpipeline_operator import kube

CLI = str(Path(sys.executable).with_name("orgpipeline"))


def health(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, "health", *args], env=env, capture_output=True, text=True, check=False, timeout=120
    )


def test_health_checks_every_server_and_the_orgs_role(
    operator: Operator,
    kubectl: Kubectl,
    api: kube.Kube,
    stack: Any,
    unique_id: str,
    cleanup_pipelines: list[str],
) -> None:
    env = {**os.environ, **stack.as_environ()}
    proc = health(env, "-o", "json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["healthy"] is True
    assert [c["name"] for c in doc["checks"]] == ["postgresql", "mongodb", "s3", "apiserver"]
    assert all(c["status"] == "ok" and c["latency_ms"] is not None for c in doc["checks"])

    org = f"hlth{unique_id}"
    apply_ready(kubectl, api, cleanup_pipelines, pipeline(org, ["orders"]))
    proc = health(env, "--org-id", org, "-o", "json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    checks = {c["name"]: c for c in json.loads(proc.stdout)["checks"]}
    assert checks["orgpipeline"]["status"] == "ok"
    login = checks["org-role-login"]
    assert login["status"] == "ok" and f"orgpipeline_org_{org}" in login["detail"]

    table = health(env, "--org-id", org)
    assert table.returncode == 0 and "org-role-login" in table.stdout

    # The role may no longer log in: the check fails (exit 1), naming it.
    role = f"orgpipeline_org_{org}"
    with psycopg.connect(stack.postgres_dsn, autocommit=True) as admin:
        admin.execute(f'ALTER ROLE "{role}" NOLOGIN')
    try:
        proc = health(env, "--org-id", org)
        assert proc.returncode == 1
        assert proc.stderr.count("\n") == 1 and "NOLOGIN" in proc.stderr
    finally:
        with psycopg.connect(stack.postgres_dsn, autocommit=True) as admin:
            admin.execute(f'ALTER ROLE "{role}" LOGIN')


def test_health_bad_input_and_unreachable_servers_exit_with_one_line(stack: Any) -> None:
    env = {**os.environ, **stack.as_environ()}
    unknown = health(env, "--org-id", "no-such-org")
    assert unknown.returncode == 2 and "unknown org" in unknown.stderr
    assert "Traceback" not in unknown.stderr and unknown.stderr.count("\n") == 1

    missing = health({k: v for k, v in env.items() if k != "ORGPIPELINE_MONGO_URI"})
    assert missing.returncode == 2 and "ORGPIPELINE_MONGO_URI is not set" in missing.stderr

    port = free_port()
    down = health(
        {**env, "ORGPIPELINE_POSTGRES_DSN": f"postgresql://nobody@127.0.0.1:{port}/x"}, "-o", "json"
    )
    assert down.returncode == 3 and down.stderr.count("\n") == 1
    postgres = json.loads(down.stdout)["checks"][0]
    assert postgres["name"] == "postgresql" and postgres["status"] == "unreachable"
