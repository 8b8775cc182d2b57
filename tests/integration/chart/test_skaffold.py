"""skaffold.yaml agrees with the Dockerfile and the chart (skaffold itself needs a Docker engine and a
cluster, which this machine lacks): the values it sets exist, the chart renders with them, and the
port-forward names the metrics Service the chart makes for that release."""

from __future__ import annotations

import re
import subprocess
from typing import Any

import yaml
from chart_release import CHART, REPO

SKAFFOLD = REPO / "skaffold.yaml"


def has_path(values: dict[str, Any], dotted: str) -> bool:
    node: Any = values
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def test_skaffold_builds_the_dockerfile_and_deploys_the_chart(stack: Any) -> None:
    config = yaml.safe_load(SKAFFOLD.read_text())
    assert re.fullmatch(r"skaffold/v4beta\d+", config["apiVersion"])
    (artifact,) = config["build"]["artifacts"]
    assert (REPO / artifact["context"] / artifact["docker"]["dockerfile"]).is_file()
    (release,) = config["deploy"]["helm"]["releases"]
    assert (REPO / release["chartPath"]).resolve() == CHART

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    templates = dict(release["setValueTemplates"])
    for profile in config.get("profiles", []):
        for patch in profile.get("patches", []):
            templates[patch["path"].rsplit("/", 1)[1]] = patch["value"]
    for key in templates:
        assert has_path(values, key), f"skaffold sets {key}, which the chart does not have"
    assert templates["image.repository"] == "{{.IMAGE_REPO_" + artifact["image"] + "}}"

    # the chart renders with what skaffold would pass (templates filled in as skaffold would)
    args = ["helm", "template", release["name"], str(CHART), "-n", release["namespace"]]
    for key, value in templates.items():
        filled = re.sub(r"\{\{\.IMAGE_REPO_\w+\}\}", "orgpipeline", str(value))
        filled = re.sub(r"\{\{\.IMAGE_TAG_\w+\}\}", "abc1234", filled)
        filled = re.sub(
            r"\{\{\.(ORGPIPELINE_\w+)\}\}",
            lambda m: {
                "ORGPIPELINE_POSTGRES_DSN": "postgresql://u:p@postgres:5432/db",
                "ORGPIPELINE_MONGO_URI": "mongodb://mongo:27017/",
                "ORGPIPELINE_S3_ENDPOINT": "http://s3:9000",
            }.get(m.group(1), "key"),
            filled,
        )
        args += [
            "--set-string" if key.endswith(("Dsn", "Uri", "Endpoint", "Key", "tag")) else "--set",
            f"{key}={filled}",
        ]
    out = subprocess.run(args, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    services = {
        (d["metadata"]["name"], d["metadata"]["namespace"]): d for d in docs if d["kind"] == "Service"
    }
    dep = next(d for d in docs if d["kind"] == "Deployment")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "orgpipeline:abc1234"
    assert {d["kind"] for d in docs} >= {"ServiceMonitor", "PrometheusRule"}  # with the monitoring profile

    (forward,) = config["portForward"]
    svc = services[(forward["resourceName"], forward["namespace"])]
    assert forward["resourceType"] == "service"
    assert forward["port"] == svc["spec"]["ports"][0]["port"]
