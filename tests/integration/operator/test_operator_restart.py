"""An operator killed in the middle of reconciling converges after a restart, without duplicates."""

from __future__ import annotations

import base64
import signal
from typing import Any

import psycopg
from operator_helpers import Kubectl, Operator, pipeline, wait_for, wait_ready
from orgpipeline_operator import kube, naming

ORGS = 6
TABLES = ["orders", "customers", "products"]


def test_operator_killed_mid_reconcile_converges_without_duplicates(
    operator: Operator,
    kubectl: Kubectl,
    api: kube.Kube,
    stack: Any,
    unique_id: str,
    cleanup_pipelines: list[str],
) -> None:
    orgs = [f"rst{i}{unique_id}" for i in range(ORGS)]
    operator.stop()
    try:
        for org in orgs:
            cleanup_pipelines.append(f"org-{org}")
            kubectl.apply(pipeline(org, TABLES))
        operator.start()
        # Kill it (no graceful shutdown) as soon as it has started writing children.
        wait_for(
            lambda: any(api.get("v1", "Namespace", f"org-{o}") for o in orgs),
            interval=0.05,
            what="first children",
        )
    finally:
        operator.stop(signal.SIGKILL)
        operator.start()

    for org in orgs:
        wait_ready(api, f"org-{org}", timeout=60)
    for org in orgs:
        ns = f"org-{org}"
        selector = f"{naming.LABEL_PIPELINE}=org-{org}"
        crons = kubectl.json("get", "cronjobs", "-n", ns, "-l", selector)["items"]
        assert sorted(c["metadata"]["name"] for c in crons) == sorted(
            [*(f"ingest-{t}" for t in TABLES), "retention"]
        )
        for kind in (
            "secrets",
            "configmaps",
            "serviceaccounts",
            "resourcequotas",
            "limitranges",
            "networkpolicies",
        ):
            want = 2 if kind == "secrets" else 1  # secrets: the jobs' credentials and the reader's
            assert len(kubectl.json("get", kind, "-n", ns, "-l", selector)["items"]) == want, kind
        assert kubectl.json("get", "jobs", "-n", ns)["items"] == []
        # The password in the Secret is the role's password, whatever moment the crash hit.
        secret = kubectl.json("get", "secret", naming.SECRET, "-n", ns)["data"]
        user = base64.b64decode(secret["ORGPIPELINE_POSTGRES_USER"]).decode()
        password = base64.b64decode(secret["ORGPIPELINE_POSTGRES_PASSWORD"]).decode()
        dsn = psycopg.conninfo.make_conninfo(stack.postgres_dsn, user=user, password=password)
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (user,)
        # So is the reader's.
        reader = kubectl.json("get", "secret", "orgpipeline-reader", "-n", ns)["data"]
        user = base64.b64decode(reader["PGUSER"]).decode()
        dsn = psycopg.conninfo.make_conninfo(
            stack.postgres_dsn, user=user, password=_b64(reader["PGPASSWORD"])
        )
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (user,)


def _b64(value: str) -> str:
    return base64.b64decode(value).decode()
