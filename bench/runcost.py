#!/usr/bin/env python3
"""A run's fixed cost (issue 25): `orgpipeline run` as a CronJob's pod runs it, interpreter included.

    eval "$(hack/stack env)"; .venv/bin/python bench/runcost.py [--trials 7] [--rows 1000] [--profile]

Provisions one org with the operator's own code (`Databases.provision` / `provision_mongo`, the
org's Secret from `Runtime.credentials`), so every run logs in as the org, as a scheduled Job does.
Then, each as a child process `orgpipeline run -f manifest --table orders -o json` with the org's
environment, timed from fork to exit (process wall, what the pod's lifetime is):

  - the first run (a --rows file, the org's first: schema, view and bookkeeping tables made);
  - a run with nothing new, --trials times (median);
  - a run with one new --rows file of new keys, --trials times (median);

The project's modules are compiled first (`compile_trees`), as pip compiles them into the image;
`--no-bytecode` measures uncompiled trees (every run compiling them). Beside it: the run's own
`duration_seconds` (in-process, from its start to its result) and the time
`python -X importtime` gives the command's imports. `--profile` also runs one nothing-new run
in this process under cProfile and prints where its time went and its round trips: PostgreSQL
(`Connection.wait` calls: one per exchange with the server), MongoDB commands (pymongo's command
monitoring) and S3 requests (`source.s3.Client._request`, in any thread).
A script that prints figures, not a test.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import run_process  # noqa: E402
from dataplane import generate, manifest, stack_env  # noqa: E402

CLI = str(Path(sys.executable).parent / "orgpipeline")


class Org:
    """One org provisioned as the operator provisions it; `env` is its Job's environment."""

    def __init__(self, env: dict[str, str], org_id: str, bucket: str, work: Path) -> None:
        from orgpipeline_operator import database, operator_settings, runtime

        op_env = {
            **env,
            "ORGPIPELINE_POSTGRES_DSN": env.get("ORGPIPELINE_OPERATOR_POSTGRES_DSN")
            or env["ORGPIPELINE_POSTGRES_DSN"],
            "ORGPIPELINE_MONGO_URI": env.get("ORGPIPELINE_OPERATOR_MONGO_URI")
            or env["ORGPIPELINE_MONGO_URI"],
            "ORGPIPELINE_NAMESPACE": "default",
        }
        settings = operator_settings.from_env(op_env)
        self.db = database.Databases(settings.postgres_dsn, settings.mongo_uri, settings.mongo_db)
        self.rt = runtime.Runtime(settings, cast(Any, None), self.db)
        self.org_id, self.bucket, self.work = org_id, bucket, work
        self.manifest = work / "org.yaml"
        self.manifest.write_text(manifest(org_id, bucket))
        from orgpipeline_api.v1alpha1 import load_manifest

        _, spec = load_manifest(self.manifest)
        password = database.generate_password()
        self.db.provision(org_id, password)
        self.db.provision_mongo(org_id, ["orders"], password)
        keys = (env["ORGPIPELINE_S3_ACCESS_KEY"], env["ORGPIPELINE_S3_SECRET_KEY"])
        creds = self.rt.credentials(spec, password, keys).env()
        base = {k: v for k, v in env.items() if not k.startswith("ORGPIPELINE_")}
        self.env = {**base, **creds, "ORGPIPELINE_TRIGGER": "schedule"}

    def close(self) -> None:
        self.db.drop_collections(self.org_id)
        self.db.drop_postgres(self.org_id)
        self.db.close()
        self.rt.pool.shutdown()


