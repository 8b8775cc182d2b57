"""The three S3 requests a run makes (list a prefix, stat and stream an object), over the standard
library's `http.client`, signed with AWS Signature Version 4.

Why not the minio client here: importing it (urllib3, its admin API and that API's crypto) was a
fifth of a scheduled run's process wall time, and most scheduled runs make one listing request and
nothing else. The signature is the published SigV4 recipe (hashlib and hmac, nothing more), checked
byte for byte against minio's own signer in tests/unit/dataplane/test_s3_signing.py. Everything
else that talks to S3 (export, health, the operator) keeps the minio client.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import os
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote_plus, urlparse

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
DEFAULT_REGION = "us-east-1"
REGION_ENV = "ORGPIPELINE_S3_REGION"
TIMEOUT_SECONDS = 120.0
RETRIES = 3
RETRY_STATUSES = frozenset({500, 502, 503, 504})
_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


class S3Error(Exception):
    """The server answered with an error: its code (e.g. NoSuchKey, AccessDenied) and message."""

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.status = code, message, status


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    etag: str
    size: int


def signature_headers(
    method: str,
    host: str,
    path: str,
    query: Mapping[str, str],
    access_key: str,
    secret_key: str,
    region: str,
    when: datetime,
    payload_sha256: str = EMPTY_SHA256,
) -> dict[str, str]:
    """The headers that sign a request with SigV4 for service s3: Host, X-Amz-Date,
    X-Amz-Content-Sha256 and Authorization. `path` is already URI-encoded; `query` is not."""
    amz_date = when.strftime("%Y%m%dT%H%M%SZ")
    scope = f"{when.strftime('%Y%m%d')}/{region}/s3/aws4_request"
    headers = {"host": host, "x-amz-content-sha256": payload_sha256, "x-amz-date": amz_date}
    signed = ";".join(sorted(headers))
    canonical = "\n".join(
        [
            method,
            path or "/",
            canonical_query(query),
            *(f"{k}:{headers[k]}" for k in sorted(headers)),
            "",
            signed,
            payload_sha256,
        ]
    )
    to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    key = ("AWS4" + secret_key).encode()
    for part in (when.strftime("%Y%m%d"), region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return {
        "Host": host,
        "X-Amz-Date": amz_date,
        "X-Amz-Content-Sha256": payload_sha256,
        "Authorization": (
            f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed}, Signature={signature}"
        ),
    }


def canonical_query(query: Mapping[str, str]) -> str:
    """The query string SigV4 signs and the request sends: RFC 3986 encoded, sorted by name."""
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in sorted(query.items()))


def object_path(bucket: str, key: str = "") -> str:
    """The path-style URI path of a bucket or object (every S3-compatible server takes it)."""
    return "/" + quote(bucket, safe="") + ("/" + quote(key, safe="/") if key else "")


class Client:
    """Path-style requests to one S3 endpoint with one pair of keys; idle connections are kept
    for the next request (the listing and the files read after it share them)."""

    def __init__(self, endpoint: str, access_key: str, secret_key: str, region: str | None = None) -> None:
        url = urlparse(endpoint)
        self._https = url.scheme == "https"
        self._host = url.netloc
        self._access, self._secret = access_key, secret_key
        self.region = region or os.environ.get(REGION_ENV, "").strip() or DEFAULT_REGION
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def _connection(self) -> http.client.HTTPConnection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        if self._https:
            return http.client.HTTPSConnection(self._host, timeout=TIMEOUT_SECONDS, context=_tls_context())
        return http.client.HTTPConnection(self._host, timeout=TIMEOUT_SECONDS)

    def _release(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self._idle.append(conn)

    def _request(
        self, method: str, bucket: str, key: str = "", query: Mapping[str, str] | None = None
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Sends the request and returns the 2xx response unread; an error answer raises S3Error,
        a connection that fails (after RETRIES tries, as for a 5xx answer) raises OSError or
        http.client.HTTPException."""
        query = dict(query or {})
        path = object_path(bucket, key)
        target = path + ("?" + canonical_query(query) if query else "")
        region_retried = False
        attempt = 0
        while True:
            attempt += 1
            headers = signature_headers(
                method, self._host, path, query, self._access, self._secret, self.region, datetime.now(UTC)
            )
            conn = self._connection()
            try:
                conn.request(method, target, headers=headers)
                response = conn.getresponse()
            except (OSError, http.client.HTTPException):
                conn.close()
                if attempt >= RETRIES:
                    raise
                time.sleep(0.2 * attempt)
                continue
            if response.status < 300:
                return conn, response
            body = response.read()
            self._release(conn)
            error = _error(response.status, body, method)
            # Signed for the wrong region: AWS names the bucket's (in the body; for HEAD, a header).
            region = _tag(body, "Region") or response.getheader("x-amz-bucket-region")
            if region and region != self.region and not region_retried and response.status in (301, 400):
                self.region, region_retried = region, True
                continue
            if response.status in RETRY_STATUSES and attempt < RETRIES:
                time.sleep(0.2 * attempt)
                continue
            raise error

    def list_objects(self, bucket: str, prefix: str = "", page: int = 1000) -> list[ObjectInfo]:
        """Every object under the prefix (recursive), by key, `page` keys a request (ListObjectsV2)."""
        found: list[ObjectInfo] = []
        query = {"list-type": "2", "encoding-type": "url", "max-keys": str(page)}
        if prefix:
            query["prefix"] = prefix
        while True:
            conn, response = self._request("GET", bucket, query=query)
            body = response.read()
            self._release(conn)
            root = ET.fromstring(body)
            encoded = (root.findtext(f"{_NS}EncodingType") or "").lower() == "url"
            for item in root.iter(f"{_NS}Contents"):
                key = item.findtext(f"{_NS}Key") or ""
                found.append(
                    ObjectInfo(
                        unquote_plus(key) if encoded else key,
                        (item.findtext(f"{_NS}ETag") or "").strip('"'),
                        int(item.findtext(f"{_NS}Size") or 0),
                    )
                )
            token = root.findtext(f"{_NS}NextContinuationToken")
            if (root.findtext(f"{_NS}IsTruncated") or "").lower() != "true" or not token:
                return found
            query["continuation-token"] = token

    def stat_object(self, bucket: str, key: str) -> ObjectInfo:
        conn, response = self._request("HEAD", bucket, key)
        response.read()
        self._release(conn)
        etag = (response.getheader("ETag") or "").strip('"')
        return ObjectInfo(key, etag, int(response.getheader("Content-Length") or 0))

    def get_object(self, bucket: str, key: str) -> Stream:
        conn, response = self._request("GET", bucket, key)
        return Stream(self, conn, response)


