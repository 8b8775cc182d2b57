"""Smoke tests of the test ground itself: each real server does what the project relies on."""

from __future__ import annotations

import io
import subprocess
import time
from typing import Any

import pytest

pytestmark = pytest.mark.integration


def _wait(what: str, probe: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def test_api_server_reports_its_version(stack: Any, kube_api: Any) -> None:
    import kubernetes

    info = kubernetes.client.VersionApi(kube_api).get_code()
    assert info.major == "1"
    if not stack.existing_cluster:
        assert info.git_version.startswith("v1.36."), info.git_version


def test_cronjob_job_pod_and_namespace_deletion(stack: Any, kube_api: Any, unique_id: str) -> None:
    import kubernetes

    core = kubernetes.client.CoreV1Api(kube_api)
    batch = kubernetes.client.BatchV1Api(kube_api)
    ns = f"smoke-{unique_id}"
    core.create_namespace({"metadata": {"name": ns}})
    cronjob = {
        "metadata": {"name": "hello"},
        "spec": {
            "schedule": "0 0 1 1 *",
            "jobTemplate": {
                "spec": {
                    "template": {
                        "spec": {
                            "restartPolicy": "Never",
                            "containers": [{"name": "hello", "image": "busybox", "command": ["true"]}],
                        }
                    }
                }
            },
        },
    }
    batch.create_namespaced_cron_job(ns, cronjob)
    # The way a user triggers a CronJob by hand.
    subprocess.run(
        ["kubectl", "create", "job", "hello-now", "--from=cronjob/hello", "-n", ns],
        check=True,
        capture_output=True,
    )
    pods = _wait(
        "the Job controller to create the Job's Pod",
        lambda: core.list_namespaced_pod(ns, label_selector="job-name=hello-now").items,
    )
    assert pods[0].spec.containers[0].command == ["true"]
    owner = pods[0].metadata.owner_references[0]
    assert (owner.kind, owner.name) == ("Job", "hello-now")

    core.delete_namespace(ns)

    def gone() -> bool:
        try:
            core.read_namespace(ns)
        except kubernetes.client.ApiException as exc:
            return exc.status == 404
        return False

    _wait("the namespace controller to delete the namespace and its contents", gone, timeout=90)
    assert batch.list_cron_job_for_all_namespaces(field_selector=f"metadata.namespace={ns}").items == []


def test_mongodb_protocol_insert_find_and_unique_index(mongo: Any, unique_id: str) -> None:
    import pymongo.errors

    # A database of this run's own, dropped after: FerretDB 1.x loads its catalogue as the first
    # login after its start, and a database whose catalogue only the admin may read (this one) is
    # then unknown to it, and making it again fails ("relation ... already exists").
    name = f"smoke_{unique_id}"
    try:
        coll = mongo[name]["c"]
        coll.create_index([("key", 1), ("version", 1)], unique=True)
        coll.insert_many([{"key": "a", "version": 1, "v": "é"}, {"key": "a", "version": 2, "v": "x"}])
        assert [d["v"] for d in coll.find({"key": "a"}, sort=[("version", 1)])] == ["é", "x"]
        with pytest.raises(pymongo.errors.DuplicateKeyError):
            coll.insert_one({"key": "a", "version": 1, "v": "dup"})
        assert coll.count_documents({}) == 2
    finally:
        mongo.drop_database(name)


def test_s3_bucket_put_list_get(s3: Any, unique_id: str) -> None:
    bucket = f"smoke-{unique_id}"
    s3.make_bucket(bucket)
    body = b"order_id,amount\n1,9.99\n"
    s3.put_object(bucket, "org-1/orders_1.csv", io.BytesIO(body), len(body))
    names = [o.object_name for o in s3.list_objects(bucket, prefix="org-1/", recursive=True)]
    assert names == ["org-1/orders_1.csv"]
    resp = s3.get_object(bucket, "org-1/orders_1.csv")
    try:
        assert resp.read() == body
    finally:
        resp.close()
        resp.release_conn()
    s3.remove_object(bucket, "org-1/orders_1.csv")
    s3.remove_bucket(bucket)


def test_postgres_schema_copy_select(pg: Any, unique_id: str) -> None:
    from psycopg import sql

    schema = sql.Identifier(f"smoke_{unique_id}")
    pg.execute(sql.SQL("CREATE SCHEMA {}").format(schema))
    try:
        pg.execute(sql.SQL("CREATE TABLE {}.t (id int PRIMARY KEY, name text)").format(schema))
        with pg.cursor() as cur, cur.copy(sql.SQL("COPY {}.t (id, name) FROM STDIN").format(schema)) as copy:
            for row in [(1, "a,b"), (2, "ünï"), (3, None)]:
                copy.write_row(row)
        rows = pg.execute(sql.SQL("SELECT id, name FROM {}.t ORDER BY id").format(schema)).fetchall()
        assert rows == [(1, "a,b"), (2, "ünï"), (3, None)]
    finally:
        pg.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(schema))
