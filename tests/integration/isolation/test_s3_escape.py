"""S3 escapes: with org A's own Secret and manifests, reach org B's files. Every attempt must be
refused and B's objects stay as they were.

Real servers: versitygw (org accounts and the bucket policy the operator keeps), the API server
(admission of the manifests, CEL) and the operator as a subprocess (credentialsSecret labels).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import http.client
import io
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from minio import Minio
from minio.error import S3Error
from orgpipeline_api import v1alpha1
from orgpipeline_operator import kube, naming, operator_settings, s3access

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))
from operator_helpers import REPO, Kubectl, Operator, operator_env, pipeline, running_operator, wait_for

LABEL = "orgpipeline.io/s3-escape-test"
BUCKET = "uploads"
B_ROWS = b"order_id,amount\nB-1,10.00\nB-2,20.00\n"
A_ROWS = b"order_id,amount\nA-1,1.00\n"


@pytest.fixture(scope="module")
def kubectl(stack: Any) -> Kubectl:
    return Kubectl(os.environ["PATH"], stack.kubeconfig)


@pytest.fixture(scope="module")
def api(kube_api: Any) -> kube.Kube:
    return kube.Kube(kube_api)


@pytest.fixture(scope="module")
def op(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    """The operator, reconciling only this module's orgs, with versitygw accounts (the default)."""
    env = operator_env(stack, f"{LABEL}=true")
    env.pop("ORGPIPELINE_S3_ACCOUNTS", None)
    with running_operator(env, tmp_path_factory.mktemp("s3-escape") / "operator.log") as proc:
        yield proc


def _manifest(org: str, **source: Any) -> dict[str, Any]:
    doc = pipeline(org, ["orders"], source={"bucket": BUCKET, "prefix": f"org-{org}/", **source})
    doc["metadata"]["labels"] = {LABEL: "true"}
    return doc


def _ready(api: kube.Kube, name: str, type_: str = "Ready") -> dict[str, Any] | None:
    obj = api.get(v1alpha1.API_VERSION, v1alpha1.KIND, name) or {}
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return dict(c)
    return None


def _org_keys(api: kube.Kube, org: str) -> tuple[str, str]:
    secret = api.get("v1", "Secret", naming.SECRET, naming.namespace(org)) or {}
    data = secret["data"]

    def dec(k: str) -> str:
        return base64.b64decode(data[k]).decode()

    return dec("ORGPIPELINE_S3_ACCESS_KEY"), dec("ORGPIPELINE_S3_SECRET_KEY")


def _client(stack: Any, keys: tuple[str, str]) -> Minio:
    url = urlparse(stack.s3_endpoint)
    return Minio(url.netloc, access_key=keys[0], secret_key=keys[1], secure=url.scheme == "https")


