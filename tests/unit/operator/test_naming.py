"""Run-now Job names: deterministic per request, so a repeated handler run makes no second Job."""

from __future__ import annotations

import re
from typing import Any

from orgpipeline_operator import naming

DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _meta(*entries: dict[str, Any], rv: str = "100") -> dict[str, Any]:
    return {"resourceVersion": rv, "managedFields": list(entries)}


def _entry(manager: str, time: str, *annotations: str) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "f:metadata": {"f:annotations": {".": {}, **{f"f:{a}": {} for a in annotations}}}
    }
    return {"manager": manager, "operation": "Update", "time": time, "fieldsV1": fields}


def test_same_request_same_name_new_time_new_name() -> None:
    name = naming.manual_job_name("uid-1", "orders", "2024-05-01T10:00:00Z")
    assert name == naming.manual_job_name("uid-1", "orders", "2024-05-01T10:00:00Z")
    assert name.startswith("ingest-orders-now-")
    assert name != naming.manual_job_name("uid-1", "orders", "2024-05-01T10:00:01Z")
    assert name != naming.manual_job_name("uid-2", "orders", "2024-05-01T10:00:00Z")
    other = naming.manual_job_name("uid-1", "customers", "2024-05-01T10:00:00Z")
    assert other.startswith("ingest-customers-now-") and other[-10:] != name[-10:]


def test_name_is_a_dns_label_within_63_for_the_longest_table() -> None:
    table = "a" + "b_" * 19 + "c"  # 40 characters, the most TABLE_NAME_PATTERN allows
    name = naming.manual_job_name("uid-1", table, "2024-05-01T10:00:00Z")
    assert len(name) <= 63 and DNS_1123_LABEL.match(name), name
    assert name.startswith(naming.manual_job_prefix(table))


def test_requested_at_is_the_time_the_annotation_was_written() -> None:
    annotated = _entry("kubectl-annotate", "2024-05-01T10:00:00Z", naming.ANNOTATION_RUN_NOW)
    status = {"manager": "orgpipeline-operator", "operation": "Update", "time": "2024-05-01T10:00:05Z",
              "subresource": "status", "fieldsV1": {"f:status": {}}}  # fmt: skip
    kopf = _entry("kopf", "2024-05-01T10:00:03Z", "kopf.zalando.org/last-handled-configuration")
    meta = _meta(annotated, status, kopf)
    assert naming.run_now_requested_at(meta) == "2024-05-01T10:00:00Z"
    # The same request seen again after other writes (another resourceVersion): the same time.
    assert naming.run_now_requested_at({**meta, "resourceVersion": "200"}) == "2024-05-01T10:00:00Z"
    # Re-annotated (--overwrite): the entry's time moves on.
    again = _entry("kubectl-annotate", "2024-05-01T10:07:00Z", naming.ANNOTATION_RUN_NOW)
    assert naming.run_now_requested_at(_meta(again, status, kopf)) == "2024-05-01T10:07:00Z"


def test_requested_at_without_managed_fields_is_the_resource_version() -> None:
    assert naming.run_now_requested_at({"resourceVersion": "42"}) == "rv:42"
    other = _entry("kopf", "2024-05-01T10:00:03Z", "kopf.zalando.org/last-handled-configuration")
    assert naming.run_now_requested_at(_meta(other, rv="43")) == "rv:43"


def test_run_now_manager_is_the_field_manager_that_wrote_the_annotation() -> None:
    older = _entry("my-script", "2024-05-01T09:00:00Z", naming.ANNOTATION_RUN_NOW)
    annotated = _entry("kubectl-annotate", "2024-05-01T10:00:00Z", naming.ANNOTATION_RUN_NOW)
    kopf = _entry("kopf", "2024-05-01T10:00:03Z", "kopf.zalando.org/last-handled-configuration")
    assert naming.run_now_manager(_meta(older, annotated, kopf)) == "kubectl-annotate"
    assert naming.run_now_manager(_meta(kopf)) is None
