"""Helpers of the operator tests: kubectl as a user runs it, the operator as a subprocess, waiting."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import yaml
from kopf._core.engines import posting
from orgpipeline_operator import kube, naming

REPO = Path(__file__).resolve().parents[3]
CASES = Path(__file__).resolve().parent / "cases"
RESYNC_SECONDS = 3.0
TEST_LABEL = "orgpipeline.io/operator-test"
"""The test operator reconciles only OrgPipelines with this label: others on a shared cluster are not ours."""
T = TypeVar("T")
WEBHOOK_TOKEN = "operator-tests-webhook-token"


def operator_postgres(stack: Any) -> dict[str, str]:
    """The operator's PostgreSQL login, and the same role's MongoDB login: its own role, not the
    superuser (`hack/stack` makes it with what operator/README.md lists), so that every operator
    test proves the operator works with it."""
    return {
        "ORGPIPELINE_POSTGRES_DSN": stack.operator_postgres_dsn,
        "ORGPIPELINE_MONGO_URI": stack.operator_mongo_uri,
    }


def operator_env(stack: Any, selector: str, resync: float = RESYNC_SECONDS, **extra: str) -> dict[str, str]:
    """The environment of a test operator: the stack's servers with the operator's own logins, short
    resyncs and retries, its own ports, and only the OrgPipelines matching `selector` (k=v) as its
    own; the tests play the kubelet, so on a real cluster (kind) no node may take the jobs' pods."""
    return {
        **os.environ,
        **stack.as_environ(),
        **operator_postgres(stack),
        "ORGPIPELINE_RESYNC_SECONDS": str(resync),
        "ORGPIPELINE_RETRY_SECONDS": "1",
        "ORGPIPELINE_METRICS_PORT": str(free_port()),
        "ORGPIPELINE_HEALTH_PORT": str(free_port()),
        "ORGPIPELINE_NAMESPACE": "default",
        "ORGPIPELINE_WORKERS": "4",
        "ORGPIPELINE_LABEL_SELECTOR": selector,
        "ORGPIPELINE_JOB_NODE_SELECTOR": "orgpipeline.io/no-such-node=true",
        **extra,
    }


@contextlib.contextmanager
def running_operator(env: dict[str, str], log: Path) -> Iterator[Operator]:
    """An operator subprocess for the block (a module's or the session's fixture)."""
    op = Operator(env, log)
    op.start()
    try:
        yield op
    finally:
        op.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Kubectl:
    def __init__(self, path: str, kubeconfig: str) -> None:
        self.env = {**os.environ, "PATH": path, "KUBECONFIG": kubeconfig}

    def __call__(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["kubectl", *args],
            input=input,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=60,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr}")
        return proc

    def apply(self, manifest: dict[str, Any]) -> None:
        self("apply", "-f", "-", input=yaml.safe_dump(manifest))

    def json(self, *args: str) -> dict[str, Any]:
        return json.loads(self(*args, "-o", "json").stdout)  # type: ignore[no-any-return]


class Operator:
    """`orgpipeline-operator` as a subprocess, restartable (and killable, as a crash would)."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.metrics_port = int(env["ORGPIPELINE_METRICS_PORT"])
        self.webhook_port = int(env.get("ORGPIPELINE_WEBHOOK_PORT") or 0)

    def start(self) -> None:
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [str(REPO / ".venv" / "bin" / "orgpipeline-operator")],
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(self.ready, timeout=30, what="operator /readyz")

    def ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(
                f"operator exited with {self.proc.returncode}: {self.log.read_text()[-3000:]}"
            )
        url = f"http://127.0.0.1:{self.metrics_port}/readyz"
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
        return False

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            return str(resp.read().decode())

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None


def wait_for(fn: Callable[[], T], timeout: float = 30, what: str = "condition", interval: float = 0.3) -> T:
    """Polls fn until it returns something truthy; fails with `what` after the timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except (AssertionError, KeyError, IndexError, TypeError) as exc:
            last = exc
            if isinstance(exc, AssertionError) and "operator exited" in str(exc):
                raise
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def wait_made_again(
    api: kube.Kube, api_version: str, kind: str, name: str, namespace: str, old_uid: str, timeout: float
) -> float:
    """Waits until the deleted object exists again (another uid than `old_uid`): the seconds since
    the call (the caller calls right after deleting it). Fails after `timeout`."""
    started = time.monotonic()

    def back() -> bool:
        found = api.get(api_version, kind, name, namespace)
        return found is not None and found["metadata"]["uid"] != old_uid

    wait_for(back, timeout, f"the deleted {kind} {name} to be made again", interval=0.2)
    return time.monotonic() - started