def _raw(
    endpoint: str, keys: tuple[str, str], method: str, path: str, body: bytes = b""
) -> tuple[int, bytes]:
    """One SigV4-signed request whose path goes on the wire exactly as given (no client cleans it)."""
    url = urlparse(endpoint)
    now = datetime.datetime.now(datetime.UTC)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    payload = hashlib.sha256(body).hexdigest()
    headers = {"host": url.netloc, "x-amz-content-sha256": payload, "x-amz-date": amz_date}
    signed = ";".join(sorted(headers))
    canonical = "\n".join(
        [method, path, "", *(f"{k}:{headers[k]}" for k in sorted(headers)), "", signed, payload]
    )
    scope = f"{day}/us-east-1/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + keys[1]).encode()
    for part in (day, "us-east-1", "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={keys[0]}/{scope}, SignedHeaders={signed}, Signature={signature}"
    )
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        conn.request(method, path, body=body or None, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _put(s3: Minio, bucket: str, key: str, body: bytes) -> None:
    s3.put_object(bucket, key, io.BytesIO(body), len(body))


def _read(s3: Minio, bucket: str, key: str) -> bytes:
    resp = s3.get_object(bucket, key)
    try:
        return bytes(resp.read())
    finally:
        resp.close()
        resp.release_conn()


def _snapshot(s3: Minio, prefix: str) -> dict[str, bytes]:
    """B's objects and their content, read with the root keys."""
    return {
        o.object_name: _read(s3, BUCKET, o.object_name)
        for o in s3.list_objects(BUCKET, prefix=prefix, recursive=True)
    }


@pytest.fixture(scope="module")
def orgs(stack: Any, s3: Minio, op: Operator, kubectl: Kubectl, api: kube.Kube) -> Iterator[SimpleNamespace]:
    """Orgs A and B, Ready, each with a file; A's keys are those of A's own Secret."""
    suffix = uuid.uuid4().hex[:6]
    a, b = f"s3a{suffix}", f"s3b{suffix}"
    other = f"other-{suffix}"
    for bucket in (BUCKET, other):
        if not s3.bucket_exists(bucket):
            s3.make_bucket(bucket)
    _put(s3, BUCKET, f"org-{a}/orders_1.csv", A_ROWS)
    _put(s3, BUCKET, f"org-{b}/orders_1.csv", B_ROWS)
    _put(s3, BUCKET, f"Org-{b}/orders_1.csv", B_ROWS)  # a case variant of B's folder
    _put(s3, BUCKET, f"top-{suffix}.csv", B_ROWS)  # the bucket's root
    _put(s3, other, f"org-{a}/orders_1.csv", B_ROWS)  # A's folder name, but not A's source bucket
    names = [f"org-{a}", f"org-{b}"]
    for org in (a, b):
        kubectl.apply(_manifest(org))
    for name in names:
        wait_for(lambda n=name: (_ready(api, n) or {}).get("status") == "True", 60, f"{name} Ready")
    keys = _org_keys(api, a)
    yield SimpleNamespace(
        a=a, b=b, other=other, suffix=suffix, keys=keys, s3a=_client(stack, keys), before=_snapshot(s3, "")
    )
    for name in names:
        kubectl("delete", "orgpipeline", name, "--ignore-not-found", "--timeout=60s", check=False)
    for key in (
        f"org-{a}/orders_1.csv",
        f"org-{b}/orders_1.csv",
        f"Org-{b}/orders_1.csv",
        f"top-{suffix}.csv",
    ):
        s3.remove_object(BUCKET, key)
    s3.remove_object(other, f"org-{a}/orders_1.csv")
    s3.remove_bucket(other)


def _unchanged(s3: Minio, orgs: SimpleNamespace) -> None:
    assert _snapshot(s3, "") == orgs.before


def _refused(fn: Any) -> str:
    with pytest.raises(S3Error) as info:
        fn()
    return str(info.value.code)


# --- the keys in A's Secret ----------------------------------------------------------------------


def test_a_gets_its_own_account_not_the_platforms_keys(stack: Any, orgs: SimpleNamespace) -> None:
    assert orgs.keys[0] == s3access.account_name(orgs.a)
    assert orgs.keys[0] != stack.s3_access_key


def test_a_reads_its_own_source(orgs: SimpleNamespace) -> None:
    names = [o.object_name for o in orgs.s3a.list_objects(BUCKET, prefix=f"org-{orgs.a}/")]
    assert names == [f"org-{orgs.a}/orders_1.csv"]
    assert _read(orgs.s3a, BUCKET, f"org-{orgs.a}/orders_1.csv") == A_ROWS


@pytest.mark.parametrize(
    "where",
    ["b-prefix", "b-prefix-case-variant", "bucket-root", "other-bucket"],
)
def test_a_cannot_read_write_or_delete_outside_its_prefix(
    s3: Minio, orgs: SimpleNamespace, where: str
) -> None:
    bucket, key = {
        "b-prefix": (BUCKET, f"org-{orgs.b}/orders_1.csv"),
        "b-prefix-case-variant": (BUCKET, f"Org-{orgs.b}/orders_1.csv"),
        "bucket-root": (BUCKET, f"top-{orgs.suffix}.csv"),
        "other-bucket": (orgs.other, f"org-{orgs.a}/orders_1.csv"),
    }[where]
    a = orgs.s3a
    assert _refused(lambda: _read(a, bucket, key)) == "AccessDenied"
    assert _refused(lambda: a.stat_object(bucket, key)) == "AccessDenied"
    assert _refused(lambda: _put(a, bucket, key, b"order_id,amount\nX,0\n")) == "AccessDenied"
    assert _refused(lambda: _put(a, bucket, key.rsplit("/", 1)[0] + "/new.csv", b"x")) == "AccessDenied"
    assert _refused(lambda: a.remove_object(bucket, key)) == "AccessDenied"
    assert _read(s3, bucket, key) == B_ROWS
    _unchanged(s3, orgs)


def test_a_cannot_write_its_own_source_or_change_the_policy(s3: Minio, orgs: SimpleNamespace) -> None:
    a = orgs.s3a
    assert _refused(lambda: _put(a, BUCKET, f"org-{orgs.a}/orders_1.csv", b"x")) == "AccessDenied"
    assert _refused(lambda: a.get_bucket_policy(BUCKET)) == "AccessDenied"
    grant_all = '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*",'
    grant_all += f'"Action":["s3:*"],"Resource":["arn:aws:s3:::{BUCKET}/*"]}}]}}'
    assert _refused(lambda: a.set_bucket_policy(BUCKET, grant_all)) == "AccessDenied"
    assert _refused(lambda: a.make_bucket(f"grab-{orgs.suffix}")) == "AccessDenied"
    _unchanged(s3, orgs)


@pytest.mark.parametrize(
    "path",
    [
        "{a}/../{b}/orders_1.csv",
        "{a}/%2e%2e/{b}/orders_1.csv",
        "{a}/%2E%2E%2F{b}%2Forders_1.csv",
        "{a}%2f..%2f{b}%2forders_1.csv",
        "{a}/..%2f{b}%2forders_1.csv",
        "{a}//../{b}/orders_1.csv",
        "{a}/./../{b}/orders_1.csv",
        "{a}/..%5c{b}%5corders_1.csv",
        "./{b}/orders_1.csv",
    ],
)
def test_dot_dot_and_url_encoded_keys_do_not_leave_a_prefix(
    stack: Any, s3: Minio, orgs: SimpleNamespace, path: str
) -> None:
    """Raw signed requests (S3 client libraries clean such keys before sending them). versitygw
    resolves them: the platform's keys read B's object through every one of these paths."""
    raw = "/" + BUCKET + "/" + path.format(a=f"org-{orgs.a}", b=f"org-{orgs.b}")
    for method in ("GET", "HEAD", "PUT", "DELETE"):
        status, body = _raw(stack.s3_endpoint, orgs.keys, method, raw, b"x" if method == "PUT" else b"")
        assert status in (400, 403, 404), (method, raw, status)  # 404: a literal key in its own folder
        assert b"B-1" not in body
    _unchanged(s3, orgs)


def test_listing_shows_a_at_most_names_never_content(s3: Minio, orgs: SimpleNamespace) -> None:
    """versitygw's policies have no s3:prefix condition: ListBucket on the shared bucket lists every
    key name (a bucket per org hides them). The names lead to no content."""
    listed = [o.object_name for o in orgs.s3a.list_objects(BUCKET, prefix=f"org-{orgs.b}/", recursive=True)]
    for name in listed:
        assert _refused(lambda n=name: _read(orgs.s3a, BUCKET, n)) == "AccessDenied"
    _unchanged(s3, orgs)


# --- manifests: admission ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"prefix": "org-{b}/"}, "own folder"),
        ({"prefix": "org-{b}"}, "own folder"),
        ({"prefix": ""}, "own folder"),
        ({"prefix": "Org-{a}/"}, "own folder"),
        ({"prefix": "org-{a}x/"}, "own folder"),
        ({"prefix": "\u043erg-{a}/"}, "folder path"),  # a Cyrillic o
        ({"prefix": "org-{a}/../org-{b}/"}, "folder path"),
        ({"prefix": "org-{a}/%2e%2e/org-{b}/"}, "folder path"),
        ({"prefix": "/org-{b}/"}, "folder path"),
        ({"filePattern": "org-{b}/orders*.csv"}, "filePattern"),
        ({"filePattern": "../org-{b}/orders*.csv"}, "filePattern"),
        ({"filePattern": "..\\org-{b}\\orders*.csv"}, "filePattern"),
        ({"filePattern": "..*.csv"}, "filePattern"),
        ({"filePattern": "orders\x00.csv"}, "filePattern"),
    ],
)
def test_a_manifest_reaching_outside_its_folder_is_refused(
    kubectl: Kubectl, orgs: SimpleNamespace, change: dict[str, str], message: str
) -> None:
    doc = _manifest(f"s3x{orgs.suffix}")
    org = doc["spec"]["orgId"]
    for field, value in change.items():
        value = value.format(a=org, b=orgs.b)
        if field == "prefix":
            doc["spec"]["source"]["prefix"] = value
        else:
            doc["spec"]["tables"][0][field] = value
    proc = kubectl("apply", "-f", "-", input=yaml.safe_dump(doc), check=False)
    if proc.returncode == 0:
        kubectl("delete", "orgpipeline", doc["metadata"]["name"], "--wait=false", check=False)
    assert proc.returncode != 0, f"accepted: {change}"
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_the_data_plane_refuses_the_same_manifests(orgs: SimpleNamespace) -> None:
    """`orgpipeline run -f` reads the manifest with the same model as the operator."""
    doc = _manifest(orgs.a)
    doc["spec"]["source"]["prefix"] = ""
    with pytest.raises(v1alpha1.ManifestError, match="own folder"):
        v1alpha1.parse_manifest(doc)
    doc = _manifest(orgs.a)
    doc["spec"]["tables"][0]["filePattern"] = f"org-{orgs.b}/orders*.csv"
    with pytest.raises(v1alpha1.ManifestError, match="filePattern"):
        v1alpha1.parse_manifest(doc)