def compile_trees(trees: list[Path], compile: bool = True) -> None:
    """Writes the bytecode of the measured trees' modules, as the image has it: pip compiles every
    module it installs (the wheel's too), while a development tree under PYTHONDONTWRITEBYTECODE
    (as the image's and this machine's environments set) keeps none, so each run would compile
    the project's own modules again (~0.05-0.1 s a run that a pod does not pay)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    for tree in trees:
        for cache in list(tree.rglob("__pycache__")):
            shutil.rmtree(cache)  # no stale bytecode either way
        if compile:
            subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree)], env=env, check=True)


def timed_run(org: Org, env: dict[str, str]) -> dict[str, Any]:
    """One `orgpipeline run` in its own process: wall from fork to exit, and its result."""
    argv = [CLI, "run", "-f", str(org.manifest), "--table", "orders", "-o", "json"]
    done = run_process(argv, env, check=False)
    if done.code != 0:
        raise SystemExit(f"orgpipeline run failed ({done.code}): {done.stderr[-2000:]}")
    result = json.loads(done.stdout)
    return {
        "wall": done.wall,
        "cpu": done.cpu,
        "inside": float(result["duration_seconds"]),
        "result": result["result"],
        "rows_read": result["rows_read"],
    }


def import_seconds(org: Org, env: dict[str, str]) -> tuple[float, dict[str, float]]:
    """What `python -X importtime` counts for the command's modules (a run with nothing new): the
    total, and each top-level package's share (the sum of its modules' own times)."""
    code = (
        "import sys; from orgpipeline_cli import main; "
        f"sys.argv = ['orgpipeline', 'run', '-f', {str(org.manifest)!r}, '--table', 'orders', '-o', 'json']; "
        "main.run()"
    )
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, env=env
    )
    total = 0
    packages: dict[str, int] = {}
    for line in done.stderr.splitlines():
        parts = line.split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        own = int(parts[0].rsplit(":", 1)[-1])
        package = parts[2].strip().split(".")[0]
        packages[package] = packages.get(package, 0) + own
        if parts[2].startswith(" ") and not parts[2].startswith("  "):
            total += int(parts[1])
    top = dict(sorted(((k, v / 1e6) for k, v in packages.items()), key=lambda kv: -kv[1])[:10])
    return total / 1e6, top


def profile(org: Org) -> None:
    """A nothing-new run in this process under cProfile, with its round trips counted."""
    import pymongo.monitoring

    commands: list[str] = []

    class Commands(pymongo.monitoring.CommandListener):
        def started(self, event: pymongo.monitoring.CommandStartedEvent) -> None:
            commands.append(event.command_name)

        def succeeded(self, event: pymongo.monitoring.CommandSucceededEvent) -> None:
            pass

        def failed(self, event: pymongo.monitoring.CommandFailedEvent) -> None:
            pass

    pymongo.monitoring.register(Commands())
    from orgpipeline_jobs.source import s3 as s3_module

    requests: list[str] = []
    send = s3_module.Client._request

    def counted(self: Any, method: str, *args: Any, **kwargs: Any) -> Any:
        requests.append(method)
        return send(self, method, *args, **kwargs)

    s3_module.Client._request = counted  # type: ignore[method-assign]
    os.environ.update(org.env)
    from orgpipeline_api.v1alpha1 import load_manifest
    from orgpipeline_jobs import pipeline
    from orgpipeline_jobs.settings import Settings

    _, spec = load_manifest(org.manifest)
    prof = cProfile.Profile()
    started = time.monotonic()
    prof.enable()
    result = pipeline.run_table(Settings.from_env(), spec, "orders")
    prof.disable()
    seconds = time.monotonic() - started
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("cumulative").print_stats(35)
    print(out.getvalue())
    raw = cast(dict[Any, Any], stats.stats)  # type: ignore[attr-defined]

    def calls(module_part: str, function: str) -> int:
        return sum(v[1] for (path, _, name), v in raw.items() if module_part in path and name == function)

    pg = calls("psycopg/connection.py", "wait")
    s3 = len(requests)
    print(f"in-process nothing-new run: {seconds:.3f} s, result {result.result.value}")
    print(f"round trips: PostgreSQL {pg} (Connection.wait), MongoDB {len(commands)} {sorted(set(commands))}")
    print(f"             S3 {s3} {requests}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=7)
    parser.add_argument("--rows", type=int, default=1000, help="rows of each new file")
    parser.add_argument(
        "--profile", action="store_true", help="cProfile one nothing-new run, count round trips"
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a tree of another commit's api/ cli/ jobs/ (git archive COMMIT api cli jobs | tar -x -C DIR):"
        " its trials alternate with this tree's, on the same org, so that both meet the same load",
    )
    parser.add_argument(
        "--no-bytecode",
        action="store_true",
        help="remove the trees' bytecode instead (every run compiles their modules, which a pod does not)",
    )
    args = parser.parse_args()

    env = stack_env()
    compile_trees(
        [ROOT / part for part in ("api", "cli", "jobs")] + ([args.baseline] if args.baseline else []),
        not args.no_bytecode,
    )
    os.environ.update({k: v for k, v in env.items() if k.startswith("ORGPIPELINE_")})
    tag = uuid.uuid4().hex[:6]
    work = Path(tempfile.mkdtemp(prefix="orgpipeline-runcost-"))
    from minio import Minio

    url = env["ORGPIPELINE_S3_ENDPOINT"].split("://", 1)
    s3 = Minio(
        url[1],
        access_key=env["ORGPIPELINE_S3_ACCESS_KEY"],
        secret_key=env["ORGPIPELINE_S3_SECRET_KEY"],
        secure=url[0] == "https",
    )
    bucket = f"runcost-{tag}"
    s3.make_bucket(bucket)
    org = Org(env, f"cost{tag}", bucket, work)
    uploads = 0

    def upload(seed: int) -> None:
        nonlocal uploads
        uploads += 1
        path = work / f"f{uploads}.csv"
        generate(path, args.rows, seed=seed, first=uploads * args.rows)
        s3.fput_object(bucket, f"org-{org.org_id}/orders_{uploads:04d}.csv", str(path))

    variants = {"this tree": org.env}
    if args.baseline:
        trees = os.pathsep.join(str(args.baseline.resolve() / part) for part in ("api", "cli", "jobs"))
        variants["baseline " + str(args.baseline)] = {**org.env, "PYTHONPATH": trees}
    try:
        upload(1)
        first = timed_run(org, org.env)
        nothing: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
        new: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
        for _ in range(args.trials):
            for name, env in variants.items():
                nothing[name].append(timed_run(org, env))
        for k in range(args.trials):
            for name, env in variants.items():
                upload(100 + k)
                new[name].append(timed_run(org, env))
        for name, env in variants.items():
            print(f"\n{name}:")
            imports, packages = import_seconds(org, env)
            report(args, first, nothing[name], new[name], imports)
            print("imports by package, s: " + ", ".join(f"{k} {v:.3f}" for k, v in packages.items()))
        if args.profile:
            profile(org)
    finally:
        org.close()
        for obj in s3.list_objects(bucket, recursive=True):
            s3.remove_object(bucket, obj.object_name)
        s3.remove_bucket(bucket)


def report(
    args: argparse.Namespace,
    first: dict[str, Any],
    nothing: list[dict[str, Any]],
    new: list[dict[str, Any]],
    imports: float,
) -> None:
    assert {r["result"] for r in nothing} == {"NoNewFiles"}, nothing
    assert {r["rows_read"] for r in new} == {args.rows}, new

    def med(runs: list[dict[str, Any]], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores")
    print(
        f"| {'orgpipeline run':<40} | {'process wall s':>14} | {'process CPU s':>13} | {'in-process s':>12} |"
    )
    print(f"|{'-' * 42}|{'-' * 16}|{'-' * 15}|{'-' * 14}|")
    label = f"first run, {args.rows:,} rows"
    print(f"| {label:<40} | {first['wall']:>14.3f} | {first['cpu']:>13.3f} | {first['inside']:>12.3f} |")
    rows = [
        (f"nothing new (median of {len(nothing)})", nothing),
        (f"a new {args.rows:,}-row file (median of {len(new)})", new),
    ]
    for label, runs in rows:
        wall, cpu, inside = med(runs, "wall"), med(runs, "cpu"), med(runs, "inside")
        print(f"| {label:<40} | {wall:>14.3f} | {cpu:>13.3f} | {inside:>12.3f} |")
    for label, runs in (("nothing new", nothing), ("new file", new)):
        print(
            f"{label}, every trial: "
            + ", ".join(f"{r['wall']:.2f}" for r in runs)
            + " s (fastest: the quietest)"
        )
    print(f"imports of the command (python -X importtime, top-level modules): {imports:.3f} s")
    verdict = {True: "met", False: "NOT met"}
    print(
        f"goal nothing new <= 0.4 s: {verdict[med(nothing, 'wall') <= 0.4]}; "
        f"new {args.rows:,}-row file <= 0.8 s: {verdict[med(new, 'wall') <= 0.8]}"
    )
    figures = {
        "rows": args.rows,
        "load_average": [round(x, 2) for x in load],
        "first": first,
        "nothing_new_wall": round(med(nothing, "wall"), 3),
        "nothing_new_inside": round(med(nothing, "inside"), 3),
        "nothing_new_cpu": round(med(nothing, "cpu"), 3),
        "nothing_new_fastest": round(min(r["wall"] for r in nothing), 3),
        "new_file_fastest": round(min(r["wall"] for r in new), 3),
        "new_file_cpu": round(med(new, "cpu"), 3),
        "new_file_wall": round(med(new, "wall"), 3),
        "new_file_inside": round(med(new, "inside"), 3),
        "imports_seconds": round(imports, 3),
    }
    print(json.dumps(figures, separators=(",", ":")))


if __name__ == "__main__":
    main()