def pipeline(org: str, tables: list[str] | None = None, **spec: Any) -> dict[str, Any]:
    """An OrgPipeline manifest for org `org` with simple tables (name -> two columns)."""
    base = yaml.safe_load((CASES / "base.yaml").read_text())
    base["metadata"]["name"] = f"org-{org}"
    base["metadata"]["labels"] = {TEST_LABEL: "true"}
    base["spec"]["orgId"] = org
    base["spec"]["source"]["prefix"] = f"org-{org}/"
    table = base["spec"]["tables"][0]
    base["spec"]["tables"] = [{**table, "name": name} for name in (tables or ["orders"])]
    base["spec"]["deletionPolicy"] = "Delete"  # tests leave no schemas or roles behind
    base["spec"].update(spec)
    return base  # type: ignore[no-any-return]


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return dict(c)
    return {}


def get_pipeline(api: kube.Kube, name: str) -> dict[str, Any]:
    found = api.get("orgpipeline.io/v1alpha1", "OrgPipeline", name)
    assert found is not None, f"OrgPipeline {name} is gone"
    return found


def wait_ready(api: kube.Kube, name: str, timeout: float = 30) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        obj = get_pipeline(api, name)
        c = condition(obj, "Ready")
        gen = obj["metadata"]["generation"]
        ok = c.get("status") == "True" and c.get("observedGeneration") == gen
        return obj if ok and obj["status"].get("observedGeneration") == gen else None

    return wait_for(ready, timeout, f"{name} Ready")


def apply_ready(
    kubectl: Kubectl, api: kube.Kube, cleanup: list[str], manifest: dict[str, Any]
) -> dict[str, Any]:
    """Applies an OrgPipeline manifest (deleted after the test) and waits until it is Ready."""
    name = manifest["metadata"]["name"]
    cleanup.append(name)
    kubectl.apply(manifest)
    return wait_ready(api, name)


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_terminated(api: kube.Kube, ns: str, pod: dict[str, Any], exit_code: int, message: str) -> None:
    """Plays the kubelet: the pod's container terminated with `exit_code` and `message`."""
    now = now_iso()
    status = {
        "phase": "Succeeded" if exit_code == 0 else "Failed",
        "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": now}],
        "containerStatuses": [
            {
                "name": naming.CONTAINER,
                "image": "orgpipeline:dev",
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "started": False,
                "state": {
                    "terminated": {
                        "exitCode": exit_code,
                        "reason": "Completed" if exit_code == 0 else "Error",
                        "message": message,
                        "startedAt": now,
                        "finishedAt": now,
                    }
                },
            }
        ],
    }
    url = kube.path("v1", "Pod", ns, pod["metadata"]["name"]) + "/status"
    api.request("PATCH", url, {"status": status}, content_type="application/merge-patch+json")


def report_message(org: str, table: str, **kw: Any) -> str:
    """A termination message as the data plane writes it (the fields in `kw` changed)."""
    now = now_iso()
    body = {
        "runId": "run-1", "orgId": org, "table": table, "result": "Succeeded", "files": [f"{table}_1.csv"],
        "rowsRead": 100, "inserted": 90, "updated": 5, "deleted": 0, "unchanged": 5, "rejected": 0,
        "qualityScore": 0.99, "completenessScore": 1.0, "errorRatePercent": 0.0, "breaches": [],
        "startedAt": now, "finishedAt": now, "error": None,
    }  # fmt: skip
    body.update(kw)
    return json.dumps(body, separators=(",", ":"))


def posted_reasons(queue: asyncio.Queue[Any]) -> list[str]:
    """The reasons of the Events posted since the last call (from the `events` fixture's queue)."""
    loop = posting.event_queue_loop_var.get()  # not running: the posts wait in its callbacks
    loop.run_until_complete(asyncio.sleep(0))
    out = []
    while not queue.empty():
        out.append(queue.get_nowait().reason)
    return out
