"""The image, without a Docker engine: build the wheel the Dockerfile builds, install it the way the
Dockerfile installs it (a fresh venv without pip, the builder's pip with --python), and run the very
commands the image runs, from outside the source tree, against the real servers.

Also checks that the Dockerfile still says what this test mirrors (multi-stage, pinned base of this
Python, non-root, no build tools or pip in the final stage, the same build commands and CMD).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[3]
DOCKERFILE = REPO / "Dockerfile"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`pip wheel --no-deps` then `pip --python <venv> install <wheel>`: the Dockerfile's builder stage."""
    tmp = tmp_path_factory.mktemp("image")
    wheels = tmp / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", str(wheels), str(REPO)],
        check=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("orgpipeline-*.whl")
    venv = tmp / "opt-orgpipeline"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q", str(wheel)],
        check=True,
        timeout=600,
    )
    workdir = tmp / "workdir"  # the image's WORKDIR: nothing of the source tree around
    workdir.mkdir()
    return {"wheel": wheel, "venv": venv, "bin": venv / "bin", "workdir": workdir}


def image_env(installed: dict[str, Path], **extra: str) -> dict[str, str]:
    """The image's environment: its PATH first, no PYTHONPATH, nothing of the dev venv."""
    env = {
        "PATH": f"{installed['bin']}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(installed["workdir"]),
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    env.update(extra)
    return env


def stages(dockerfile: str) -> list[list[str]]:
    """The Dockerfile's instructions (continuations joined, comments dropped), per stage."""
    lines, current = [], ""
    for raw in dockerfile.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        current += " " + line.rstrip("\\").strip() if current else line.rstrip("\\").strip()
        if not line.endswith("\\"):
            lines.append(current)
            current = ""
    out: list[list[str]] = []
    for line in lines:
        if line.upper().startswith("FROM "):
            out.append([])
        if out:
            out[-1].append(line)
    return out


def test_dockerfile_is_what_this_test_mirrors() -> None:
    text = DOCKERFILE.read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M)
    assert base, "the base image is one ARG, used by both stages"
    m = re.fullmatch(r"python:(\d+)\.(\d+)\.(\d+)-slim-bookworm", base.group(1))
    assert m, f"the base image must be a pinned slim tag, not {base.group(1)}"
    assert (int(m.group(1)), int(m.group(2))) == sys.version_info[:2], (
        "the image's Python is the one tested here"
    )

    builder, final = stages(text)
    assert builder[0] == "FROM ${PYTHON_IMAGE} AS builder"
    assert final[0] == "FROM ${PYTHON_IMAGE}"
    build = " ".join(builder)
    assert "python -m venv --without-pip /opt/orgpipeline" in build
    assert "pip wheel --no-deps --wheel-dir /wheels ." in build
    assert "pip --python /opt/orgpipeline/bin/python install /wheels/orgpipeline-*.whl" in build
    # every package folder of the wheel is copied into the build context
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"][
        "wheel"
    ]["packages"]
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    for folder in {p.split("/")[0] for p in packages}:
        assert f"COPY {folder}/ {folder}/" in builder, folder
        assert f"!{folder}/" in ignore, folder

    run = " ".join(final)
    assert "COPY --from=builder /opt/orgpipeline /opt/orgpipeline" in final
    assert "USER 10001:10001" in final
    assert "useradd --system --uid 10001" in run
    assert "pip uninstall -y -q pip setuptools wheel" in run
    for tool in ("apt-get", "gcc", "build-essential", "pip install", "COPY . "):
        assert tool not in run, f"{tool!r} in the final stage"
    assert final[-1] == 'CMD ["orgpipeline-operator"]'
    assert "PATH=/opt/orgpipeline/bin:$PATH" in run


def test_the_wheel_holds_the_packages_and_entry_points(installed: dict[str, Path]) -> None:
    names = zipfile.ZipFile(installed["wheel"]).namelist()
    for package in ("orgpipeline_api", "orgpipeline_jobs", "orgpipeline_operator", "orgpipeline_cli"):
        assert f"{package}/__init__.py" in names
        assert f"{package}/py.typed" in names
    assert not [n for n in names if n.startswith(("tests/", "hack/", "charts/"))]
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(installed["wheel"]).read(entry_points).decode()
    assert "orgpipeline = orgpipeline_cli.main:run" in text
    assert "orgpipeline-operator = orgpipeline_operator.main:run" in text


