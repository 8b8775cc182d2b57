"""PostgreSQL's CPU per org while orgs are provisioned, by phase, as the number of orgs grows
(issue 25). Calls the operator's own `Databases` org after org (one thread, no Kubernetes): the
org's role, schemas and export audit (`provision`), its FerretDB database and grants
(`provision_mongo`), its reader role and the work in its schema (`provision_reader`), and prints
the stack's PostgreSQL CPU per org (backends that ended included) for every `--step` orgs.

Run old and new code in turn on the same stack to compare them at the same number of orgs (the
old code through PYTHONPATH pointing at an export of the older commit). The orgs stay (no
Kubernetes objects to clean them up): use a stack you can throw away (`hack/stack down --purge`).

    .venv/bin/python bench/provision_cost.py --orgs 500 --step 50
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psutil
from orgpipeline_api.v1alpha1 import OrgPipelineSpec
from orgpipeline_operator import database

sys.path.insert(0, str(Path(__file__).resolve().parent))
from operator_scale import manifest, servers, stack_dir


def postgres_cpu() -> float:
    """CPU seconds of the stack's PostgreSQL: its processes and the backends they reaped."""
    total = 0.0
    for p in servers(stack_dir()):
        with contextlib.suppress(psutil.Error):
            if p.name() == "postgres":
                t = p.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
    return total


def phase_calls(
    db: database.Databases, spec: OrgPipelineSpec, password: str
) -> list[tuple[str, Callable[[], object]]]:
    """The three provisioning calls of a new org, as the operator makes them on create."""
    tables = [t.name for t in spec.tables]
    return [
        ("provision", lambda: db.provision(spec.org_id, password)),
        ("mongo", lambda: db.provision_mongo(spec.org_id, tables, password)),
        ("reader", lambda: db.provision_reader(spec, password)),
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--orgs", type=int, default=200)
    ap.add_argument("--step", type=int, default=50)
    ap.add_argument("--tables", type=int, default=3)
    args = ap.parse_args()
    db = database.Databases(
        os.environ["ORGPIPELINE_OPERATOR_POSTGRES_DSN"],
        os.environ["ORGPIPELINE_OPERATOR_MONGO_URI"],
        "orgpipeline",
    )
    run = uuid.uuid4().hex[:4]
    phases = dict.fromkeys(("provision", "mongo", "reader"), 0.0)
    started = time.monotonic()
    try:
        for i in range(args.orgs):
            spec = OrgPipelineSpec.model_validate(manifest(run, i, args.tables)["spec"])
            steps = phase_calls(db, spec, database.generate_password())
            for phase, call in steps:
                before = postgres_cpu()
                call()
                phases[phase] += postgres_cpu() - before
            if (i + 1) % args.step == 0:
                per = ", ".join(f"{k} {v / args.step * 1000:.1f}" for k, v in phases.items())
                total = sum(phases.values()) / args.step * 1000
                wall = time.monotonic() - started
                print(
                    f"orgs {i + 1 - args.step}-{i + 1}: PostgreSQL CPU ms/org {total:.1f} ({per}),"
                    f" {wall:.1f}s"
                )
                phases = dict.fromkeys(phases, 0.0)
                started = time.monotonic()
    finally:
        db.close()
    print(f"run {run}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