# --- credentialsSecret: the operator -------------------------------------------------------------


@pytest.mark.parametrize("label", [None, "b"])
def test_a_credentials_secret_not_labelled_for_the_org_is_refused(
    stack: Any, kubectl: Kubectl, api: kube.Kube, orgs: SimpleNamespace, label: str | None
) -> None:
    """An org naming a Secret of the operator's namespace that is not its own (unlabelled, or B's)."""
    org = f"s3c{uuid.uuid4().hex[:6]}"
    name = f"s3-keys-{org}"
    meta: dict[str, Any] = {"name": name, "namespace": "default"}
    if label:
        meta["labels"] = {s3access.LABEL_ORG_ID: orgs.b}
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta,
        "stringData": {"accessKey": stack.s3_access_key, "secretKey": stack.s3_secret_key},
    }
    kubectl.apply(secret)
    try:
        kubectl.apply(_manifest(org, prefix="", credentialsSecret=name))
        cond = wait_for(
            lambda: (
                (c := _ready(api, f"org-{org}")) and c.get("reason") == "SourceCredentialsNotForOrg" and c
            ),
            60,
            "Ready False, SourceCredentialsNotForOrg",
        )
        assert cond["status"] == "False"
        assert f"{s3access.LABEL_ORG_ID}={org}" in cond["message"]
        found = api.get("v1", "Secret", naming.SECRET, naming.namespace(org))
        assert found is None or _org_keys(api, org)[0] != stack.s3_access_key
    finally:
        kubectl("delete", "orgpipeline", f"org-{org}", "--ignore-not-found", "--timeout=60s", check=False)
        kubectl("delete", "secret", name, "-n", "default", "--ignore-not-found", check=False)