def test_orgpipeline_help_runs_from_the_installed_wheel(installed: dict[str, Path]) -> None:
    out = subprocess.run(
        ["orgpipeline", "--help"],
        env=image_env(installed),
        cwd=installed["workdir"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    for command in ("ingest", "load", "run"):
        assert command in out.stdout


def test_the_operator_refuses_to_start_without_its_settings(installed: dict[str, Path]) -> None:
    out = subprocess.run(
        ["orgpipeline-operator"],
        env=image_env(installed),
        cwd=installed["workdir"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "ORGPIPELINE_POSTGRES_DSN is required" in out.stderr
    assert "Traceback" not in out.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


@pytest.fixture()
def operator_proc(installed: dict[str, Path], stack: Any) -> Iterator[dict[str, Any]]:
    metrics, health = free_port(), free_port()
    env = image_env(
        installed,
        **stack.as_environ(),
        ORGPIPELINE_METRICS_PORT=str(metrics),
        ORGPIPELINE_HEALTH_PORT=str(health),
        ORGPIPELINE_NAMESPACE="default",
        # reconcile nothing: the probes are the point, and other tests' OrgPipelines share the server
        ORGPIPELINE_LABEL_SELECTOR="orgpipeline.io/packaging-test=none",
    )
    log = installed["workdir"] / "operator.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            ["orgpipeline-operator"], env=env, cwd=installed["workdir"], stdout=out, stderr=subprocess.STDOUT
        )
        try:
            yield {"proc": proc, "metrics": metrics, "health": health, "log": log}
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_the_operator_entry_point_serves_its_probes(operator_proc: dict[str, Any]) -> None:
    """What the chart's probes ask: /healthz (Kopf) and /readyz + /metrics on the metrics port."""
    deadline = time.monotonic() + 60
    ready = live = 0
    while time.monotonic() < deadline and (ready, live) != (200, 200):
        assert operator_proc["proc"].poll() is None, operator_proc["log"].read_text()
        ready = http_status(f"http://127.0.0.1:{operator_proc['metrics']}/readyz")
        live = http_status(f"http://127.0.0.1:{operator_proc['health']}/healthz")
        time.sleep(0.5)
    assert (ready, live) == (200, 200), operator_proc["log"].read_text()
    with urllib.request.urlopen(f"http://127.0.0.1:{operator_proc['metrics']}/metrics", timeout=5) as resp:
        body = resp.read().decode()
    assert "orgpipeline_reconcile_total" in body or "orgpipeline_api_requests_total" in body


def test_orgpipeline_run_from_the_installed_wheel_against_the_real_servers(
    installed: dict[str, Path], stack: Any, s3: Any, tmp_path: Path
) -> None:
    """The CronJob's command, `orgpipeline run -f pipeline.yaml --table orders -o json`, end to end."""
    import yaml
    from orgpipeline_operator.database import Databases

    org = f"pkg{uuid.uuid4().hex[:8]}"
    bucket = "orgpipeline-packaging"
    if not s3.bucket_exists(bucket):
        s3.make_bucket(bucket)
    manifest = yaml.safe_load((REPO / "examples" / "org-123.yaml").read_text())
    manifest["metadata"]["name"] = f"org-{org}"
    manifest["spec"]["orgId"] = org
    manifest["spec"]["source"] = {"bucket": bucket, "prefix": f"org-{org}/"}
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(manifest))
    sample = REPO / "examples" / "data" / "org-123" / "orders_2026-11-01.csv"
    s3.fput_object(bucket, f"org-{org}/{sample.name}", str(sample))
    term = tmp_path / "termination-log"
    try:
        out = subprocess.run(
            ["orgpipeline", "run", "-f", str(path), "--table", "orders", "-o", "json"],
            env=image_env(installed, **stack.as_environ(), ORGPIPELINE_TERMINATION_LOG=str(term)),
            cwd=installed["workdir"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        result = json.loads(out.stdout)
        assert result["result"] == "Succeeded"
        assert (result["rows_read"], result["inserted"], result["rejected"]) == (40, 40, 0)
        compact = json.loads(term.read_text())  # what the operator reads back
        assert (compact["result"], compact["rowsRead"], compact["qualityScore"]) == ("Succeeded", 40, 1.0)
    finally:
        s3.remove_object(bucket, f"org-{org}/{sample.name}")
        db = Databases(
            stack.postgres_dsn, stack.mongo_uri, os.environ.get("ORGPIPELINE_MONGO_DB", "orgpipeline")
        )
        try:
            db.drop_collections(org)
            db.drop_postgres(org)
        finally:
            db.close()
