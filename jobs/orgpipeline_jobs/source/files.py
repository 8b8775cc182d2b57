"""Source files: S3 objects or local paths, identified by location, etag and size.

A file's id is a hash of (bucket, key, etag, size): the same object re-uploaded with new content
is a new file, while a file already ingested is recognised and skipped on every later run.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import http.client
import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlparse

from orgpipeline_api import source_paths
from orgpipeline_api.errors import ServerUnavailable

from orgpipeline_jobs.settings import Settings
from orgpipeline_jobs.source import s3
from orgpipeline_jobs.source.exceptions import SourceError


@dataclass(frozen=True)
class SourceFile:
    """One CSV file of a table."""

    bucket: str | None
    """S3 bucket, None for a local file."""
    key: str
    """Object key, or the absolute local path."""
    etag: str
    size: int

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}" if self.bucket else self.key

    @property
    def file_id(self) -> str:
        text = "\x00".join((self.bucket or "", self.key, self.etag, str(self.size)))
        return "f_" + hashlib.sha256(text.encode()).hexdigest()[:24]

    def metadata(self) -> dict[str, Any]:
        """The seed's `source_file` block."""
        return {"filename": self.name, "file_size": self.size, "file_id": self.file_id, **asdict(self)}


def s3_client(settings: Settings) -> s3.Client:
    settings.require("s3_endpoint", "s3_access_key", "s3_secret_key")
    return _client(settings.s3_endpoint or "", settings.s3_access_key or "", settings.s3_secret_key or "")


@functools.cache
def _client(endpoint: str, access_key: str, secret_key: str) -> s3.Client:
    """One client per endpoint and keys in a process: the listing and the files read after it share
    its connections."""
    return s3.Client(endpoint, access_key, secret_key)


def minio_client(settings: Settings) -> Any:
    """A minio client for what a run does not do (export's uploads): the run's own requests go
    through `s3.Client`, whose import is a fraction of minio's."""
    settings.require("s3_endpoint", "s3_access_key", "s3_secret_key")
    return _minio(settings.s3_endpoint or "", settings.s3_access_key or "", settings.s3_secret_key or "")


@functools.cache
def _minio(endpoint: str, access_key: str, secret_key: str) -> Any:
    from minio import Minio

    url = urlparse(endpoint)
    return Minio(url.netloc, access_key=access_key, secret_key=secret_key, secure=url.scheme == "https")


def _s3_call(what: str, call: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return call(*args, **kwargs)
    except s3.S3Error as exc:
        raise SourceError(f"{what}: {exc.code}: {exc.message}") from None
    except (http.client.HTTPException, OSError) as exc:
        raise ServerUnavailable(f"{what}: S3 unreachable: {exc}", stage="source") from None


def resolve(source: str, settings: Settings) -> SourceFile:
    """The SourceFile of `s3://bucket/key` or a local path (which must exist)."""
    if source.startswith("s3://"):
        url = urlparse(source)
        bucket, key = url.netloc, url.path.lstrip("/")
        if not bucket or not key:
            raise SourceError(f"{source}: expected s3://bucket/key")
        stat = _s3_call(f"cannot read {source}", s3_client(settings).stat_object, bucket, key)
        return SourceFile(bucket, key, stat.etag, stat.size)
    path = Path(source).resolve()
    if not path.is_file():
        raise SourceError(f"cannot read {source}: no such file")
    try:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise SourceError(f"cannot read {source}: {exc.strerror or exc}") from None
    return SourceFile(None, str(path), "sha256:" + digest.hexdigest(), path.stat().st_size)


def list_table_files(settings: Settings, bucket: str, prefix: str, pattern: str) -> list[SourceFile]:
    """The objects in the prefix's folder whose name relative to it matches the glob (see
    `orgpipeline_api.source_paths`), by key."""
    client = s3_client(settings)
    prefix = source_paths.folder(prefix)
    objects = _s3_call(f"cannot list s3://{bucket}/{prefix}", client.list_objects, bucket, prefix)
    found = []
    for obj in objects:
        relative = obj.key[len(prefix) :]
        if obj.key.endswith("/") or not source_paths.matches(relative, pattern):
            continue  # a folder marker, or not the table's
        found.append(SourceFile(bucket, obj.key, obj.etag, obj.size))
    return sorted(found, key=lambda f: f.key)


class _Raw(io.RawIOBase):
    """The HTTP response body as a raw stream (the response's own `closed` is not reliable)."""

    def __init__(self, response: Any) -> None:
        self._response = response

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._response.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


@contextmanager
def open_file(source: SourceFile, settings: Settings) -> Iterator[BinaryIO]:
    """A buffered binary stream of the file (supports peek); S3 objects are streamed, not downloaded."""
    if source.bucket is None:
        try:
            handle = open(source.key, "rb", buffering=1 << 16)  # noqa: SIM115
        except OSError as exc:
            raise SourceError(f"cannot read {source.key}: {exc.strerror or exc}") from None
        with handle:
            yield handle
        return
    client = s3_client(settings)
    response = _s3_call(f"cannot read {source.uri}", client.get_object, source.bucket, source.key)
    try:
        yield io.BufferedReader(_Raw(response), buffer_size=1 << 16)
    finally:
        response.close()


def local_files(directory: str, pattern: str) -> list[SourceFile]:
    """Local files of a directory matching the glob (for runs outside a cluster)."""
    root = Path(directory)
    return (
        [
            resolve(str(p), Settings())
            for p in sorted(root.iterdir())
            if p.is_file() and fnmatch.fnmatchcase(p.name, pattern)
        ]
        if root.is_dir()
        else []
    )
