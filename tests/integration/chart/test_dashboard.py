"""The chart's Grafana dashboard and PrometheusRule speak valid PromQL about the operator's metrics.

Every expression (dashboard panels, its variables, every alert rule) goes through Prometheus' own
PromQL parser (`promql-check`, built by hack/stack from github.com/prometheus/prometheus, the parser
promtool uses), which also names the metrics each selects: all must be metrics the operator exports.
"""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

from chart_release import CHART
from test_chart import one, render

DASHBOARD = CHART / "dashboards" / "orgpipeline.json"
# What Grafana substitutes before a query reaches Prometheus.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1d", "$org": ".*"}


def exported_metrics() -> set[str]:
    """The sample names the operator's registry exposes (counters with _total, histograms with
    _bucket/_sum/_count), whether or not a series has been set yet."""
    import prometheus_client
    from orgpipeline_operator import metrics  # noqa: F401 - registers the operator's metrics

    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
    return {
        family.name + suffix
        for family in prometheus_client.REGISTRY.collect()
        if family.name.startswith("orgpipeline_")
        for suffix in suffixes.get(family.type, [""])
    }


def promql_check(exprs: list[str]) -> list[dict[str, Any]]:
    proc = subprocess.run(
        ["promql-check"], input=json.dumps(exprs), capture_output=True, text=True, check=False, timeout=60
    )
    assert proc.returncode in (0, 1), proc.stderr
    return list(json.loads(proc.stdout))


def grafana_to_promql(expr: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


def dashboard_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and of every query variable (`label_values(m, l)`:
    its selector)."""
    out = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets") or []:
            out.append((f"panel {panel['title']!r}", grafana_to_promql(target["expr"])))
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
            assert match, f"variable {var['name']}: {query}"
            out.append((f"variable {var['name']}", grafana_to_promql(match.group(1))))
    return out


def test_every_dashboard_and_rule_expression_parses_and_names_exported_metrics(stack: Any) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = dashboard_queries(dashboard)
    docs = render("metrics.prometheusRule.enabled=true")
    rules = [r for g in one(docs, "PrometheusRule")["spec"]["groups"] for r in g["rules"]]
    queries += [(f"rule {r['alert']}", r["expr"]) for r in rules]
    assert len(queries) > 25

    exported = exported_metrics()
    results = promql_check([q for _, q in queries])
    problems = []
    for (where, _), result in zip(queries, results, strict=True):
        if result["error"]:
            problems.append(f"{where}: {result['error']}")
        elif not result["metrics"]:
            problems.append(f"{where}: selects no metric")
        problems += [f"{where}: {m} is not exported" for m in result["metrics"] if m not in exported]
    assert not problems, "\n".join(problems)


def test_the_checker_refuses_what_promtool_refuses(stack: Any) -> None:
    bad, unknown = promql_check(["sum(rate(orgpipeline_orgs[5m])", 'orgpipeline_no_such_metric{org="a"}'])
    assert "unclosed left parenthesis" in bad["error"]
    assert unknown["error"] == "" and unknown["metrics"] == ["orgpipeline_no_such_metric"]
    assert "orgpipeline_no_such_metric" not in exported_metrics()


def test_the_dashboard_covers_quality_runs_rows_failures_alerts_and_retention() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = " ".join(e for _, e in dashboard_queries(dashboard))
    for metric in (
        "orgpipeline_org_quality_score",
        "orgpipeline_table_quality_score",
        "orgpipeline_table_runs_total",
        "orgpipeline_table_rows_read_total",
        "orgpipeline_table_run_duration_seconds_bucket",
        "orgpipeline_org_active_alerts",
        "orgpipeline_retention_versions_deactivated_total",
        "orgpipeline_table_storage_bytes",
    ):
        assert metric in exprs
    assert "delta(orgpipeline_table_storage_bytes" in exprs  # growth from the measured sizes
    assert {v["name"] for v in dashboard["templating"]["list"]} == {"datasource", "org"}


def test_the_dashboard_configmap_is_labelled_for_grafanas_sidecar(stack: Any) -> None:
    assert not [d for d in render() if d["kind"] == "ConfigMap"]  # off by default
    docs = render("grafana.dashboard.enabled=true", "grafana.dashboard.namespace=monitoring")
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap"]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "monitoring"
    assert json.loads(cm["data"]["orgpipelines.json"]) == json.loads(DASHBOARD.read_text())
