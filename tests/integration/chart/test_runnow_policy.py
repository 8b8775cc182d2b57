"""The chart's run-now requester policy on the real API server: a requester is the user who asks.

Rendered as a cluster that serves ValidatingAdmissionPolicy renders it (`--api-versions`), applied,
then exercised with kubectl as the stack's admin and, by impersonation, as another user.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from chart_release import CHART, CI_VALUES
from orgpipeline_api import triggers

VAP = "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy"


def kubectl(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", *args], input=input, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture()
def policy(stack: Any) -> Iterator[str]:
    release = f"rnp-{uuid.uuid4().hex[:8]}"
    rendered = subprocess.run(
        ["helm", "template", release, str(CHART), "-f", str(CI_VALUES), "--api-versions", VAP],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    docs = [
        d
        for d in yaml.safe_load_all(rendered)
        if d and d["kind"].startswith("ValidatingAdmissionPolicy") and "run-now" in d["metadata"]["name"]
    ]
    assert {d["kind"] for d in docs} == {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
    done = kubectl(
        "apply", "--server-side", "--field-manager=helm-chart-test", "-f", "-", input=yaml.safe_dump_all(docs)
    )
    assert done.returncode == 0, done.stderr
    yield docs[0]["metadata"]["name"]
    kubectl(
        "delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", docs[0]["metadata"]["name"]
    )


def test_the_schema_lets_the_policy_be_turned_off(stack: Any) -> None:
    rendered = subprocess.run(
        ["helm", "template", "x", str(CHART), "-f", str(CI_VALUES), "--api-versions", VAP,
         "--set", "runNow.verifyRequester=false"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    assert "run-now-requester" not in rendered  # (the operator's own tenant-bounds policy stays)


def test_a_requester_must_be_the_user_who_sets_it(policy: str, unique_id: str) -> None:
    name = f"org-rnp{unique_id}"
    manifest = {
        "apiVersion": "orgpipeline.io/v1alpha1",
        "kind": "OrgPipeline",
        "metadata": {"name": name},
        "spec": {
            "orgId": f"rnp{unique_id}",
            "source": {"bucket": "uploads", "prefix": f"org-rnp{unique_id}/"},
            "tables": [
                {
                    "name": "orders",
                    "schedule": "0 0 * * *",
                    "filePattern": "orders_*.csv",
                    "businessKeys": ["order_id"],
                    "columns": [{"name": "order_id", "type": "text", "required": True}],
                }
            ],
        },
    }
    assert kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest)).returncode == 0
    admin = kubectl("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}").stdout.strip()
    key = triggers.ANNOTATION_RUN_NOW_REQUESTER
    try:
        deadline = time.monotonic() + 30  # the policy is compiled and bound asynchronously
        while True:
            forged = kubectl("annotate", "--overwrite", "orgpipeline", name, f"{key}=mallory")
            if forged.returncode != 0 or time.monotonic() > deadline:
                break
            kubectl("annotate", "orgpipeline", name, f"{key}-")
            time.sleep(0.5)
        assert forged.returncode != 0
        assert f"must name the user making the request ({admin}), not mallory" in forged.stderr
        assert kubectl("annotate", "--overwrite", "orgpipeline", name, f"{key}={admin}").returncode == 0
        # Another user's change leaves the waiting request's requester as it was: allowed.
        other = kubectl(
            "annotate",
            "--as=bob",
            "--as-group=system:masters",
            "--overwrite",
            "orgpipeline",
            name,
            "example.com/note=x",
        )
        assert other.returncode == 0, other.stderr
        assert (
            kubectl(
                "annotate",
                "--as=bob",
                "--as-group=system:masters",
                "--overwrite",
                "orgpipeline",
                name,
                f"{key}={admin}-x",
            ).returncode
            != 0
        )
        assert (
            kubectl(
                "annotate", "--as=bob", "--as-group=system:masters", "orgpipeline", name, f"{key}-"
            ).returncode
            == 0
        )  # served: removed
        assert (
            kubectl(
                "annotate",
                "--as=bob",
                "--as-group=system:masters",
                "--overwrite",
                "orgpipeline",
                name,
                f"{key}=bob",
            ).returncode
            == 0
        )
    finally:
        kubectl("delete", "orgpipeline", name, "--wait=false")
