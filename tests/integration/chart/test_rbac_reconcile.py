"""The chart's RBAC is enough, and no wider than needed: the operator, run with nothing but the
chart's ServiceAccount token, completes a full reconcile of an OrgPipeline on the real API server:
create -> children -> Ready; run-now -> Job -> its pod run -> last run in the status; delete ->
clean-up and finalizer removed. Its own metrics prove it was this operator that did the work.

And the bounds (issue 22): the ServiceAccount reads no Secret cluster-wide and makes no Job outside
the org namespaces; it gets both in an org namespace only through the RoleBinding the operator makes
there, and the chart's admission policy refuses that RoleBinding (and any namespace change) anywhere
the operator did not make, so a stolen operator token cannot bind itself into kube-system.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_release import REPO, apply_release

_spec = importlib.util.spec_from_file_location("shipit_harness", REPO / "tests" / "e2e" / "harness.py")
assert _spec and _spec.loader
harness = importlib.util.module_from_spec(_spec)
sys.modules["shipit_harness"] = harness
_spec.loader.exec_module(harness)

BUCKET = "orgpipeline-chart-test"
POLICY_REFUSAL = "the orgpipeline operator may"
"""How every refusal of the chart's admission policy (operator-policy.yaml) starts."""


@pytest.fixture(scope="module")
def sa_kubeconfig(release: dict[str, str], stack: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The chart applied; a kubeconfig holding only a token of the chart's ServiceAccount."""
    ns, name = release["namespace"], release["release"]
    apply_release(ns, name)
    sa = f"{name}-orgpipeline-operator"
    token = harness.kubectl("-n", ns, "create", "token", sa, "--duration=1h").strip()
    admin = yaml.safe_load(Path(stack.kubeconfig).read_text())
    cluster = admin["clusters"][0]["cluster"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": cluster}],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [{"name": sa, "context": {"cluster": "local", "user": sa}}],
        "current-context": sa,
    }
    path = tmp_path_factory.mktemp("sa") / "operator.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.mark.parametrize(
    ("verb", "resource", "allowed"),
    [
        ("patch", "orgpipelines.orgpipeline.io", True),
        ("patch", "orgpipelines.orgpipeline.io/status", True),
        ("create", "cronjobs.batch", True),
        ("list", "jobs.batch", True),  # Kopf follows Jobs; which count as runs is ownership.py's call
        ("list", "pods", True),
        ("list", "namespaces", True),  # the start-up listing (operator/orgpipeline_operator/snapshot.py)
        ("list", "configmaps", True),
        ("watch", "configmaps", True),  # every child watched, metadata only (issue 24)
        ("watch", "namespaces", True),
        ("create", "events", True),
        ("create", "rolebindings.rbac.authorization.k8s.io", True),  # held to its namespaces by the policy
        # no Secret anywhere, no Job made, outside the namespaces the operator manages (issue 22)
        ("get", "secrets", False),
        ("list", "secrets", False),
        ("watch", "secrets", False),
        ("create", "secrets", False),
        ("patch", "secrets", False),
        ("create", "jobs.batch", False),
        # nothing wider than needed
        ("create", "orgpipelines.orgpipeline.io", False),
        ("delete", "orgpipelines.orgpipeline.io", False),
        ("create", "pods", False),
        ("watch", "pods", False),
        ("create", "pods/exec", False),
        ("delete", "secrets", False),
        ("delete", "jobs.batch", False),
        ("patch", "customresourcedefinitions.apiextensions.k8s.io", False),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io", False),
        ("create", "roles.rbac.authorization.k8s.io", False),
        ("delete", "rolebindings.rbac.authorization.k8s.io", False),
        ("bind", "clusterroles.rbac.authorization.k8s.io", False),  # only the tenant role, by name
        ("escalate", "clusterroles.rbac.authorization.k8s.io", False),
        ("patch", "deployments.apps", False),
        ("get", "nodes", False),
        ("delete", "configmaps", False),
        ("update", "events", False),
    ],
)
def test_the_service_account_can_do_what_the_operator_needs_and_no_more(
    sa_kubeconfig: str, verb: str, resource: str, allowed: bool
) -> None:
    answer = harness.kubectl(
        "auth", "can-i", verb, resource, "-A", kubeconfig=sa_kubeconfig, check=False
    ).strip()
    assert answer == ("yes" if allowed else "no"), f"can-i {verb} {resource}: {answer}"