def test_a_credentials_secret_labelled_for_the_org_is_used(
    stack: Any, kubectl: Kubectl, api: kube.Kube
) -> None:
    org = f"s3d{uuid.uuid4().hex[:6]}"
    name = f"s3-keys-{org}"
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": "default", "labels": {s3access.LABEL_ORG_ID: org}},
        "stringData": {"accessKey": f"own-{org}", "secretKey": "own-secret"},
    }
    kubectl.apply(secret)
    try:
        kubectl.apply(_manifest(org, prefix="", credentialsSecret=name))
        wait_for(lambda: (_ready(api, f"org-{org}") or {}).get("status") == "True", 60, "Ready")
        assert _org_keys(api, org) == (f"own-{org}", "own-secret")
    finally:
        kubectl("delete", "orgpipeline", f"org-{org}", "--ignore-not-found", "--timeout=60s", check=False)
        kubectl("delete", "secret", name, "-n", "default", "--ignore-not-found", check=False)


def test_deleting_an_org_removes_its_account_and_statement(
    stack: Any, kubectl: Kubectl, api: kube.Kube, orgs: SimpleNamespace
) -> None:
    org = f"s3e{uuid.uuid4().hex[:6]}"
    kubectl.apply(_manifest(org))
    wait_for(lambda: (_ready(api, f"org-{org}") or {}).get("status") == "True", 60, "Ready")
    settings = operator_settings.from_env(stack.as_environ())
    account = s3access.account_name(org)
    assert account in s3access.list_users(settings)
    assert account in str(s3access.get_policy(settings, BUCKET))
    kubectl("delete", "orgpipeline", f"org-{org}", "--timeout=60s")
    assert account not in s3access.list_users(settings)
    assert account not in str(s3access.get_policy(settings, BUCKET))
    assert s3access.account_name(orgs.a) in str(s3access.get_policy(settings, BUCKET))


