#!/usr/bin/env python3
"""podrunner: a TEST-ONLY stand-in for the kubelet, for a machine without a container runtime.

It exists only because the local stack (hack/stack) has a real kube-apiserver and
kube-controller-manager but no kubelet and no container engine, so a Job's pods would stay Pending
forever. On a real cluster (kind, with `skaffold dev`) nothing here is used: the same end-to-end
test runs real pods from the image built by the Dockerfile.

What it does, like a kubelet on one node:
  * registers a Node (`podrunner-<host>-<id>`) and keeps its Lease renewed, so the node lifecycle
    controller sees it as healthy; deletes it on exit;
  * binds pending pods of the namespaces it serves (those labelled by the operator,
    `app.kubernetes.io/managed-by=orgpipeline-operator`, or given with --namespace) to that node
    through the pods/binding subresource, when their nodeSelector fits the node's labels
    (kubernetes.io/os=linux, orgpipeline.io/podrunner=true, kubernetes.io/hostname);
  * runs the pod's init containers one after the other, then its containers, as LOCAL PROCESSES of
    this project's own code: the image is ignored; `orgpipeline` / `orgpipeline-operator` map to
    the entry points of the virtual environment this script runs in, `python` to its interpreter,
    and a few shell basics (sh, true, false, echo, sleep) to the host's; anything else fails to
    start (reason ContainerCannotRun), as an image without that command would;
  * gives each process the pod's environment: env (value, secretKeyRef, configMapKeyRef, fieldRef)
    and envFrom (Secrets, ConfigMaps, prefixes, optional), with $(VAR) expansion;
  * materialises the mounted volumes (configMap, secret, emptyDir, downwardAPI labels/annotations)
    into a temp dir and rewrites mount paths in the command, its arguments and env values
    (/etc/orgpipeline/pipeline.yaml -> <tmp>/.../pipeline.yaml);
  * points the container's terminationMessagePath (and any env value naming it, such as
    ORGPIPELINE_TERMINATION_LOG=/dev/termination-log) at a temp file whose content becomes the
    termination message (FallbackToLogsOnError honoured);
  * writes the pod status back through pods/status: phase, conditions, startTime, init and
    container statuses with state.running / state.terminated (exitCode, reason, message,
    startedAt, finishedAt), so the real Job controller completes or fails the Job;
  * honours deletion: a pod being deleted has its processes killed and is then removed (grace 0),
    as the kubelet does.

Not a kubelet beyond that: no images, no isolation (processes run as this user, securityContext and
resources are not enforced), no probes, and containers are never restarted (restartPolicy
OnFailure/Always pods end Failed instead). Job pods with restartPolicy Never, as the operator makes
them, behave as on a real node.

Usage (the stack's environment exported: `eval "$(hack/stack env)"`):

    .venv/bin/python hack/podrunner.py                      # the operator's org namespaces
    .venv/bin/python hack/podrunner.py --namespace my-ns    # plus (or only, see --no-selector) my-ns

Container logs go to <workdir>/<namespace>/<pod>/<container>.log (there is no `kubectl logs`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from base64 import b64decode
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import kubernetes

log = logging.getLogger("podrunner")

DEFAULT_SELECTOR = "app.kubernetes.io/managed-by=orgpipeline-operator"
BIN_DIR = Path(sys.executable).parent
PROJECT_COMMANDS = {"orgpipeline", "orgpipeline-operator"}
HOST_COMMANDS = {"sh", "bash", "true", "false", "echo", "sleep", "cat", "env"}
PYTHON_COMMANDS = {"python", "python3", f"python3.{sys.version_info.minor}"}
IMAGE_DEFAULT_COMMAND = ["orgpipeline-operator"]  # the Dockerfile's CMD (no ENTRYPOINT)
MAX_MESSAGE = 4096  # the kubelet's limit per container
FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


class Api:
    """JSON in, JSON out, over the kubernetes client's connection pool (KUBECONFIG or in-cluster)."""

    def __init__(self, kubeconfig: str | None = None) -> None:
        config = kubernetes.client.Configuration()
        if kubeconfig or not os.environ.get("KUBERNETES_SERVICE_HOST"):
            kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=config)
        else:
            kubernetes.config.load_incluster_config(client_configuration=config)
        config.connection_pool_maxsize = 16
        self._api = kubernetes.client.ApiClient(config)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        url = path + ("?" + urlencode(query) if query else "")
        headers = {"Accept": "application/json", "Content-Type": content_type}
        m, u, h, b, _ = self._api.param_serialize(
            method, url, header_params=headers, body=body, auth_settings=["BearerToken"]
        )
        try:
            resp = self._api.call_api(m, u, h, b, _request_timeout=(5, 30))
        except Exception as exc:
            raise ApiError(0, str(exc)) from exc
        data = resp.read()
        payload = json.loads(data) if data else {}
        if resp.status >= 400:
            raise ApiError(resp.status, str(payload.get("message") or data[:500]))
        return payload

    def get(self, path: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", path)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def close(self) -> None:
        self._api.close()


def pod_path(ns: str, name: str, sub: str = "") -> str:
    return f"/api/v1/namespaces/{quote(ns)}/pods/{quote(name)}" + (f"/{sub}" if sub else "")


# --- the node ------------------------------------------------------------------------------------


class Node:
    """A Node object with a renewed Lease: what the controllers need to treat it as healthy."""

    def __init__(self, api: Api, name: str) -> None:
        self.api = api
        self.name = name
        self.uid = ""
        self.labels = {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "orgpipeline.io/podrunner": "true",
        }

    def fits(self, pod: dict[str, Any]) -> bool:
        """What a scheduler would check before placing the pod here: its nodeSelector."""
        wanted = pod["spec"].get("nodeSelector") or {}
        return all(self.labels.get(k) == v for k, v in wanted.items())

    def register(self) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": self.labels,
                "annotations": {"orgpipeline.io/podrunner": "test-only kubelet stand-in (hack/podrunner.py)"},
            },
            # Only the pod runner binds pods here; a real scheduler must not.
            "spec": {
                "taints": [{"key": "orgpipeline.io/podrunner", "value": "true", "effect": "NoSchedule"}]
            },
        }
        try:
            node = self.api.request("POST", "/api/v1/nodes", body)
        except ApiError as exc:
            if exc.status != 409:
                raise
            node = self.api.request("GET", f"/api/v1/nodes/{self.name}")
        self.uid = node["metadata"]["uid"]
        self.heartbeat(status=True)

    def _status(self) -> dict[str, Any]:
        t = now()
        capacity = {"cpu": "2", "memory": "8Gi", "pods": "110", "ephemeral-storage": "20Gi"}
        conditions = [
            {
                "type": "Ready",
                "status": "True",
                "reason": "PodRunnerReady",
                "message": "podrunner is running",
                "lastHeartbeatTime": t,
                "lastTransitionTime": t,
            },
        ]
        for type_ in ("MemoryPressure", "DiskPressure", "PIDPressure"):
            conditions.append(
                {
                    "type": type_,
                    "status": "False",
                    "reason": "PodRunnerOK",
                    "message": "",
                    "lastHeartbeatTime": t,
                    "lastTransitionTime": t,
                }
            )
        return {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": conditions,
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": self.name},
            ],
            "nodeInfo": {
                "kubeletVersion": "podrunner",
                "operatingSystem": "linux",
                "architecture": "amd64",
                "containerRuntimeVersion": "podrunner://local-processes",
                "osImage": "local",
                "kernelVersion": os.uname().release,
                "kubeProxyVersion": "",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
        }

    def heartbeat(self, status: bool = False) -> None:
        if status:
            self.api.request(
                "PATCH",
                f"/api/v1/nodes/{self.name}/status",
                {"status": self._status()},
                content_type="application/merge-patch+json",
            )
        lease_path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.name}"
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self.name,
                "namespace": "kube-node-lease",
                "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": self.name, "uid": self.uid}],
            },
            "spec": {"holderIdentity": self.name, "leaseDurationSeconds": 40, "renewTime": now_micro()},
        }
        self.api.request(
            "PATCH",
            lease_path,
            lease,
            {"fieldManager": "podrunner", "force": "true"},
            "application/apply-patch+yaml",
        )

    def delete(self) -> None:
        try:
            self.api.request("DELETE", f"/api/v1/nodes/{self.name}")
        except ApiError as exc:
            if exc.status != 404:
                log.warning("could not delete node %s: %s", self.name, exc)


