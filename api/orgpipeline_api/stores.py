"""Connections to the stores, made the same way by the jobs, the command line and the operator.

One place for connect timeouts, `tz_aware` MongoDB clients and the one-line message of a server
that cannot be reached (`StoreUnavailable`); callers map it to their own error or exit code.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pymongo
import pymongo.errors

CONNECT_TIMEOUT_SECONDS = 10
MONGO_TIMEOUT_MS = 8000


class StoreUnavailable(Exception):
    """A store could not be reached; the message is one line naming it."""

    def __init__(self, store: str, message: str) -> None:
        super().__init__(f"{store} unreachable: {message}")
        self.store = store


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def connect_postgres(dsn: str, *, autocommit: bool = True) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(dsn, autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT_SECONDS)
    except psycopg.OperationalError as exc:
        raise StoreUnavailable("PostgreSQL", first_line(exc)) from None


def mongo_client(uri: str, *, ping: bool = True) -> pymongo.MongoClient[dict[str, Any]]:
    """A client with the shared timeouts; `ping` checks the server now rather than at first use."""
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        uri, tz_aware=True, serverSelectionTimeoutMS=MONGO_TIMEOUT_MS, connectTimeoutMS=MONGO_TIMEOUT_MS
    )
    if ping:
        try:
            client.admin.command("ping")
        except pymongo.errors.PyMongoError as exc:
            client.close()
            raise StoreUnavailable("MongoDB", str(exc).split(",")[0]) from None
    return client
