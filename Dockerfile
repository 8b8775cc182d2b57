# syntax=docker/dockerfile:1.7
# One image for the operator and the jobs.
#
#   docker build -t orgpipeline:dev .
#   docker run --rm orgpipeline:dev                      # the operator (orgpipeline-operator)
#   docker run --rm orgpipeline:dev orgpipeline --help   # the data plane, as the CronJobs run it
#
# The operator's CronJobs set `command: [orgpipeline, run, -f, /etc/orgpipeline/pipeline.yaml, ...]`
# and the Helm chart's Deployment sets `command: [orgpipeline-operator]`; both are on PATH.
# No Docker engine on the development machine: tests/integration/packaging/test_wheel.py builds the
# same wheel, installs it into a clean virtual environment and runs these same commands, and
# hack/image.py builds this recipe without Docker (Debian bookworm's python3 from mmdebstrap instead
# of the python image, layers by umoci) for the local stack's real node (README, "Real node").

ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

# --- builder: build the wheel and install it with its dependencies into /opt/orgpipeline ----------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# The venv gets no pip of its own: the builder's pip installs into it (--python), so the final
# stage carries no installer.
RUN python -m venv --without-pip /opt/orgpipeline
COPY pyproject.toml README.md ./
COPY api/ api/
COPY jobs/ jobs/
COPY operator/ operator/
COPY cli/ cli/
COPY console/ console/
RUN pip wheel --no-deps --wheel-dir /wheels . \
 && pip --python /opt/orgpipeline/bin/python install /wheels/orgpipeline-*.whl \
 && /opt/orgpipeline/bin/orgpipeline --help >/dev/null \
 && /opt/orgpipeline/bin/orgpipeline-operator --help >/dev/null

# --- final: the interpreter, the venv, a non-root user; no compiler, no pip, no sources --------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="orgpipeline" \
      org.opencontainers.image.description="OrgPipelines operator and data-plane jobs (S3 CSV -> MongoDB -> PostgreSQL)" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 orgpipeline \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin orgpipeline \
 && python -m pip uninstall -y -q pip setuptools wheel
COPY --from=builder /opt/orgpipeline /opt/orgpipeline
ENV PATH=/opt/orgpipeline/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /tmp
USER 10001:10001
# 8080: /metrics and /readyz; 8081: /healthz (the operator's defaults); 8082: /s3/events, the
# file-arrival webhook (ORGPIPELINE_WEBHOOK_PORT, as the chart sets it; off by default)
EXPOSE 8080 8081 8082
CMD ["orgpipeline-operator"]
