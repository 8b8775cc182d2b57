"""An anomaly a run reports (VolumeAnomaly: rows far below the table's history) becomes a warning
alert in the status, a Warning Event and a metric, and clears with the next ordinary run."""

from __future__ import annotations

from typing import Any

from operator_helpers import Kubectl, Operator, apply_ready, get_pipeline, pipeline, wait_for
from operator_helpers import report_message as _report
from orgpipeline_operator import kube
from test_operator_runs import _finish_pod, _run_now

MESSAGE = "rows read 50 is outside the expected range 650 to 1,350 (from the last 6 successful runs)"


def test_a_reported_volume_anomaly_is_a_warning_alert_event_and_metric(
    operator: Operator, kubectl: Kubectl, api: kube.Kube, unique_id: str, cleanup_pipelines: list[str]
) -> None:
    org = f"anom{unique_id}"
    ns = name = f"org-{org}"
    apply_ready(kubectl, api, cleanup_pipelines, pipeline(org, ["orders"]))
    known: set[str] = set()
    before = _breach_count(operator)
    job = _run_now(kubectl, name, ns, "orders", known)
    anomaly = {"type": "VolumeAnomaly", "message": MESSAGE, "value": 50, "threshold": 650}
    _finish_pod(
        api,
        ns,
        job,
        0,
        _report(org, "orders", rowsRead=50, inserted=50, unchanged=0, updated=0, breaches=[anomaly]),
    )

    def alerted() -> dict[str, Any] | None:
        st = get_pipeline(api, name).get("status") or {}
        return st if st.get("alerts") else None

    st = wait_for(alerted, timeout=40, what="the VolumeAnomaly alert")
    assert [(a["type"], a["severity"], a["table"], a["message"]) for a in st["alerts"]] == [
        ("VolumeAnomaly", "warning", "orders", MESSAGE)
    ]

    def event() -> bool:
        items = kubectl.json(
            "get", "events", "-n", "default", "--field-selector", f"involvedObject.name={name}"
        )
        return any(e["reason"] == "VolumeAnomaly" and e["type"] == "Warning" for e in items["items"])

    wait_for(event, what="the VolumeAnomaly Event")
    assert _breach_count(operator) == before + 1

    job2 = _run_now(kubectl, name, ns, "orders", known)
    _finish_pod(api, ns, job2, 0, _report(org, "orders"))
    wait_for(lambda: get_pipeline(api, name)["status"]["activeAlerts"] == 0, timeout=40, what="alert cleared")


def _breach_count(operator: Operator) -> float:
    for line in operator.metrics().splitlines():
        if line.startswith('orgpipeline_run_breaches_total{type="VolumeAnomaly"} '):
            return float(line.split()[-1])
    return 0.0