def can_i(kubeconfig: str, verb: str, resource: str, *where: str) -> bool:
    answer = harness.kubectl("auth", "can-i", verb, resource, *where, kubeconfig=kubeconfig, check=False)
    assert answer.strip() in ("yes", "no"), answer
    return answer.strip() == "yes"


@pytest.mark.parametrize("namespace", ["kube-system", "default", "kube-public"])
def test_the_service_account_reads_no_secret_and_makes_no_job_in_namespaces_it_does_not_manage(
    sa_kubeconfig: str, namespace: str
) -> None:
    for verb in ("get", "list", "watch", "create", "patch"):
        assert not can_i(sa_kubeconfig, verb, "secrets", "-n", namespace), f"{verb} secrets in {namespace}"
    assert not can_i(sa_kubeconfig, "create", "jobs.batch", "-n", namespace)
    # and a real read with its token is refused by RBAC
    out = subprocess.run(
        ["kubectl", "--kubeconfig", sa_kubeconfig, "get", "secrets", "-n", namespace],
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0 and "forbidden" in out.stderr.lower(), out.stderr


def test_in_its_own_namespace_it_reads_secrets_by_name_only(
    sa_kubeconfig: str, release: dict[str, str]
) -> None:
    ns = release["namespace"]
    assert can_i(sa_kubeconfig, "get", "secrets", "-n", ns)  # the orgs' spec.source.credentialsSecret
    for verb in ("list", "watch", "create", "patch", "delete"):
        assert not can_i(sa_kubeconfig, verb, "secrets", "-n", ns), verb
    assert not can_i(sa_kubeconfig, "create", "jobs.batch", "-n", ns)


def _tenant_role(release: dict[str, str]) -> str:
    return f"{release['release']}-orgpipeline-operator-tenant"


def _account(release: dict[str, str]) -> str:
    return f"{release['namespace']}:{release['release']}-orgpipeline-operator"


def _bind(
    kubeconfig: str, namespace: str, role: str, account: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    """`kubectl create rolebinding` of `role` (a ClusterRole) to ServiceAccount `account`, as the operator."""
    name = f"escape-{uuid.uuid4().hex[:6]}"
    return subprocess.run(
        [
            "kubectl",
            "--kubeconfig",
            kubeconfig,
            "create",
            "rolebinding",
            name,
            "-n",
            namespace,
            f"--clusterrole={role}",
            f"--serviceaccount={account}",
            *extra,
        ],
        capture_output=True,
        text=True,
    )


@pytest.fixture(scope="module")
def policy_active(sa_kubeconfig: str, release: dict[str, str]) -> None:
    """The API server loads a new admission policy within a moment: wait (with dry runs) until it
    refuses the operator a RoleBinding in kube-system, so no real request below beats it."""

    def refusing() -> bool:
        out = _bind(
            sa_kubeconfig, "kube-system", _tenant_role(release), _account(release), "--dry-run=server"
        )
        return POLICY_REFUSAL in out.stderr

    harness.wait_for("the chart's admission policy to be in force", refusing, timeout=30)


@pytest.fixture()
def namespaces(release: dict[str, str]) -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    for ns in made:
        harness.kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found", check=False)


def _namespace(made: list[str], labels: dict[str, str], annotations: dict[str, str]) -> str:
    """A namespace made by the admin (not by the operator), labelled and annotated as given."""
    ns = f"org-escape{uuid.uuid4().hex[:6]}"
    meta = {"name": ns, "labels": labels, "annotations": annotations}
    harness.kubectl(
        "create", "-f", "-", input=yaml.safe_dump({"apiVersion": "v1", "kind": "Namespace", "metadata": meta})
    )
    made.append(ns)
    return ns


MANAGED = {"app.kubernetes.io/managed-by": "orgpipeline-operator"}
OWNED = {"orgpipeline.io/owner-uid": "0b7a7c47-0000-4000-8000-000000000000"}


@pytest.mark.usefixtures("policy_active")
@pytest.mark.parametrize("where", ["kube-system", "default", "unlabelled", "labelled-only", "annotated-only"])
def test_a_stolen_operator_token_cannot_bind_the_tenant_role_outside_its_namespaces(
    sa_kubeconfig: str, release: dict[str, str], namespaces: list[str], where: str
) -> None:
    ns = {
        "unlabelled": lambda: _namespace(namespaces, {}, {}),
        "labelled-only": lambda: _namespace(namespaces, MANAGED, {}),  # labels are anyone's to write
        "annotated-only": lambda: _namespace(namespaces, {}, OWNED),
    }.get(where, lambda: where)()
    before = harness.get_json("rolebindings", "-n", ns) or {}
    out = _bind(sa_kubeconfig, ns, _tenant_role(release), _account(release))
    assert out.returncode != 0, f"the operator bound its tenant role in {ns}"
    assert POLICY_REFUSAL in out.stderr and "only in the org namespaces it made" in out.stderr, out.stderr
    after = harness.get_json("rolebindings", "-n", ns) or {}
    assert [b["metadata"]["name"] for b in after.get("items", [])] == [
        b["metadata"]["name"] for b in before.get("items", [])
    ]
    # so its token still reads nothing there
    assert not can_i(sa_kubeconfig, "get", "secrets", "-n", ns)


@pytest.mark.usefixtures("policy_active")
def test_in_a_namespace_it_made_it_binds_the_tenant_role_to_itself_and_nothing_else(
    sa_kubeconfig: str, release: dict[str, str], namespaces: list[str]
) -> None:
    ns = _namespace(namespaces, MANAGED, OWNED)
    tenant, account = _tenant_role(release), _account(release)
    # the tenant role to another subject (a tenant's ServiceAccount, a user), or another role
    for role, subject in (
        (tenant, f"{ns}:orgpipeline-job"),
        (tenant, "kube-system:default"),
        (f"{release['release']}-orgpipeline-operator", account),  # its own role: RBAC would allow it
    ):
        out = _bind(sa_kubeconfig, ns, role, subject)
        assert out.returncode != 0, f"bound {role} to {subject}"
        assert POLICY_REFUSAL in out.stderr, out.stderr
    assert not (harness.get_json("rolebindings", "-n", ns) or {}).get("items")
    # what the operator does: allowed (a dry run: nothing is left behind)
    ok = _bind(sa_kubeconfig, ns, tenant, account, "--dry-run=server")
    assert ok.returncode == 0, ok.stderr


@pytest.mark.usefixtures("policy_active")
def test_a_stolen_operator_token_cannot_mark_or_make_a_namespace_as_its_own(
    sa_kubeconfig: str, release: dict[str, str], namespaces: list[str]
) -> None:
    foreign = _namespace(namespaces, {}, {})
    marks = {"metadata": {"labels": MANAGED, "annotations": OWNED}}
    for ns in ("kube-system", "default", foreign):
        out = subprocess.run(
            [
                "kubectl",
                "--kubeconfig",
                sa_kubeconfig,
                "patch",
                "namespace",
                ns,
                "--type=merge",
                "-p",
                json.dumps(marks),
            ],
            capture_output=True,
            text=True,
        )
        assert out.returncode != 0 and POLICY_REFUSAL in out.stderr, (ns, out.stderr)
        meta = (harness.get_json("namespace", ns) or {})["metadata"]
        assert "orgpipeline.io/owner-uid" not in (meta.get("annotations") or {}), ns
    for name in ("kube-evil", "orgpipeline-evil"):  # only org-* names, marked, may be created
        doc = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, **marks["metadata"]}}
        out = subprocess.run(
            ["kubectl", "--kubeconfig", sa_kubeconfig, "create", "-f", "-"],
            input=yaml.safe_dump(doc),
            capture_output=True,
            text=True,
        )
        assert out.returncode != 0 and POLICY_REFUSAL in out.stderr, (name, out.stderr)
        assert harness.get_json("namespace", name) is None
    # nor delete a namespace it did not make
    out = subprocess.run(
        ["kubectl", "--kubeconfig", sa_kubeconfig, "delete", "namespace", foreign, "--wait=false"],
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0 and POLICY_REFUSAL in out.stderr, out.stderr


@pytest.mark.usefixtures("policy_active")
def test_an_org_namespace_from_before_the_owner_annotation_is_still_the_operators_to_update(
    sa_kubeconfig: str, namespaces: list[str]
) -> None:
    """Upgrades: namespaces made by earlier releases carry the OrgPipeline as controller, not yet the
    owner-uid annotation, which the operator's first reconcile adds (a namespace update)."""
    name = f"org-legacy{uuid.uuid4().hex[:6]}"
    manifest = harness.pipeline_manifest(name, name.removeprefix("org-"), BUCKET)
    manifest["metadata"].setdefault("labels", {})[harness.TEST_LABEL] = "nobody"  # no operator takes it
    harness.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
    try:
        uid = harness.get_json("orgpipeline", name)["metadata"]["uid"]
        owner = {"apiVersion": "orgpipeline.io/v1alpha1", "kind": "OrgPipeline", "name": name, "uid": uid,
                 "controller": True, "blockOwnerDeletion": True}  # fmt: skip
        legacy = _namespace(namespaces, MANAGED, {})
        harness.kubectl("patch", "namespace", legacy, "--type=merge", "-p",
                        json.dumps({"metadata": {"ownerReferences": [owner]}}))  # fmt: skip
        marks = json.dumps({"metadata": {"annotations": OWNED}})
        out = subprocess.run(
            ["kubectl", "--kubeconfig", sa_kubeconfig, "patch", "namespace", legacy, "--type=merge",
             "-p", marks, "--dry-run=server"],
            capture_output=True,
            text=True,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        # the label alone (anyone can write it) is not enough
        bare = _namespace(namespaces, MANAGED, {})
        out = subprocess.run(
            ["kubectl", "--kubeconfig", sa_kubeconfig, "patch", "namespace", bare, "--type=merge",
             "-p", marks, "--dry-run=server"],
            capture_output=True,
            text=True,
        )  # fmt: skip
        assert out.returncode != 0 and POLICY_REFUSAL in out.stderr, out.stderr
    finally:
        harness.kubectl("delete", "orgpipeline", name, "--wait=false", "--ignore-not-found", check=False)


@pytest.fixture()
def org(stack: Any, s3: Any) -> Iterator[dict[str, str]]:
    org_id = f"rbac{uuid.uuid4().hex[:8]}"
    if not s3.bucket_exists(BUCKET):
        s3.make_bucket(BUCKET)
    sample = harness.SAMPLES / "orders_2026-11-01.csv"
    s3.fput_object(BUCKET, f"org-{org_id}/{sample.name}", str(sample))
    yield {"id": org_id, "name": f"org-{org_id}", "namespace": f"org-{org_id}"}
    harness.kubectl(
        "delete", "orgpipeline", f"org-{org_id}", "--ignore-not-found", "--wait=false", check=False
    )
    s3.remove_object(BUCKET, f"org-{org_id}/{sample.name}")
    harness.drop_org_data(stack.postgres_dsn, stack.mongo_uri, org_id)


def test_the_operator_with_the_charts_rbac_completes_a_full_reconcile(
    sa_kubeconfig: str, release: dict[str, str], org: dict[str, str], stack: Any, tmp_path: Path
) -> None:
    env = {
        **stack.as_environ(),
        "PATH": os.environ["PATH"],
        # as the chart's Deployment sets them (templates/deployment.yaml)
        "ORGPIPELINE_TENANT_ROLE": _tenant_role(release),
        "ORGPIPELINE_SERVICE_ACCOUNT": f"{release['release']}-orgpipeline-operator",
    }
    operator = harness.Operator(
        env,
        tmp_path / "operator.log",
        sa_kubeconfig,
        namespace=release["namespace"],
        label_selector=f"{harness.TEST_LABEL}={org['id']}",
    )
    runner = harness.PodRunner(env, tmp_path / "podrunner.log", [org["namespace"]], tmp_path / "pods")
    logs: list[str] = []
    try:
        operator.wait_ready()
        manifest = harness.pipeline_manifest(org["name"], org["id"], BUCKET, deletion_policy="Delete")
        harness.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))

        def ready() -> dict[str, Any] | None:
            obj = harness.get_json("orgpipeline", org["name"])
            return obj if harness.is_ready(obj) else None

        try:
            obj = harness.wait_for("the OrgPipeline to be Ready", ready, timeout=180)
        except AssertionError as exc:
            now = harness.get_json("orgpipeline", org["name"]) or {}
            raise AssertionError(
                f"{exc}; status: {now.get('status')}; operator log:\n{operator.output()}"
            ) from None
        assert obj["status"]["tableCount"] == 2
        cronjobs = harness.get_json("-n", org["namespace"], "cronjobs")
        assert sorted(c["metadata"]["name"] for c in cronjobs["items"]) == [
            "ingest-customers",
            "ingest-orders",
            "retention",
        ]
        assert operator.metric("orgpipeline_reconcile_total", result="ok") >= 1

        # Its Secrets and Jobs here come from the RoleBinding it made in the namespace, and only here.
        ns = org["namespace"]
        binding = harness.get_json("-n", ns, "rolebinding", "orgpipeline-operator")
        assert binding is not None
        assert binding["roleRef"]["name"] == _tenant_role(release)
        assert binding["subjects"] == [
            {
                "kind": "ServiceAccount",
                "name": f"{release['release']}-orgpipeline-operator",
                "namespace": release["namespace"],
            }
        ]
        assert can_i(sa_kubeconfig, "get", "secrets", "-n", ns)
        assert can_i(sa_kubeconfig, "create", "jobs.batch", "-n", ns)
        # list and watch too (issue 24: its Secrets are watched in each org namespace), never delete
        for verb in ("list", "watch"):
            assert can_i(sa_kubeconfig, verb, "secrets", "-n", ns), verb
        assert not can_i(sa_kubeconfig, "delete", "secrets", "-n", ns)
        assert not can_i(sa_kubeconfig, "list", "secrets", "-A")
        assert not can_i(sa_kubeconfig, "watch", "secrets", "-n", "default")
        assert not can_i(sa_kubeconfig, "create", "jobs.batch", "-n", "default")
        assert harness.get_json("-n", ns, "secret", "orgpipeline-credentials") is not None
        # ... so a deleted credentials Secret is made again within seconds, with the chart's RBAC.
        harness.kubectl("delete", "-n", ns, "secret", "orgpipeline-credentials")
        harness.wait_for(
            "the credentials Secret made again",
            lambda: harness.get_json("-n", ns, "secret", "orgpipeline-credentials"),
            timeout=15,
        )

        harness.kubectl("annotate", "orgpipeline", org["name"], "orgpipeline.io/run-now=orders")

        def ran() -> dict[str, Any] | None:
            run = harness.last_run(harness.get_json("orgpipeline", org["name"]), "orders")
            return run if run and run.get("result") in ("Succeeded", "Failed") else None

        # The Job the operator created from the CronJob's template ran (the pod runner), and the operator
        # read its pods' termination message back into the status. Whether the data plane succeeds is
        # the end-to-end test's business; this one proves the operator was allowed every step.
        run = harness.wait_for("the run-now Job's result in the status", ran, timeout=180)
        assert run["job"].startswith("ingest-orders-now-"), run
        assert run.get("runId") or run.get("error"), run
        assert operator.metric("orgpipeline_job_results_total") >= 1

        # Its access and the org's Secret deleted behind it while it is down: a restart (resume, with the
        # same token) makes the RoleBinding again first, then reads and writes the Secret through it.
        harness.kubectl("-n", ns, "delete", "rolebinding", "orgpipeline-operator")
        harness.kubectl("-n", ns, "delete", "secret", "orgpipeline-credentials")
        operator.stop()
        logs.append(operator.output())
        operator = harness.Operator(
            env,
            tmp_path / "operator-2.log",
            sa_kubeconfig,
            namespace=release["namespace"],
            label_selector=f"{harness.TEST_LABEL}={org['id']}",
        )
        operator.wait_ready()
        harness.wait_for(
            "the RoleBinding and the Secret made again on resume",
            lambda: (
                harness.get_json("-n", ns, "rolebinding", "orgpipeline-operator")
                and harness.get_json("-n", ns, "secret", "orgpipeline-credentials")
            ),
            timeout=120,
        )
        assert operator.metric("orgpipeline_reconcile_total", trigger="resume") >= 1

        # a table removed from the spec: its CronJob goes (update path, cronjobs delete). After the run,
        # not right after creation: the operator finds stale CronJobs in its watch cache, which a
        # removal within a second or two of the create can beat (reported; not an RBAC matter).
        manifest["spec"]["tables"] = [t for t in manifest["spec"]["tables"] if t["name"] == "orders"]
        harness.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))

        def customers_gone() -> bool:
            items = (harness.get_json("-n", org["namespace"], "cronjobs") or {}).get("items", [])
            return sorted(c["metadata"]["name"] for c in items) == ["ingest-orders", "retention"]

        harness.wait_for("the removed table's CronJob to go", customers_gone, timeout=120)
        harness.wait_for("Ready for the new generation", ready, timeout=120)

        harness.kubectl("delete", "orgpipeline", org["name"], "--wait=false")
        harness.wait_for(
            "the finalizer to let the OrgPipeline go",
            lambda: harness.get_json("orgpipeline", org["name"]) is None,
            timeout=180,
        )
        ns = harness.get_json("namespace", org["namespace"])
        assert ns is None or ns["metadata"].get("deletionTimestamp")
    finally:
        operator.stop()
        runner.stop()
    log = "\n".join([*logs, operator.output()])
    # A refusal, not a traceback's "line 403".
    denied = re.search(r"Forbidden|forbidden|(?<!line) 403\b", log)
    assert denied is None, f"the operator was refused something ({denied.group(0)!r}):\n{log}"
