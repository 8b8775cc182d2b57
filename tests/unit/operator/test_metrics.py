"""The per-org gauges as a scrape shows them: set from the status, kept last values, dropped with
the org, and served on a scrape restricted by name (as the benchmark and dashboards read them)."""

from __future__ import annotations

import prometheus_client
from orgpipeline_operator import metrics


def scrape(*names: str) -> str:
    registry = prometheus_client.REGISTRY.restricted_registry(list(names))
    return prometheus_client.generate_latest(registry).decode()


def test_the_org_gauges_follow_the_status_and_go_with_the_org() -> None:
    metrics.set_org(
        "u1", {"ready": True, "alerts": 2, "quality": 0.5, "lastSuccess": 100.0, "rows": {"inserted": 7}}
    )
    text = scrape("orgpipeline_org_ready", "orgpipeline_org_rows", "orgpipeline_org_quality_score")
    assert 'orgpipeline_org_ready{org="u1"} 1.0' in text
    assert 'orgpipeline_org_rows{kind="inserted",org="u1"} 7.0' in text
    assert 'orgpipeline_org_rows{kind="rejected",org="u1"} 0.0' in text
    assert 'orgpipeline_org_quality_score{org="u1"} 0.5' in text
    metrics.set_org("u1", {"ready": False, "alerts": 0})  # no quality in this status: the last stays
    text = scrape("orgpipeline_org_ready", "orgpipeline_org_quality_score", "orgpipeline_org_active_alerts")
    assert 'orgpipeline_org_ready{org="u1"} 0.0' in text
    assert 'orgpipeline_org_quality_score{org="u1"} 0.5' in text
    assert 'orgpipeline_org_active_alerts{org="u1"} 0.0' in text
    assert 'orgpipeline_org_last_success_timestamp_seconds{org="u1"} 100.0' in scrape(
        "orgpipeline_org_last_success_timestamp_seconds"
    )
    metrics.forget_org("u1")
    assert 'org="u1"' not in scrape("orgpipeline_org_ready", "orgpipeline_org_rows")


def test_the_tables_measured_storage_is_a_gauge_per_store_gone_with_the_org() -> None:
    from orgpipeline_api.run_report import RunResult
    from orgpipeline_api.v1alpha1_status import LastRun

    run = LastRun(job="j1", result=RunResult.Succeeded, postgres_bytes=81920, mongo_bytes=40960)
    metrics.set_org("s1", {"ready": True, "alerts": 0, "tables": {"orders": run}})
    text = scrape("orgpipeline_table_storage_bytes")
    assert 'orgpipeline_table_storage_bytes{org="s1",store="postgres",table="orders"} 81920.0' in text
    assert 'orgpipeline_table_storage_bytes{org="s1",store="mongodb",table="orders"} 40960.0' in text
    metrics.forget_org("s1")
    assert 'org="s1"' not in scrape("orgpipeline_table_storage_bytes")