# --- running one pod ----------------------------------------------------------------------------


class ContainerCannotRun(Exception):
    pass


@dataclass
class PodRun:
    """One pod being run: its processes, its temp dir, the statuses written so far."""

    api: Api
    pod: dict[str, Any]
    node: str
    workdir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    killed: threading.Event = field(default_factory=threading.Event)
    init_statuses: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ns(self) -> str:
        return str(self.pod["metadata"]["namespace"])

    @property
    def name(self) -> str:
        return str(self.pod["metadata"]["name"])

    @property
    def uid(self) -> str:
        return str(self.pod["metadata"]["uid"])

    # --- status -----------------------------------------------------------------------------

    def write_status(
        self, phase: str, ready: bool, message: str | None = None, reason: str | None = None
    ) -> None:
        t = now()
        initialized = all(
            s.get("state", {}).get("terminated", {}).get("exitCode") == 0 for s in self.init_statuses
        ) and len(self.init_statuses) == len(self.pod["spec"].get("initContainers") or [])
        conds = [
            {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": t},
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": t},
            {"type": "Initialized", "status": "True" if initialized else "False", "lastTransitionTime": t},
            {"type": "ContainersReady", "status": "True" if ready else "False", "lastTransitionTime": t},
            {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": t},
        ]
        if phase in ("Succeeded", "Failed"):
            for c in conds[3:]:
                c["reason"] = "PodCompleted"
        status: dict[str, Any] = {
            "phase": phase,
            "conditions": conds,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": self.pod.get("status", {}).get("startTime") or t,
            "qosClass": self.pod.get("status", {}).get("qosClass") or "Burstable",
            "containerStatuses": self.statuses,
        }
        if self.init_statuses:
            status["initContainerStatuses"] = self.init_statuses
        if message:
            status["message"] = message
        if reason:
            status["reason"] = reason
        self.pod.setdefault("status", {})["startTime"] = status["startTime"]
        try:
            self.api.request(
                "PATCH",
                pod_path(self.ns, self.name, "status"),
                {"status": status},
                content_type="application/merge-patch+json",
            )
        except ApiError as exc:
            if exc.status != 404:
                raise

    def _container_status(
        self, c: dict[str, Any], state: dict[str, Any], ready: bool = False
    ) -> dict[str, Any]:
        return {
            "name": c["name"],
            "image": c.get("image") or "local",
            "imageID": "podrunner://local-processes",
            "containerID": f"podrunner://{self.uid}/{c['name']}",
            "ready": ready,
            "started": "running" in state,
            "restartCount": 0,
            "state": state,
        }

    def _not_run(
        self,
        c: dict[str, Any],
        code: int,
        reason: str,
        message: str,
        started: str,
        finished: str | None = None,
    ) -> dict[str, Any]:
        """The status of a container that ended before its process ran (or could not start)."""
        terminated = {
            "exitCode": code,
            "reason": reason,
            "message": message[:MAX_MESSAGE],
            "startedAt": started,
            "finishedAt": finished or now(),
        }
        return self._container_status(c, {"terminated": terminated})

    # --- environment and volumes ------------------------------------------------------------------

    def _get(self, kind: str, name: str) -> dict[str, Any] | None:
        plural = {"Secret": "secrets", "ConfigMap": "configmaps"}[kind]
        return self.api.get(f"/api/v1/namespaces/{quote(self.ns)}/{plural}/{quote(name)}")

    def _data(self, kind: str, name: str, optional: bool) -> dict[str, str] | None:
        obj = self._get(kind, name)
        if obj is None:
            if optional:
                return None
            raise ContainerCannotRun(f"{kind.lower()} {name!r} not found")
        if kind == "Secret":
            return {k: b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
        out = dict(obj.get("data") or {})
        out.update({k: b64decode(v).decode() for k, v in (obj.get("binaryData") or {}).items()})
        return out

    def _field(self, path: str) -> str:
        meta = self.pod["metadata"]
        simple = {
            "metadata.name": meta.get("name"),
            "metadata.namespace": meta.get("namespace"),
            "metadata.uid": meta.get("uid"),
            "spec.nodeName": self.node,
            "spec.serviceAccountName": self.pod["spec"].get("serviceAccountName"),
            "status.hostIP": "127.0.0.1",
            "status.podIP": "127.0.0.1",
        }
        if path in simple:
            return str(simple[path] or "")
        m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
        if m:
            return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
        raise ContainerCannotRun(f"fieldRef {path!r} is not supported by the pod runner")

    def environment(self, c: dict[str, Any], rewrite: dict[str, str]) -> dict[str, str]:
        env: dict[str, str] = {}
        for src in c.get("envFrom") or []:
            prefix = src.get("prefix", "")
            for kind, key in (("Secret", "secretRef"), ("ConfigMap", "configMapRef")):
                if key in src:
                    ref = src[key]
                    data = self._data(kind, ref["name"], bool(ref.get("optional")))
                    env.update({prefix + k: v for k, v in (data or {}).items()})
        for var in c.get("env") or []:
            name = var["name"]
            if "valueFrom" not in var:
                env[name] = expand(var.get("value", ""), env)
                continue
            vf = var["valueFrom"]
            for kind, key in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
                if key in vf:
                    ref = vf[key]
                    data = self._data(kind, ref["name"], bool(ref.get("optional")))
                    if data is not None and ref["key"] in data:
                        env[name] = data[ref["key"]]
                    elif not ref.get("optional"):
                        raise ContainerCannotRun(f"key {ref['key']!r} not in {kind.lower()} {ref['name']!r}")
            if "fieldRef" in vf:
                env[name] = self._field(vf["fieldRef"]["fieldPath"])
            if "resourceFieldRef" in vf:
                env[name] = "0"
        return {k: rewrite_paths(v, rewrite) for k, v in env.items()}

    def volumes(self, root: Path) -> dict[str, Path]:
        """Each volume of the pod materialised under root; returns name -> local path."""
        out: dict[str, Path] = {}
        for vol in self.pod["spec"].get("volumes") or []:
            target = root / "volumes" / vol["name"]
            target.mkdir(parents=True, exist_ok=True)
            files: dict[str, str] = {}
            if "configMap" in vol or "secret" in vol:
                kind, spec = (
                    ("ConfigMap", vol["configMap"]) if "configMap" in vol else ("Secret", vol["secret"])
                )
                name = spec.get("name") or spec.get("secretName")
                data = self._data(kind, name, bool(spec.get("optional"))) or {}
                if spec.get("items"):
                    files = {i["path"]: data[i["key"]] for i in spec["items"] if i["key"] in data}
                else:
                    files = data
            elif "downwardAPI" in vol:
                for item in vol["downwardAPI"].get("items") or []:
                    path = item.get("fieldRef", {}).get("fieldPath", "")
                    if path in ("metadata.labels", "metadata.annotations"):
                        values = self.pod["metadata"].get(path.split(".")[1]) or {}
                        files[item["path"]] = "\n".join(f'{k}="{v}"' for k, v in sorted(values.items()))
                    elif path:
                        files[item["path"]] = self._field(path)
            elif "emptyDir" not in vol and "projected" not in vol:
                log.warning(
                    "%s/%s: volume %s of an unsupported type is an empty dir", self.ns, self.name, vol["name"]
                )
            for rel, content in files.items():
                f = target / rel
                f.parent.mkdir(parents=True, exist_ok=True)
                f.write_text(content)
            out[vol["name"]] = target
        return out

    # --- running ------------------------------------------------------------------------------

    def run(self) -> None:
        root = self.workdir / self.ns / self.name
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        spec = self.pod["spec"]
        init = spec.get("initContainers") or []
        containers = spec.get("containers") or []
        self.statuses = [
            self._container_status(
                c, {"waiting": {"reason": "PodInitializing" if init else "ContainerCreating"}}
            )
            for c in containers
        ]
        self.write_status("Pending", False)
        try:
            vols = self.volumes(root)
        except (ContainerCannotRun, ApiError) as exc:
            self._fail_all(containers, "CreateContainerConfigError", str(exc))
            return
        for c in init:
            status = self._run_container(c, root, vols)
            self.init_statuses.append(status)
            if status["state"]["terminated"]["exitCode"] != 0 or self.killed.is_set():
                self.statuses = [
                    self._container_status(x, {"waiting": {"reason": "PodInitializing"}}) for x in containers
                ]
                self.write_status(
                    "Failed",
                    False,
                    reason="InitContainerFailed",
                    message=f"init container {c['name']} failed",
                )
                return
            self.write_status("Pending", False)
        results: dict[str, dict[str, Any]] = {}
        threads = [
            threading.Thread(
                target=lambda c=c: results.__setitem__(
                    c["name"], self._run_container(c, root, vols, announce=True)
                )
            )
            for c in containers
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.statuses = [results[c["name"]] for c in containers]
        ok = all(s["state"]["terminated"]["exitCode"] == 0 for s in self.statuses)
        self.write_status("Succeeded" if ok and not self.killed.is_set() else "Failed", False)
        log.info("%s/%s: %s", self.ns, self.name, "Succeeded" if ok else "Failed")

    def _fail_all(self, containers: list[dict[str, Any]], reason: str, message: str) -> None:
        t = now()
        self.statuses = [self._not_run(c, 128, reason, message, t, t) for c in containers]
        self.write_status("Failed", False, reason=reason, message=message)
        log.info("%s/%s: Failed (%s: %s)", self.ns, self.name, reason, message)

    def _run_container(
        self, c: dict[str, Any], root: Path, vols: dict[str, Path], announce: bool = False
    ) -> dict[str, Any]:
        cdir = root / "containers" / c["name"]
        cdir.mkdir(parents=True, exist_ok=True)
        term_path = c.get("terminationMessagePath") or "/dev/termination-log"
        term_file = cdir / "termination-log"
        term_file.write_text("")
        rewrite = {term_path: str(term_file)}
        for m in c.get("volumeMounts") or []:
            local = vols.get(m["name"])
            if local is None:
                continue
            rewrite[m["mountPath"]] = str(local / m["subPath"]) if m.get("subPath") else str(local)
        log_file = self.workdir / self.ns / self.name / f"{c['name']}.log"
        started = now()
        try:
            env = self.environment(c, rewrite)
            argv = command_line(c, env, rewrite)
        except (ContainerCannotRun, ApiError) as exc:
            return self._not_run(c, 128, "CreateContainerConfigError", str(exc), started)
        base = {
            "PATH": f"{BIN_DIR}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(cdir),
            "HOSTNAME": self.name,
            "LANG": "C.UTF-8",
            "TMPDIR": rewrite.get("/tmp", str(cdir)),
            "PYTHONUNBUFFERED": "1",
        }
        with log_file.open("wb") as out:
            try:
                proc = subprocess.Popen(
                    argv,
                    env={**base, **env},
                    cwd=str(cdir),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            except OSError as exc:
                return self._not_run(c, 127, "ContainerCannotRun", str(exc), started)
            self.procs[c["name"]] = proc
            if announce:
                self.statuses = [
                    self._container_status(c, {"running": {"startedAt": started}}, ready=True)
                    if s["name"] == c["name"]
                    else s
                    for s in self.statuses
                ]
                if all("running" in s["state"] for s in self.statuses):
                    self.write_status("Running", True)
            log.info("%s/%s: container %s started: %s", self.ns, self.name, c["name"], " ".join(argv))
            code = proc.wait()
        self.procs.pop(c["name"], None)
        message = term_file.read_text(errors="replace")[:MAX_MESSAGE]
        if not message.strip() and code != 0 and c.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            tail = log_file.read_bytes().splitlines()[-FALLBACK_LOG_LINES:]
            message = b"\n".join(tail)[-FALLBACK_LOG_BYTES:].decode(errors="replace")
        if code < 0:  # killed by a signal, as a container runtime reports it
            code = 128 - code
        reason = "Completed" if code == 0 else "Error"
        terminated: dict[str, Any] = {
            "exitCode": code,
            "reason": reason,
            "startedAt": started,
            "finishedAt": now(),
            "containerID": f"podrunner://{self.uid}/{c['name']}",
        }
        if message:
            terminated["message"] = message
        log.info("%s/%s: container %s exited %d", self.ns, self.name, c["name"], code)
        return self._container_status(c, {"terminated": terminated})

    def kill(self) -> None:
        self.killed.set()
        for proc in list(self.procs.values()):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: known variables replaced, $$ escapes, unknown ones left as is."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", sub, value)


def rewrite_paths(value: str, rewrite: dict[str, str]) -> str:
    """A path under a mount point (or the termination message path) as the local path; longest first."""
    for src in sorted(rewrite, key=len, reverse=True):
        if value == src:
            return rewrite[src]
        if value.startswith(src.rstrip("/") + "/"):
            return rewrite[src] + value[len(src.rstrip("/")) :]
    return value


def command_line(c: dict[str, Any], env: dict[str, str], rewrite: dict[str, str]) -> list[str]:
    """The container's command line, with the image's command mapped to this machine's programs."""
    command = list(c.get("command") or [])
    args = list(c.get("args") or [])
    argv = command + args if command else (args or IMAGE_DEFAULT_COMMAND)
    argv = [rewrite_paths(expand(a, env), rewrite) for a in argv]
    program = argv[0]
    name = os.path.basename(program)
    if name in PROJECT_COMMANDS:
        local = BIN_DIR / name
        if not local.exists():
            raise ContainerCannotRun(f"{name} is not installed in {BIN_DIR}")
        argv[0] = str(local)
    elif name in PYTHON_COMMANDS:
        argv[0] = sys.executable
    elif name in HOST_COMMANDS and shutil.which(name):
        argv[0] = str(shutil.which(name))
    else:
        raise ContainerCannotRun(f"executable {program!r} is not one the pod runner can run")
    return argv


# --- the loop -----------------------------------------------------------------------------------


class Runner:
    def __init__(
        self, api: Api, node: Node, namespaces: set[str], selector: str | None, workdir: Path, parallel: int
    ) -> None:
        self.api = api
        self.node = node
        self.namespaces = namespaces
        self.selector = selector
        self.workdir = workdir
        self.slots = threading.Semaphore(parallel)
        self.running: dict[str, PodRun] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self._served: set[str] = set()
        self._served_at = 0.0

    def served(self) -> set[str]:
        if time.monotonic() - self._served_at > 2:
            names = set(self.namespaces)
            if self.selector:
                items = self.api.request("GET", "/api/v1/namespaces", query={"labelSelector": self.selector})
                names |= {
                    n["metadata"]["name"]
                    for n in items.get("items") or []
                    if not n["metadata"].get("deletionTimestamp")
                }
            self._served = names
            self._served_at = time.monotonic()
        return self._served

    def tick(self) -> None:
        served = self.served()
        if served:
            pending = (
                self.api.request(
                    "GET", "/api/v1/pods", query={"fieldSelector": "spec.nodeName=,status.phase=Pending"}
                ).get("items")
                or []
            )
            for pod in pending:
                meta = pod["metadata"]
                if (
                    meta["namespace"] in served
                    and not meta.get("deletionTimestamp")
                    and pod["spec"].get("schedulerName") in (None, "default-scheduler")
                    and self.node.fits(pod)
                ):
                    self.bind_and_start(pod)
        mine = (
            self.api.request(
                "GET", "/api/v1/pods", query={"fieldSelector": f"spec.nodeName={self.node.name}"}
            ).get("items")
            or []
        )
        for pod in mine:
            if pod["metadata"].get("deletionTimestamp"):
                self.finish_deletion(pod)

    def bind_and_start(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.node.name},
        }
        try:
            self.api.request("POST", pod_path(meta["namespace"], meta["name"], "binding"), binding)
        except ApiError as exc:
            if exc.status in (404, 409):  # gone, or bound by someone else meanwhile
                return
            raise
        log.info("%s/%s: bound to %s", meta["namespace"], meta["name"], self.node.name)
        run = PodRun(self.api, pod, self.node.name, self.workdir)
        with self.lock:
            self.running[meta["uid"]] = run
        threading.Thread(target=self._run, args=(run,), name=f"pod-{meta['name']}", daemon=True).start()

    def _run(self, run: PodRun) -> None:
        with self.slots:
            try:
                run.run()
            except Exception:
                log.exception("%s/%s: the pod runner failed", run.ns, run.name)
            finally:
                with self.lock:
                    self.running.pop(run.uid, None)

    def finish_deletion(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        with self.lock:
            run = self.running.get(meta["uid"])
        if run is not None:
            run.kill()
            return  # deleted on a later tick, once its processes are gone
        try:
            self.api.request(
                "DELETE",
                pod_path(meta["namespace"], meta["name"]),
                {"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}},
            )
            log.info("%s/%s: deleted", meta["namespace"], meta["name"])
        except ApiError as exc:
            if exc.status not in (404, 409):
                raise

    def loop(self, interval: float) -> None:
        last_beat = 0.0
        while not self.stop.is_set():
            try:
                if time.monotonic() - last_beat > 10:
                    self.node.heartbeat(status=time.monotonic() - last_beat > 50)
                    last_beat = time.monotonic()
                self.tick()
            except ApiError as exc:
                log.warning("API: %s", exc)
            self.stop.wait(interval)

    def shutdown(self) -> None:
        self.stop.set()
        with self.lock:
            runs = list(self.running.values())
        for run in runs:
            run.kill()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--namespace", "-n", action="append", default=[], help="serve this namespace too (repeatable)"
    )
    p.add_argument(
        "--selector",
        default=DEFAULT_SELECTOR,
        help=f"serve namespaces with these labels (default: {DEFAULT_SELECTOR})",
    )
    p.add_argument("--no-selector", action="store_true", help="serve only the --namespace ones")
    p.add_argument(
        "--node-name", default=None, help="name of the Node to register (default: podrunner-<host>-<id>)"
    )
    p.add_argument("--workdir", default=None, help="where volumes, termination logs and container logs go")
    p.add_argument("--kubeconfig", default=None, help="default: $KUBECONFIG")
    p.add_argument("--parallel", type=int, default=2, help="pods run at once (default 2)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between polls (default 1)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s podrunner %(levelname)s %(message)s")

    api = Api(args.kubeconfig)
    host = re.sub(r"[^a-z0-9-]", "-", socket.gethostname().lower())[:30].strip("-") or "host"
    node = Node(api, args.node_name or f"podrunner-{host}-{uuid.uuid4().hex[:6]}")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="podrunner-"))
    workdir.mkdir(parents=True, exist_ok=True)
    runner = Runner(
        api,
        node,
        set(args.namespace),
        None if args.no_selector else args.selector,
        workdir,
        max(1, args.parallel),
    )

    def on_signal(signum: int, _frame: Any) -> None:
        runner.shutdown()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    node.register()
    log.info(
        "node %s registered; serving %s; logs under %s",
        node.name,
        ", ".join(
            sorted(args.namespace) + ([f"namespaces with {args.selector}"] if not args.no_selector else [])
        ),
        workdir,
    )
    try:
        runner.loop(args.interval)
    finally:
        deadline = time.monotonic() + 10
        while runner.running and time.monotonic() < deadline:
            time.sleep(0.2)
        node.delete()
        api.close()
        log.info("node %s deleted; stopped", node.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
