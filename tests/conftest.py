"""Test wiring: markers by folder, and session fixtures that hand tests clients for the real servers.

`tests/unit/` holds pure-function tests (marker `unit`, no servers). Everything else talks to the real
servers of the local stack (`hack/stack up`, reused when already running), or, with
ORGPIPELINE_USE_EXISTING_CLUSTER=1, to the cluster that KUBECONFIG names.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.fspath))
        if "unit" in path.parts:
            item.add_marker(pytest.mark.unit)
        elif not any(m.name in ("e2e", "integration") for m in item.iter_markers()):
            item.add_marker(pytest.mark.integration)


@dataclass(frozen=True)
class StackEnv:
    """Where the servers are: the same values `hack/stack env` exports."""

    kubeconfig: str
    mongo_uri: str
    postgres_dsn: str
    """The superuser's: for the command line and the tests' own checks."""
    operator_postgres_dsn: str
    """The operator's own login (CREATEROLE, no superuser): what every test operator gets."""
    operator_mongo_uri: str
    """The operator's MongoDB login: the same PostgreSQL role (FerretDB logs clients in as one)."""
    s3_endpoint: str
    s3_access_key: str
    s3_secret_key: str
    existing_cluster: bool
    node_env: dict[str, str] = field(default_factory=dict)
    """ORGPIPELINE_NODE=kubelet: the stores as the real node's pods reach them (ORGPIPELINE_JOB_*)."""

    @property
    def real_node(self) -> bool:
        """The stack runs a kubelet (hack/node.py): the Jobs' pods run from the image, no stand-in."""
        return bool(self.node_env)

    def as_environ(self) -> dict[str, str]:
        return {
            "KUBECONFIG": self.kubeconfig,
            "ORGPIPELINE_MONGO_URI": self.mongo_uri,
            "ORGPIPELINE_POSTGRES_DSN": self.postgres_dsn,
            "ORGPIPELINE_OPERATOR_POSTGRES_DSN": self.operator_postgres_dsn,
            "ORGPIPELINE_OPERATOR_MONGO_URI": self.operator_mongo_uri,
            "ORGPIPELINE_S3_ENDPOINT": self.s3_endpoint,
            "ORGPIPELINE_S3_ACCESS_KEY": self.s3_access_key,
            "ORGPIPELINE_S3_SECRET_KEY": self.s3_secret_key,
            **self.node_env,
        }


@pytest.fixture(scope="session")
def stack() -> StackEnv:
    """Brings the local stack up (a no-op when it already runs) and exports its environment."""
    subprocess.run([str(REPO / "hack" / "stack"), "up"], check=True)
    out = subprocess.run(
        [str(REPO / "hack" / "stack"), "env", "--json"], check=True, capture_output=True, text=True
    ).stdout
    values = json.loads(out)
    env = StackEnv(
        kubeconfig=values["KUBECONFIG"],
        mongo_uri=values["ORGPIPELINE_MONGO_URI"],
        postgres_dsn=values["ORGPIPELINE_POSTGRES_DSN"],
        operator_postgres_dsn=values["ORGPIPELINE_OPERATOR_POSTGRES_DSN"],
        operator_mongo_uri=values["ORGPIPELINE_OPERATOR_MONGO_URI"],
        s3_endpoint=values["ORGPIPELINE_S3_ENDPOINT"],
        s3_access_key=values["ORGPIPELINE_S3_ACCESS_KEY"],
        s3_secret_key=values["ORGPIPELINE_S3_SECRET_KEY"],
        existing_cluster=os.environ.get("ORGPIPELINE_USE_EXISTING_CLUSTER") == "1",
        node_env={
            k: v for k, v in values.items() if k == "ORGPIPELINE_NODE" or k.startswith("ORGPIPELINE_JOB_")
        },
    )
    os.environ.update(env.as_environ())
    # kubectl and helm, built by the stack, for tests that run them the way a user would.
    os.environ["PATH"] = f"{values['ORGPIPELINE_STACK_BIN']}:{os.environ['PATH']}"
    _install_crd()
    return env


def _install_crd() -> None:
    """Installs the OrgPipeline CRD, as a platform team does before onboarding any tenant.

    Once per session, whatever the order of the tests: a fresh cluster has no CRD, and every test
    that applies an OrgPipeline (operator, chart, CLI, end to end) relies on it.
    """
    crd = REPO / "crds" / "orgpipeline.io_orgpipelines.yaml"
    subprocess.run(
        [
            "kubectl",
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=orgpipeline-tests",
            "-f",
            str(crd),
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            "kubectl",
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/orgpipelines.orgpipeline.io",
        ],
        check=True,
        capture_output=True,
    )


@pytest.fixture(scope="session")
def kube_api(stack: StackEnv) -> Iterator[object]:
    """A kubernetes ApiClient for the admin user of the stack's (or the existing) cluster."""
    import kubernetes

    client = kubernetes.config.new_client_from_config(config_file=stack.kubeconfig)
    yield client
    client.close()


@pytest.fixture(scope="session")
def mongo(stack: StackEnv) -> Iterator[object]:
    """A pymongo client of the MongoDB-protocol server (FerretDB)."""
    import pymongo

    client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(stack.mongo_uri)
    yield client
    client.close()


@pytest.fixture()
def pg(stack: StackEnv) -> Iterator[object]:
    """An autocommit psycopg connection as the PostgreSQL admin."""
    import psycopg

    with psycopg.connect(stack.postgres_dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="session")
def s3(stack: StackEnv) -> object:
    """A minio client of the S3 server."""
    from urllib.parse import urlparse

    from minio import Minio

    url = urlparse(stack.s3_endpoint)
    return Minio(
        url.netloc,
        access_key=stack.s3_access_key,
        secret_key=stack.s3_secret_key,
        secure=url.scheme == "https",
    )


@pytest.fixture()
def unique_id() -> str:
    """A short id so that tests sharing the servers never touch each other's orgs, buckets or rows."""
    return uuid.uuid4().hex[:8]
