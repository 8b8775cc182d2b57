"""The run's own S3 requests (`orgpipeline_jobs.source.s3`) carry the same SigV4 signature the
minio client computes for the same request: checked against minio's signer, byte for byte, for the
three requests a run makes and for keys and query values that need encoding."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest
from minio.credentials import Credentials
from minio.signer import sign_v4_s3
from orgpipeline_jobs.source import s3

WHEN = datetime(2026, 12, 6, 22, 40, 1, tzinfo=UTC)
ACCESS, SECRET = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"


def minio_authorization(method: str, host: str, path: str, query: dict[str, str], region: str) -> str:
    target = path + ("?" + s3.canonical_query(query) if query else "")
    url = urlsplit(f"http://{host}{target}")
    headers = {"Host": host, "x-amz-content-sha256": s3.EMPTY_SHA256, "x-amz-date": "20261206T224001Z"}
    signed = sign_v4_s3(
        method=method,
        url=url,
        region=region,
        headers=headers,
        credentials=Credentials(ACCESS, SECRET),
        content_sha256=s3.EMPTY_SHA256,
        date=WHEN,
    )
    return str(signed["Authorization"])


@pytest.mark.parametrize(
    ("method", "bucket", "key", "query"),
    [
        (
            "GET",
            "landing",
            "",
            {"list-type": "2", "encoding-type": "url", "max-keys": "1000", "prefix": "org-a/"},
        ),
        ("GET", "landing", "", {"list-type": "2", "continuation-token": "1/x+y==", "prefix": "org a/é~*"}),
        ("HEAD", "landing", "org-a/orders 1.csv", {}),
        ("GET", "landing", "org-a/sub dir/ørders+(1)~.csv", {}),
    ],
)
def test_the_signature_is_minios(method: str, bucket: str, key: str, query: dict[str, str]) -> None:
    host, region = "127.0.0.1:9000", "eu-west-3"
    path = s3.object_path(bucket, key)
    ours = s3.signature_headers(method, host, path, query, ACCESS, SECRET, region, WHEN)
    assert ours["Authorization"] == minio_authorization(method, host, path, query, region)
    assert ours["X-Amz-Date"] == "20261206T224001Z" and ours["Host"] == host


def test_an_error_answer_gives_its_code_and_message() -> None:
    body = b"<?xml version='1.0'?><Error><Code>NoSuchBucket</Code><Message>gone</Message></Error>"
    error = s3._error(404, body, "GET")
    assert (error.code, error.message, error.status) == ("NoSuchBucket", "gone", 404)
    head = s3._error(404, b"", "HEAD")
    assert (head.code, head.message) == ("NoSuchKey", "Object does not exist")
    assert s3._error(403, b"", "HEAD").code == "AccessDenied"
