"""The run's own S3 requests (`source.s3`, not the minio client) against the stack's real S3
server: a listing of every page, keys that need encoding given back as uploaded, a stat and a
streamed read that match what was stored, and the server's refusals as the one-line errors a user
sees."""

from __future__ import annotations

import pytest
from conftest import Org
from orgpipeline_api.errors import ServerUnavailable
from orgpipeline_jobs.source import files
from orgpipeline_jobs.source.exceptions import SourceError

NAMES = ["orders_1.csv", "orders 2 (copy).csv", "orders_ü+3.csv", "orders_4~x.csv", "orders_5.csv"]


def test_listing_pages_encoded_keys_stat_and_read(org: Org) -> None:
    for i, name in enumerate(NAMES):
        org.upload(name, f"order_id\nO{i}\n" * (i + 1))
    org.upload("customers_1.csv", "x\n")
    org.upload("sub/orders_9.csv", "x\n")  # in a folder below the prefix: not the table's
    settings = org.settings()
    client = files.s3_client(settings)
    prefix = f"org-{org.org_id}/"
    keys = [o.key for o in client.list_objects(org.bucket, prefix, page=2)]  # 4 pages of 2
    assert keys == sorted(prefix + n for n in [*NAMES, "customers_1.csv", "sub/orders_9.csv"])

    found = files.list_table_files(settings, org.bucket, prefix, "orders_*.csv")
    assert [f.name for f in found] == sorted(n for n in NAMES if n.startswith("orders_"))
    for source in found:
        stored = org.s3.stat_object(org.bucket, source.key)  # the minio client's view of it
        assert (source.etag, source.size) == (stored.etag.strip('"'), stored.size)
        assert files.resolve(source.uri, settings) == source
        with files.open_file(source, settings) as stream:
            assert stream.read() == org.s3.get_object(org.bucket, source.key).read()


def test_refusals_and_an_unreachable_server_are_one_line(org: Org) -> None:
    settings = org.settings()
    with pytest.raises(SourceError, match=r"NoSuchKey"):
        files.resolve(f"s3://{org.bucket}/org-{org.org_id}/nope.csv", settings)
    with pytest.raises(SourceError, match=r"cannot list s3://no-such-bucket-[0-9a-f]+/x/: NoSuchBucket"):
        files.list_table_files(settings, f"no-such-bucket-{org.org_id[-6:].encode().hex()}", "x", "*.csv")
    wrong = org.settings(ORGPIPELINE_S3_SECRET_KEY="not-the-secret")
    with pytest.raises(SourceError, match=r"SignatureDoesNotMatch|AccessDenied|InvalidAccessKeyId"):
        files.list_table_files(wrong, org.bucket, f"org-{org.org_id}/", "*.csv")
    closed = org.settings(ORGPIPELINE_S3_ENDPOINT="http://127.0.0.1:1")
    with pytest.raises(ServerUnavailable, match=r"S3 unreachable"):
        files.list_table_files(closed, org.bucket, f"org-{org.org_id}/", "*.csv")
