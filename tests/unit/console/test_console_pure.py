"""The console's pure parts: the orgs list's filter and pages, the masking of a rejected row's text,
a record's field-level diff, the anomaly band and the SVG chart."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from orgpipeline_api.anomaly import RunPoint
from orgpipeline_api.v1alpha1 import AnomalyDetection
from orgpipeline_console import data, kube, svg


def obj(name: str, ready: str = "True", alerts: int = 0) -> dict[str, object]:
    return {
        "metadata": {"name": name},
        "spec": {"orgId": name.removeprefix("org-"), "tier": "small", "tables": [{"name": "t"}]},
        "status": {
            "conditions": [{"type": "Ready", "status": ready, "reason": "X"}],
            "alerts": [{"severity": "critical" if i == 0 else "warning"} for i in range(alerts)],
            "qualityScore": 0.5,
        },
    }


def test_org_rows_come_from_the_status() -> None:
    row = kube.org_row(obj("org-7", "False", alerts=2))
    assert (row.name, row.org_id, row.tier, row.ready, row.alerts, row.critical, row.quality, row.tables) == (
        "org-7",
        "7",
        "small",
        "False",
        2,
        1,
        0.5,
        1,
    )
    bare = kube.org_row({"metadata": {"name": "org-8"}, "spec": {"orgId": "8"}})
    assert (bare.ready, bare.alerts, bare.quality) == ("Unknown", 0, None)


def test_the_orgs_filter_and_pages() -> None:
    rows = [kube.org_row(obj(f"org-{i}", "True" if i % 2 else "False", alerts=i % 3)) for i in range(120)]
    assert [r.name for r in kube.filter_orgs(rows, "org-11", "", "")] == ["org-11", "org-110", "org-111"] + [
        f"org-11{i}" for i in range(2, 10)
    ]
    assert all(r.ready == "False" for r in kube.filter_orgs(rows, "", "False", ""))
    assert all(r.alerts for r in kube.filter_orgs(rows, "", "", "yes"))
    assert not any(r.alerts for r in kube.filter_orgs(rows, "", "", "no"))
    page = kube.paginate(rows, 3, 50)
    assert (page.page, page.pages, page.total, len(page.rows)) == (3, 3, 120, 20)
    assert kube.paginate(rows, 99, 50).page == 3  # past the end: the last page
    assert kube.paginate([], 1, 50).pages == 1


def test_rejected_text_hides_pii_and_sensitive_fields() -> None:
    header = ("id", "email", "note", "salary")
    classes = {"id": "internal", "email": "pii", "note": "public", "salary": "sensitive"}
    assert data.masked_text('1,a@b.c,"x, y",100', header, classes) == '1,[REDACTED],"x, y",[REDACTED]'
    assert data.masked_text("1,,x,", header, classes) == "1,,x,"  # empty stays empty
    assert data.masked_text("1,a@b.c,x,9,extra", header, classes) == "1,[REDACTED],x,[REDACTED],extra"
    assert data.masked_text("1,a@b.c", None, classes) == "[REDACTED]"  # header unknown: hidden whole
    assert data.masked_text("1,a@b.c", None, {"id": "internal"}) == "1,a@b.c"


def test_the_history_diff_names_the_changed_fields_with_old_and_new() -> None:
    found = [
        {
            "version": 1,
            "change_type": "INSERT",
            "changed_fields": None,
            "v_a": "1",
            "v_b": "x",
            "trigger": None,
        },
        {"version": 2, "change_type": "UPDATE", "changed_fields": ["a"], "v_a": "2", "v_b": "x"},
        {"version": 3, "change_type": "UPDATE", "changed_fields": None, "v_a": "2", "v_b": "y"},
    ]
    out = data.diff_versions(found, ["a", "b"])
    assert out[0]["changes"] == [] and out[0]["values"] == {"a": "1", "b": "x"}
    assert out[1]["changes"] == [{"field": "a", "old": "1", "new": "2"}]
    assert out[2]["changes"] == [{"field": "b", "old": "x", "new": "y"}]


def test_the_anomaly_band_needs_history_and_detection_on() -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    history = [RunPoint(now - timedelta(days=i), 1000, 0.01, 0.98) for i in range(1, 8)]
    volume, quality = data.expected_bands(history, AnomalyDetection(), now)
    assert volume is not None and quality is not None
    assert volume.low < 1000 < volume.high and quality.low <= 0.98 <= quality.high <= 1.0
    assert data.expected_bands(history[:3], AnomalyDetection(), now) == (None, None)
    assert data.expected_bands(history, AnomalyDetection(enabled=False), now) == (None, None)


def test_the_chart_is_labelled_and_hatches_the_band() -> None:
    days = [f"2026-11-{d:02d}" for d in range(1, 31)]
    values: list[float | None] = [None] * 30
    values[3], values[4], values[10] = 0.9, 0.95, 0.5
    out = svg.chart("q", "Quality <of> orders", days, values, "line", 0.0, 1.0, (0.8, 1.0), percent=True)
    assert 'role="img"' in out and 'aria-labelledby="q-title q-desc"' in out
    assert '<title id="q-title">Quality &lt;of&gt; orders</title>' in out
    assert "lowest 50% on 2026-11-11" in out and "expected range of the next run 80% to 100% (hatched)" in out
    assert 'fill="url(#q-hatch)"' in out
    assert len(re.findall(r"<circle ", out)) == 3
    assert len(re.findall(r"<polyline ", out)) == 1  # 4th and 5th joined; the 11th alone is a point
    bars = svg.chart("v", "Rows", days, [float(i) for i in range(30)], "bars")
    assert len(re.findall(r'class="bar"', bars)) == 29 and "hatch)" not in bars.split("</defs>")[1]


def test_masking_takes_the_recorded_classification_and_any_newer_pii_of_the_manifest() -> None:
    recorded = {"orders": {"email": "pii", "note": "internal", "ssn": "sensitive"}}
    tspec = {
        "columns": [
            {"name": "email", "classification": "internal"},  # unmasked in the manifest: views still mask
            {"name": "note", "classification": "pii"},  # newly pii: masked before the views catch up
            {"name": "amount"},  # not recorded yet: the manifest's (default internal)
        ]
    }
    assert data.classifications(recorded, tspec, "orders") == {
        "email": "pii",
        "note": "pii",
        "ssn": "sensitive",
        "amount": "internal",
    }
    assert data.classifications(None, {"columns": [{"name": "e", "classification": "pii"}]}, "t") == {
        "e": "pii"
    }
