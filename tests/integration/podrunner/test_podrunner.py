"""hack/podrunner.py, the test-only kubelet stand-in: real Jobs on the real API server and Job controller.

The pod runner binds the Jobs' pods to the Node it registers, runs their commands as local
processes with the pod's env and volumes, and writes the pod status back; the real Job controller
then marks the Job Complete or Failed. Nothing here is mocked.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

REPO = Path(__file__).resolve().parents[3]
PODRUNNER = REPO / "hack" / "podrunner.py"


@pytest.fixture(scope="module")
def namespace(kube_api: client.ApiClient, stack: Any) -> Iterator[str]:
    import uuid

    if stack.existing_cluster:
        pytest.skip("a real cluster has kubelets: the pod runner is the local stack's stand-in only")

    name = f"podrunner-test-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(kube_api)
    core.create_namespace({"metadata": {"name": name}})
    core.create_namespaced_config_map(
        name, {"metadata": {"name": "files"}, "data": {"greeting.txt": "hello from a ConfigMap"}}
    )
    core.create_namespaced_config_map(name, {"metadata": {"name": "settings"}, "data": {"COLOUR": "blue"}})
    core.create_namespaced_secret(
        name, {"metadata": {"name": "creds"}, "stringData": {"password": "s3cr3t", "user": "alice"}}
    )
    yield name
    core.delete_namespace(name)


@pytest.fixture(scope="module")
def podrunner(namespace: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    workdir = tmp_path_factory.mktemp("podrunner")
    node = f"podrunner-test-{namespace[-8:]}"
    log = (workdir / "podrunner.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            str(PODRUNNER),
            "--no-selector",
            "-n",
            namespace,
            "--node-name",
            node,
            "--workdir",
            str(workdir),
            "--interval",
            "0.5",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=os.environ.copy(),
    )
    yield {"node": node, "workdir": workdir, "proc": proc}
    proc.terminate()
    try:
        proc.wait(timeout=20)
    finally:
        log.close()
        print((workdir / "podrunner.log").read_text())


def job(name: str, command: list[str], *, init: list[str] | None = None, **container: Any) -> dict[str, Any]:
    main = {"name": "main", "image": "orgpipeline:dev", "command": command, **container}
    spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [main]}
    if init:
        spec["initContainers"] = [{"name": "init", "image": "orgpipeline:dev", "command": init}]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"backoffLimit": 0, "template": {"spec": spec}},
    }


def wait_job(batch: client.BatchV1Api, ns: str, name: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        j = batch.read_namespaced_job(name, ns)
        for c in j.status.conditions or []:
            if c.type in ("Complete", "Failed") and c.status == "True":
                return str(c.type)
        time.sleep(0.5)
    raise AssertionError(f"job {ns}/{name} did not finish in {timeout}s")


def pod_of(core: client.CoreV1Api, ns: str, job_name: str) -> client.V1Pod:
    pods = core.list_namespaced_pod(ns, label_selector=f"batch.kubernetes.io/job-name={job_name}").items
    assert len(pods) == 1
    return pods[0]


def test_a_job_runs_with_the_pods_env_volumes_and_termination_message(
    kube_api: client.ApiClient, namespace: str, podrunner: dict[str, Any]
) -> None:
    batch, core = client.BatchV1Api(kube_api), client.CoreV1Api(kube_api)
    script = (
        "import os, sys; "
        "text = open(sys.argv[1]).read(); "
        "msg = f\"{text}|{os.environ['USER_NAME']}:{os.environ['PASSWORD']}|{os.environ['CFG_COLOUR']}|"
        "{os.environ['POD']}|{os.environ['GREETING_FILE']}|{sys.argv[2]}\"; "
        "open(os.environ['ORGPIPELINE_TERMINATION_LOG'], 'w').write(msg); print('done')"
    )
    body = job(
        "env-and-volumes",
        ["python", "-c", script, "/etc/files/greeting.txt", "$(USER_NAME)-expanded"],
        env=[
            {"name": "USER_NAME", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "user"}}},
            {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "GREETING_FILE", "value": "/etc/files/greeting.txt"},
            {"name": "ORGPIPELINE_TERMINATION_LOG", "value": "/dev/termination-log"},
        ],
        envFrom=[{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
        volumeMounts=[{"name": "files", "mountPath": "/etc/files", "readOnly": True}],
    )
    body["spec"]["template"]["spec"]["volumes"] = [{"name": "files", "configMap": {"name": "files"}}]
    batch.create_namespaced_job(namespace, body)

    assert wait_job(batch, namespace, "env-and-volumes") == "Complete"
    pod = pod_of(core, namespace, "env-and-volumes")
    assert pod.spec.node_name == podrunner["node"]
    assert pod.status.phase == "Succeeded"
    term = pod.status.container_statuses[0].state.terminated
    assert term.exit_code == 0
    assert term.reason == "Completed"
    text, creds, colour, ns, greeting_file, arg = term.message.split("|")
    assert (text, creds, colour, ns, arg) == (
        "hello from a ConfigMap",
        "alice:s3cr3t",
        "blue",
        namespace,
        "alice-expanded",
    )
    # the mount path in an env value points at the materialised ConfigMap
    assert greeting_file.endswith("/greeting.txt")
    assert Path(greeting_file).read_text() == "hello from a ConfigMap"
    assert "done" in (podrunner["workdir"] / namespace / pod.metadata.name / "main.log").read_text()


def test_a_failing_command_fails_the_job_with_exit_code_and_log_tail(
    kube_api: client.ApiClient, namespace: str, podrunner: dict[str, Any]
) -> None:
    batch, core = client.BatchV1Api(kube_api), client.CoreV1Api(kube_api)
    body = job(
        "fails",
        ["python", "-c", "import sys; print('boom: the input is bad'); sys.exit(3)"],
        terminationMessagePolicy="FallbackToLogsOnError",
    )
    batch.create_namespaced_job(namespace, body)
    assert wait_job(batch, namespace, "fails") == "Failed"
    pod = pod_of(core, namespace, "fails")
    assert pod.status.phase == "Failed"
    term = pod.status.container_statuses[0].state.terminated
    assert (term.exit_code, term.reason) == (3, "Error")
    assert "boom: the input is bad" in term.message


def test_a_failing_init_container_stops_the_pod(
    kube_api: client.ApiClient, namespace: str, podrunner: dict[str, Any]
) -> None:
    batch, core = client.BatchV1Api(kube_api), client.CoreV1Api(kube_api)
    marker = podrunner["workdir"] / "main-ran"
    body = job("init-fails", ["python", "-c", f"open({str(marker)!r}, 'w')"], init=["false"])
    batch.create_namespaced_job(namespace, body)
    assert wait_job(batch, namespace, "init-fails") == "Failed"
    pod = pod_of(core, namespace, "init-fails")
    assert pod.status.init_container_statuses[0].state.terminated.exit_code == 1
    assert pod.status.container_statuses[0].state.waiting is not None
    assert not marker.exists()


def test_an_unknown_executable_cannot_run(
    kube_api: client.ApiClient, namespace: str, podrunner: dict[str, Any]
) -> None:
    batch, core = client.BatchV1Api(kube_api), client.CoreV1Api(kube_api)
    batch.create_namespaced_job(namespace, job("unknown", ["/usr/sbin/reboot"]))
    assert wait_job(batch, namespace, "unknown") == "Failed"
    term = pod_of(core, namespace, "unknown").status.container_statuses[0].state.terminated
    assert term.reason == "CreateContainerConfigError"
    assert "reboot" in term.message


def test_the_image_commands_map_to_the_projects_entry_points(
    kube_api: client.ApiClient, namespace: str, podrunner: dict[str, Any]
) -> None:
    if importlib.util.find_spec("orgpipeline_cli.main") is None:
        pytest.skip("the data plane's CLI (orgpipeline_cli.main) is not there yet")
    batch = client.BatchV1Api(kube_api)
    batch.create_namespaced_job(namespace, job("cli-help", ["orgpipeline", "--help"]))
    assert wait_job(batch, namespace, "cli-help") == "Complete"


def test_a_deleted_pod_is_killed_and_removed(
    kube_api: client.ApiClient, namespace: str, podrunner: dict[str, Any]
) -> None:
    core = client.CoreV1Api(kube_api)
    pod = {
        "metadata": {"name": "sleeper"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": "orgpipeline:dev", "command": ["sleep", "300"]}],
        },
    }
    core.create_namespaced_pod(namespace, pod)
    deadline = time.monotonic() + 30
    while core.read_namespaced_pod("sleeper", namespace).status.phase != "Running":
        assert time.monotonic() < deadline, "the pod never ran"
        time.sleep(0.3)
    core.delete_namespaced_pod("sleeper", namespace)
    deadline = time.monotonic() + 30
    while True:
        try:
            core.read_namespaced_pod("sleeper", namespace)
        except client.ApiException as exc:
            assert exc.status == 404
            break
        assert time.monotonic() < deadline, "the deleted pod was never removed"
        time.sleep(0.3)


def test_a_pod_whose_node_selector_does_not_fit_stays_pending(
    kube_api: client.ApiClient, namespace: str, podrunner: dict[str, Any]
) -> None:
    core = client.CoreV1Api(kube_api)
    container = {"name": "main", "image": "orgpipeline:dev", "command": ["true"]}
    for name, selector in (
        ("elsewhere", {"disktype": "ssd"}),
        ("here", {"orgpipeline.io/podrunner": "true"}),
    ):
        pod = {
            "metadata": {"name": name},
            "spec": {"restartPolicy": "Never", "nodeSelector": selector, "containers": [container]},
        }
        core.create_namespaced_pod(namespace, pod)
    deadline = time.monotonic() + 30
    while core.read_namespaced_pod("here", namespace).status.phase != "Succeeded":
        assert time.monotonic() < deadline, "the fitting pod never ran"
        time.sleep(0.3)
    other = core.read_namespaced_pod("elsewhere", namespace)
    assert other.spec.node_name is None
    assert other.status.phase == "Pending"
