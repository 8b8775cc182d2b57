"""Processes and helpers shared by the end-to-end test and the chart's RBAC test.

The operator runs as a subprocess (`orgpipeline-operator`, the image's command) and the test-only
pod runner (hack/podrunner.py) plays the kubelet for the org namespaces; everything else is the real
API server, controller manager and data servers of the local stack.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
EXAMPLE = REPO / "examples" / "org-123.yaml"
SAMPLES = REPO / "examples" / "data" / "org-123"

T = TypeVar("T")
TEST_LABEL = "orgpipeline.io/test-run"
"""Label of a test's OrgPipelines; its operator watches only those (ORGPIPELINE_LABEL_SELECTOR)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 60, every: float = 0.5) -> T:
    """Polls until probe returns something truthy; fails with `what` and the last value otherwise."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def kubectl(*args: str, kubeconfig: str | None = None, input: str | None = None, check: bool = True) -> str:
    cmd = ["kubectl", *args]
    if kubeconfig:
        cmd[1:1] = ["--kubeconfig", kubeconfig]
    out = subprocess.run(cmd, capture_output=True, text=True, input=input, timeout=60)
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed: {out.stderr.strip()}")
    return out.stdout


def get_json(*args: str, kubeconfig: str | None = None) -> dict[str, Any] | None:
    out = subprocess.run(
        ["kubectl", *(["--kubeconfig", kubeconfig] if kubeconfig else []), "get", *args, "-o", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if out.returncode != 0:
        if "NotFound" in out.stderr or "not found" in out.stderr:
            return None
        raise AssertionError(out.stderr)
    return dict(json.loads(out.stdout))


def pipeline_manifest(name: str, org_id: str, bucket: str, deletion_policy: str = "Delete") -> dict[str, Any]:
    """examples/org-123.yaml with this run's name, org id and source."""
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["metadata"]["name"] = name
    doc["metadata"]["labels"] = {TEST_LABEL: org_id}
    doc["spec"]["orgId"] = org_id
    doc["spec"]["deletionPolicy"] = deletion_policy
    doc["spec"]["source"] = {"bucket": bucket, "prefix": f"org-{org_id}/"}
    return dict(doc)


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return None


def is_ready(obj: dict[str, Any] | None) -> bool:
    c = condition(obj, "Ready")
    gen = ((obj or {}).get("metadata") or {}).get("generation")
    return bool(
        c and c["status"] == "True" and (obj or {}).get("status", {}).get("observedGeneration") == gen
    )


def last_run(obj: dict[str, Any] | None, table: str) -> dict[str, Any] | None:
    for t in ((obj or {}).get("status") or {}).get("tables") or []:
        if t.get("name") == table:
            return t.get("lastRun")
    return None


class Process:
    """A background process with its output in a log file; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._out = log.open("w")
        self.proc = subprocess.Popen(
            argv, env=env, stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> None:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._out.close()


class Operator(Process):
    """`orgpipeline-operator` with the stack's connections, on free metrics and health ports."""

    def __init__(
        self,
        env: dict[str, str],
        log: Path,
        kubeconfig: str,
        namespace: str = "default",
        label_selector: str | None = None,
    ) -> None:
        self.metrics_port, self.health_port = free_port(), free_port()
        full = {
            **env,
            # Its own login, not the superuser's (hack/stack makes it; operator/README.md, "Isolation").
            "ORGPIPELINE_POSTGRES_DSN": env.get("ORGPIPELINE_OPERATOR_POSTGRES_DSN")
            or env["ORGPIPELINE_POSTGRES_DSN"],
            "ORGPIPELINE_MONGO_URI": env.get("ORGPIPELINE_OPERATOR_MONGO_URI")
            or env["ORGPIPELINE_MONGO_URI"],
            "KUBECONFIG": kubeconfig,
            "ORGPIPELINE_NAMESPACE": namespace,
            "ORGPIPELINE_METRICS_PORT": str(self.metrics_port),
            "ORGPIPELINE_HEALTH_PORT": str(self.health_port),
            "ORGPIPELINE_RETRY_SECONDS": "2",
        }
        if label_selector:  # only this test's OrgPipelines: other tests' operators share the server
            full["ORGPIPELINE_LABEL_SELECTOR"] = label_selector
        super().__init__([str(BIN / "orgpipeline-operator")], full, log)

    def wait_ready(self, timeout: float = 60) -> None:
        def ready() -> bool:
            assert self.alive(), f"the operator exited:\n{self.output()}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/readyz", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        wait_for("the operator's /readyz", ready, timeout)

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of `name` whose labels include `labels` (0 when there is none)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            text = r.read().decode()
        total = 0.0
        for line in text.splitlines():
            m = re.fullmatch(rf"{re.escape(name)}(?:\{{(.*)\}})? (\S+)", line)
            if not m:
                continue
            have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
            if all(have.get(k) == v for k, v in labels.items()):
                total += float(m.group(2))
        return total


class PodRunner(Process):
    """hack/podrunner.py serving exactly the given namespaces."""

    def __init__(self, env: dict[str, str], log: Path, namespaces: list[str], workdir: Path) -> None:
        argv = [
            sys.executable,
            str(REPO / "hack" / "podrunner.py"),
            "--no-selector",
            "--workdir",
            str(workdir),
            "--interval",
            "0.5",
        ]
        for ns in namespaces:
            argv += ["-n", ns]
        super().__init__(argv, env, log)


def drop_org_data(postgres_dsn: str, mongo_uri: str, org_id: str) -> None:
    """Removes whatever a test left of an org in PostgreSQL and MongoDB (idempotent): the operator's
    own clean-up of a deleted org (schema, role, raw_<org>_* collections)."""
    from orgpipeline_operator.database import Databases

    db = Databases(postgres_dsn, mongo_uri, os.environ.get("ORGPIPELINE_MONGO_DB", "orgpipeline"))
    try:
        db.drop_collections(org_id)  # first: it takes the role's grants in FerretDB's database
        db.drop_postgres(org_id)
    finally:
        db.close()