class Stream:
    """An object's body as it arrives: `read(n)`; `close()` keeps the connection only when the
    body was read to its end."""

    def __init__(self, client: Client, conn: http.client.HTTPConnection, response: http.client.HTTPResponse):
        self._client, self._conn, self._response = client, conn, response

    def read(self, size: int = -1) -> bytes:
        return self._response.read(None if size < 0 else size)

    def close(self) -> None:
        if self._response.isclosed():
            self._client._release(self._conn)
        else:
            self._conn.close()

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.read(1 << 16):
            yield chunk


def _tls_context() -> Any:
    """Verification as the minio client does it: SSL_CERT_FILE, else certifi's bundle, else the
    system's."""
    import ssl

    cafile = os.environ.get("SSL_CERT_FILE")
    if not cafile:
        try:
            import certifi

            cafile = certifi.where()
        except ImportError:
            cafile = None
    return ssl.create_default_context(cafile=cafile)


def _tag(body: bytes, name: str) -> str | None:
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return None
    for element in root.iter():
        if element.tag.rsplit("}", 1)[-1] == name:
            return (element.text or "").strip() or None
    return None


def _error(status: int, body: bytes, method: str) -> S3Error:
    """The error an answer carries; a HEAD answer has no body, so its code comes from the status."""
    code = _tag(body, "Code") if body else None
    message = _tag(body, "Message") if body else None
    if code is None:
        code = {404: "NoSuchKey", 403: "AccessDenied", 400: "BadRequest"}.get(status, f"HTTP{status}")
        if method == "HEAD" and status == 404:
            message = "Object does not exist"
    return S3Error(code, message or http.client.responses.get(status, "error"), status)
