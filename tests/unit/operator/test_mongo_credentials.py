"""The org's MongoDB URI in its Secret (issue 22): the org's own user, password and database on the
jobs' hosts; the Secret's hash does not change with the password (it is kept, not compared)."""

from __future__ import annotations

import base64
import urllib.parse
from pathlib import Path
from typing import Any, cast

import pytest
from orgpipeline_api import v1alpha1
from orgpipeline_operator import builders, database, operator_settings, runtime

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "org-123.yaml"
ENV = {
    "ORGPIPELINE_POSTGRES_DSN": "postgresql://admin:pw@db.example:5433/orgs",
    "ORGPIPELINE_MONGO_URI": "mongodb://admin:adminpw@mongo-a:27017,mongo-b:27017/admin?tls=true&authMechanism=PLAIN",
    "ORGPIPELINE_S3_ENDPOINT": "http://s3:9000",
    "ORGPIPELINE_S3_ACCESS_KEY": "ak",
    "ORGPIPELINE_S3_SECRET_KEY": "sk",
}


def _rt(**env: str) -> runtime.Runtime:
    settings = operator_settings.from_env({**ENV, **env})
    return runtime.Runtime(settings, cast(Any, None), cast(Any, None))


@pytest.mark.parametrize(
    ("users", "auth"),
    [("ferretdb", {"authMechanism": ["PLAIN"]}), ("mongodb", {"authSource": ["orgraw_123"]})],
)
def test_the_secret_logs_in_as_the_org_on_its_database(users: str, auth: dict[str, list[str]]) -> None:
    _, spec = v1alpha1.load_manifest(EXAMPLE)
    env = _rt(ORGPIPELINE_MONGO_USERS=users).credentials(spec, "p@ss:/w?rd&").env()
    uri = urllib.parse.urlsplit(env["ORGPIPELINE_MONGO_URI"])
    assert (uri.username, urllib.parse.unquote(uri.password or "")) == ("orgpipeline_org_123", "p@ss:/w?rd&")
    assert uri.netloc.endswith("@mongo-a:27017,mongo-b:27017")  # the hosts, not the admin's login
    assert uri.path == "/orgraw_123" and env["ORGPIPELINE_MONGO_DB"] == "orgraw_123"
    assert urllib.parse.parse_qs(uri.query) == {"tls": ["true"], **auth}


def test_the_jobs_uri_is_the_base_when_set() -> None:
    _, spec = v1alpha1.load_manifest(EXAMPLE)
    env = _rt(ORGPIPELINE_JOB_MONGO_URI="mongodb://ferretdb.data:27017/").credentials(spec, "pw").env()
    assert env["ORGPIPELINE_MONGO_URI"] == (
        "mongodb://orgpipeline_org_123:pw@ferretdb.data:27017/orgraw_123?authMechanism=PLAIN"
    )


def test_the_secret_hash_leaves_the_password_out() -> None:
    _, spec = v1alpha1.load_manifest(EXAMPLE)
    target = builders.Target("org-123", "uid-1", spec)
    rt = _rt()
    one, two = (builders.build_secret(target, rt.credentials(spec, pw)) for pw in ("", "secret-2"))
    assert ":secret-2@" in base64.b64decode(two["data"]["ORGPIPELINE_MONGO_URI"]).decode()
    assert builders.applied_hash(one) == builders.applied_hash(two)
    other = builders.build_secret(target, rt.credentials(spec.model_copy(update={"org_id": "456"}), "x"))
    assert builders.applied_hash(other) != builders.applied_hash(one)


def test_uri_of_a_plain_base() -> None:
    assert database.org_mongo_uri("mongodb://h:1/", "a-b", "pw") == (
        "mongodb://orgpipeline_org_a-b:pw@h:1/orgraw_a-b?authMechanism=PLAIN"
    )
    assert database.org_mongo_uri("mongodb+srv://u:p@h?tls=true", "a", "pw", "mongodb") == (
        "mongodb+srv://orgpipeline_org_a:pw@h/orgraw_a?tls=true&authSource=orgraw_a"
    )


def test_an_unknown_kind_of_mongo_users_is_refused_at_start() -> None:
    with pytest.raises(
        operator_settings.SettingsError, match="ORGPIPELINE_MONGO_USERS must be ferretdb or mongodb"
    ):
        operator_settings.from_env({**ENV, "ORGPIPELINE_MONGO_USERS": "none"})
