"""Connection settings of the data plane, read once from the environment and validated.

The scheduled Jobs get these variables from the operator; the command line lets flags override
them. A missing or malformed value fails at start-up with one line naming the variable, not later
as a driver traceback.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlparse

from orgpipeline_api import store_names
from orgpipeline_api.errors import ConfigurationError

ENV_PREFIX = "ORGPIPELINE_"


@dataclass(frozen=True)
class Settings:
    """Where the servers are."""

    mongo_uri: str | None = None
    """MongoDB-protocol server URI (ORGPIPELINE_MONGO_URI)."""
    mongo_db: str | None = None
    """Database of the org's raw-landing collections (ORGPIPELINE_MONGO_DB); by default the org's
    own, `store_names.mongo_database(org)` (its MongoDB identity is granted that one only)."""
    postgres_dsn: str | None = None
    """libpq connection string of the warehouse (ORGPIPELINE_POSTGRES_DSN)."""
    s3_endpoint: str | None = None
    """S3 endpoint URL, http(s)://host:port (ORGPIPELINE_S3_ENDPOINT)."""
    s3_access_key: str | None = None
    """S3 access key (ORGPIPELINE_S3_ACCESS_KEY)."""
    s3_secret_key: str | None = None
    """S3 secret key (ORGPIPELINE_S3_SECRET_KEY)."""
    lock_timeout_seconds: float = 600.0
    """How long a run waits for another run of the same org and table (ORGPIPELINE_LOCK_TIMEOUT)."""
    batch_rows: int = 50_000
    """Rows per landing batch (ORGPIPELINE_BATCH_ROWS): one heads query, one insert_many, one commit."""
    mongo_streams: int = 2
    """Concurrent insert_many streams to MongoDB (ORGPIPELINE_MONGO_STREAMS)."""
    mongo_chunk: int = 1000
    """Documents per insert_many call (ORGPIPELINE_MONGO_CHUNK)."""
    write_rows: int = 2000
    """New versions per written part (ORGPIPELINE_WRITE_ROWS): one PostgreSQL transaction and one
    MongoDB submission; memory follows it."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: str | None) -> Settings:
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(ENV_PREFIX + name, "").strip()
            return value or None

        timeout = get("LOCK_TIMEOUT")
        counts = {}
        for name, default in (
            ("BATCH_ROWS", 50_000),
            ("MONGO_STREAMS", 2),
            ("MONGO_CHUNK", 1000),
            ("WRITE_ROWS", 2000),
        ):
            text = get(name)
            if text is not None and (not text.isdigit() or int(text) < 1):
                raise ConfigurationError(f"{ENV_PREFIX}{name} must be a positive integer: {text!r}")
            counts[name] = int(text) if text else default
        try:
            lock_timeout = float(timeout) if timeout else 600.0
        except ValueError:
            raise ConfigurationError(f"{ENV_PREFIX}LOCK_TIMEOUT is not a number: {timeout!r}") from None
        settings = cls(
            mongo_uri=get("MONGO_URI"),
            mongo_db=get("MONGO_DB"),
            postgres_dsn=get("POSTGRES_DSN"),
            s3_endpoint=get("S3_ENDPOINT"),
            s3_access_key=get("S3_ACCESS_KEY"),
            s3_secret_key=get("S3_SECRET_KEY"),
            lock_timeout_seconds=lock_timeout,
            batch_rows=counts["BATCH_ROWS"],
            mongo_streams=counts["MONGO_STREAMS"],
            mongo_chunk=counts["MONGO_CHUNK"],
            write_rows=counts["WRITE_ROWS"],
        )
        changes: dict[str, Any] = {k: v for k, v in overrides.items() if v}
        settings = replace(settings, **changes)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.mongo_uri and not self.mongo_uri.startswith(("mongodb://", "mongodb+srv://")):
            raise ConfigurationError(f"{ENV_PREFIX}MONGO_URI must start with mongodb://")
        if self.s3_endpoint:
            url = urlparse(self.s3_endpoint)
            if url.scheme not in ("http", "https") or not url.netloc:
                raise ConfigurationError(f"{ENV_PREFIX}S3_ENDPOINT must be http(s)://host[:port]")
        if self.mongo_db is not None and not self.mongo_db.replace("_", "").replace("-", "").isalnum():
            raise ConfigurationError(f"{ENV_PREFIX}MONGO_DB is not a valid database name")

    def mongo_database(self, org_id: str) -> str:
        """The MongoDB database of the org's collections."""
        return self.mongo_db or store_names.mongo_database(org_id)

    def require(self, *names: str) -> None:
        """Fails with one line naming every missing setting a stage needs."""
        missing = [n for n in names if not getattr(self, n)]
        if missing:
            env_names = ", ".join(ENV_PREFIX + n.upper() for n in missing)
            raise ConfigurationError(f"missing settings: {env_names}")