# --- ingest --file --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "uri",
    [
        "s3://uploads/org-{b}/orders_1.csv",
        "s3://uploads/Org-{b}/orders_1.csv",
        "s3://{other}/org-{a}/orders_1.csv",
        "s3://uploads/top-{suffix}.csv",
        "s3://uploads/org-{a}/../org-{b}/orders_1.csv",
        "s3://uploads/org-{a}/%2e%2e/org-{b}/orders_1.csv",
        "s3://uploads/org-{a}%2f..%2forg-{b}%2forders_1.csv",
        "s3://uploads/org-{a}/\uff0e\uff0e\uff0forg-{b}\uff0forders_1.csv",  # full-width . and /
        "s3://uploads/org-{a}\\..\\org-{b}\\orders_1.csv",
        "s3://uploads//org-{b}/orders_1.csv",
        "S3://uploads/org-{b}/orders_1.csv",
    ],
)
def test_ingest_refuses_an_object_outside_the_source(
    stack: Any, s3: Minio, tmp_path: Path, orgs: SimpleNamespace, uri: str
) -> None:
    manifest = tmp_path / "a.yaml"
    manifest.write_text(yaml.safe_dump(_manifest(orgs.a)))
    target = uri.format(a=orgs.a, b=orgs.b, other=orgs.other, suffix=orgs.suffix)
    env = {
        **os.environ,
        **stack.as_environ(),
        "ORGPIPELINE_S3_ACCESS_KEY": orgs.keys[0],
        "ORGPIPELINE_S3_SECRET_KEY": orgs.keys[1],
    }
    command = [str(REPO / ".venv" / "bin" / "orgpipeline"), "ingest", "-f", str(manifest)]
    proc = subprocess.run(
        [*command, "--table", "orders", "--file", target],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    _unchanged(s3, orgs)


def test_naming_another_accounts_bucket_gets_an_org_nothing_there(
    stack: Any, s3: Minio, kubectl: Kubectl, api: kube.Kube, orgs: SimpleNamespace
) -> None:
    """B's own bucket (owned by B's account, reached through its ACL): A names it as its source. A
    policy there would lock B out (versitygw checks a bucket's policy instead of its ACL), so the
    operator puts none: B keeps its access, A reads nothing."""
    settings = operator_settings.from_env(stack.as_environ())
    owner = f"s3own-{orgs.suffix}"
    bucket = f"own-{orgs.suffix}"
    body = (
        f"<Account><Access>{owner}</Access><Secret>{owner}-secret</Secret><Role>user</Role>"
        "<UserID>0</UserID><GroupID>0</GroupID><ProjectID>0</ProjectID></Account>"
    ).encode()
    assert s3access._admin(settings, "create-user", body=body)[0] < 300
    s3.make_bucket(bucket)
    status, text = s3access._admin(settings, "change-bucket-owner/", {"bucket": bucket, "owner": owner})
    assert status < 300, text
    b_own = _client(stack, (owner, f"{owner}-secret"))
    key = f"org-{orgs.a}/orders_1.csv"
    _put(b_own, bucket, key, B_ROWS)
    org = orgs.a
    try:
        kubectl.apply(_manifest(org, bucket=bucket))
        # The reconcile of the new source took A's statement out of the old bucket's policy ...
        wait_for(lambda: f"org-{org}/*" not in str(s3access.get_policy(settings, BUCKET)), 30, "reconcile")
        assert s3access.get_policy(settings, bucket) is None  # ... and put none on B's bucket
        assert _read(b_own, bucket, key) == B_ROWS  # the owner still reads (and writes) its bucket
        _put(b_own, bucket, "more.csv", B_ROWS)
        assert _refused(lambda: _read(orgs.s3a, bucket, key)) == "AccessDenied"
    finally:
        kubectl.apply(_manifest(org))  # A's own source again
        wait_for(lambda: f"org-{org}/*" in str(s3access.get_policy(settings, BUCKET)), 30, "A's statement")
        for name in (key, "more.csv"):
            s3.remove_object(bucket, name)
        s3.remove_bucket(bucket)
        s3access._admin(settings, "delete-user", {"access": owner})


def test_without_accounts_an_org_needs_its_own_labelled_secret(
    stack: Any, kubectl: Kubectl, api: kube.Kube, orgs: SimpleNamespace
) -> None:
    """ORGPIPELINE_S3_ACCOUNTS=none (MinIO, AWS): no org gets the platform's keys in any case."""
    settings = operator_settings.from_env(
        {**stack.as_environ(), "ORGPIPELINE_NAMESPACE": "default", "ORGPIPELINE_S3_ACCOUNTS": "none"}
    )
    org = f"s3n{orgs.suffix}"
    spec = v1alpha1.parse_manifest(_manifest(org))[1]
    refused = s3access.refusal(settings, api, spec)
    assert refused is not None and refused[0] == "SourceCredentialsRequired"
    name = f"s3-keys-{org}"
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": "default", "labels": {s3access.LABEL_ORG_ID: org}},
        "stringData": {"accessKey": f"iam-{org}", "secretKey": "iam-secret"},
    }
    kubectl.apply(secret)
    try:
        labelled = v1alpha1.parse_manifest(_manifest(org, credentialsSecret=name))[1]
        assert s3access.refusal(settings, api, labelled) is None
        assert s3access.org_keys(settings, api, labelled) == (f"iam-{org}", "iam-secret")
        other = v1alpha1.parse_manifest(_manifest(orgs.b, credentialsSecret=name))[1]
        refused = s3access.refusal(settings, api, other)
        assert refused is not None and refused[0] == "SourceCredentialsNotForOrg"
    finally:
        kubectl("delete", "secret", name, "-n", "default", "--ignore-not-found", check=False)
