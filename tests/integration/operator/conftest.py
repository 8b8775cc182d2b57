"""Fixtures for the operator tests (the CRD comes with `stack`): the operator as a real subprocess
(`orgpipeline-operator`, short timings), kubectl as a user runs it."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from typing import Any

import kopf
import pytest
from kopf._core.engines import posting
from operator_helpers import (
    REPO,
    TEST_LABEL,
    WEBHOOK_TOKEN,
    Kubectl,
    Operator,
    free_port,
    operator_env,
    operator_postgres,
    running_operator,
)
from orgpipeline_operator import database, kube, operator_settings, runtime


@pytest.fixture(scope="session")
def tool_path(stack: Any) -> str:
    """PATH with the stack's kubectl (from `hack/stack env`), or the caller's PATH on a real cluster."""
    out = subprocess.run(
        ["bash", "-c", f'eval "$({REPO}/hack/stack env)" >/dev/null 2>&1; echo "$PATH"'],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return out or os.environ.get("PATH", "")


@pytest.fixture(scope="session")
def kubectl(stack: Any, tool_path: str) -> Kubectl:
    return Kubectl(tool_path, stack.kubeconfig)


@pytest.fixture(scope="session")
def api(kube_api: Any) -> kube.Kube:
    """The operator's own JSON client, as the admin: for what kubectl cannot do (pod status)."""
    return kube.Kube(kube_api)


@pytest.fixture
def direct_rt(stack: Any, api: kube.Kube) -> Iterator[runtime.Runtime]:
    """The operator's Runtime on the stack's servers, for tests that call its functions themselves
    (on a resource labelled for no running operator)."""
    settings = operator_settings.from_env(
        {**stack.as_environ(), **operator_postgres(stack), "ORGPIPELINE_NAMESPACE": "default"}
    )
    rt = runtime.Runtime(
        settings, api, database.Databases(settings.postgres_dsn, settings.mongo_uri, settings.mongo_db)
    )
    yield rt
    rt.db.close()
    rt.pool.shutdown()


@pytest.fixture(scope="session")
def operator(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    env = operator_env(
        stack,
        f"{TEST_LABEL}=true",
        ORGPIPELINE_WORKERS="8",
        # S3 notifications, posted by the tests as a sender would (not the stack's versitygw port:
        # that one is the end-to-end test's).
        ORGPIPELINE_WEBHOOK_PORT=str(free_port()),
        ORGPIPELINE_WEBHOOK_TOKEN=WEBHOOK_TOKEN,
        ORGPIPELINE_WEBHOOK_DEBOUNCE_SECONDS="0.5",
    )
    with running_operator(env, tmp_path_factory.mktemp("operator") / "operator.log") as op:
        yield op


@pytest.fixture()
def cleanup_pipelines(kubectl: Kubectl) -> Iterator[list[str]]:
    """Names appended here are deleted after the test (the operator is still running then)."""
    names: list[str] = []
    yield names
    for name in names:
        kubectl("delete", "orgpipeline", name, "--ignore-not-found", "--timeout=30s", check=False)


@pytest.fixture
def events() -> Iterator[asyncio.Queue[Any]]:
    """What Kopf's event poster would receive: runs.run_now posts Events outside a Kopf handler here."""
    loop = asyncio.new_event_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    settings = kopf.OperatorSettings()
    tokens = (
        posting.settings_var.set(settings),
        posting.event_queue_loop_var.set(loop),
        posting.event_queue_var.set(queue),
    )
    yield queue
    posting.event_queue_var.reset(tokens[2])
    posting.event_queue_loop_var.reset(tokens[1])
    posting.settings_var.reset(tokens[0])
    loop.close()
