"""Writing version documents to MongoDB: replay-safe inserts over a bounded number of streams.

FerretDB (and MongoDB) take more documents per second from a few concurrent `insert_many` streams
than from one; `MongoWriter` keeps up to `streams` chunks in flight while the caller prepares the
next batch, and holds back the caller (back-pressure) when that many more are queued, so memory
stays bounded by a few batches whatever the file size.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import pymongo.errors
from bson.raw_bson import RawBSONDocument
from orgpipeline_api.errors import PipelineError, ServerUnavailable
from pymongo.collection import Collection

from orgpipeline_jobs.landing.exceptions import LandingError

Document = dict[str, Any] | RawBSONDocument

TRANSIENT_WRITE_CODES = frozenset({6, 7, 50, 89, 91, 112, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436})
"""Write error codes of the server's state (host unreachable, timeouts, shutdown, write conflict,
not primary), not of a document: a landing that meets one is not a refusal of the content."""


def insert_documents(collection: Collection[Any], docs: Sequence[Document]) -> None:
    """insert_many that accepts versions already present (a replay) and nothing else."""
    if not docs:
        return
    try:
        collection.insert_many(docs, ordered=False)
    except pymongo.errors.BulkWriteError as exc:
        other = [e for e in exc.details.get("writeErrors", []) if e.get("code") != 11000]
        if any(e.get("code") in TRANSIENT_WRITE_CODES for e in other):
            # The server's trouble, not the documents': the run fails and the next one retries.
            raise ServerUnavailable(
                f"MongoDB could not write: {other[0].get('codeName') or other[0].get('code')}",
                stage="landing",
            ) from None
        if other:
            raise LandingError(f"MongoDB refused {len(other)} documents: {other[0].get('errmsg')}") from None
    except pymongo.errors.ConnectionFailure as exc:
        raise ServerUnavailable(f"MongoDB unreachable: {exc}", stage="landing") from None
    except pymongo.errors.OperationFailure as exc:
        # FerretDB passes on its PostgreSQL backend's refusal of a value (a NUL in a string:
        # `unsupported Unicode escape sequence (SQLSTATE 22P05)`) as a failed command.
        if "(SQLSTATE 22" not in str(exc):
            raise
        raise LandingError(f"MongoDB refused a document (code {exc.code}, a data exception)") from None
    except pymongo.errors.InvalidDocument as exc:
        # The driver refuses before sending: a document over the server's size limit (16 MiB).
        raise LandingError(f"MongoDB refused a document: {type(exc).__name__}") from None


@dataclass
class _Batch:
    batch_id: str
    count: int
    futures: list[Future[None]] = field(default_factory=list)


class MongoWriter:
    """Concurrent, ordered-by-batch landing: `submit` a batch, `completed` tells which are written."""

    def __init__(self, collection: Collection[Any], streams: int = 2, chunk: int = 1000) -> None:
        self.collection = collection
        self.streams = max(1, streams)
        self.chunk = max(1, chunk)
        self._pool = ThreadPoolExecutor(max_workers=self.streams, thread_name_prefix="mongo-writer")
        self._batches: deque[_Batch] = deque()

    def submit(self, batch_id: str, docs: Sequence[Document]) -> None:
        """Queues a batch's documents in chunks; waits first while too much is queued."""
        if not docs:
            return
        self._wait_until_queued_below(2 * self.streams)
        batch = _Batch(batch_id, len(docs))
        # A small batch (a re-run's few changed rows, a file's last part) still uses every stream.
        chunk = max(1, min(self.chunk, -(-len(docs) // self.streams)))
        for start in range(0, len(docs), chunk):
            part = docs[start : start + chunk]
            batch.futures.append(self._pool.submit(insert_documents, self.collection, part))
        self._batches.append(batch)

    def in_flight(self) -> bool:
        """Whether a submitted batch is not fully written yet."""
        return any(not f.done() for b in self._batches for f in b.futures)

    def make_room(self) -> None:
        """Waits while too much is queued (what `submit` does first), raising an earlier batch's
        error: a caller that must prepare before submitting learns it first."""
        self._wait_until_queued_below(2 * self.streams)

    def forget(self, batch_id: str) -> None:
        """Waits for a submitted batch's writes and drops it, whatever they did (its documents are
        the caller's to withdraw)."""
        for batch in [b for b in self._batches if b.batch_id == batch_id]:
            for future in batch.futures:
                with suppress(Exception):
                    future.result()
            self._batches.remove(batch)

    def _queued(self) -> int:
        return sum(1 for b in self._batches for f in b.futures if not f.done())

    def _wait_until_queued_below(self, limit: int) -> None:
        while self._queued() >= limit:
            for batch in self._batches:
                waiting = [f for f in batch.futures if not f.done()]
                if waiting:
                    waiting[0].result()
                    break

    def completed(self, wait: bool = False) -> list[tuple[str, int]]:
        """(batch_id, documents) of the batches fully written, oldest first; raises a write's error.

        `wait` blocks until every submitted batch is written."""
        done: list[tuple[str, int]] = []
        while self._batches:
            batch = self._batches[0]
            if not wait and not all(f.done() for f in batch.futures):
                break
            for future in batch.futures:
                future.result()
            self._batches.popleft()
            done.append((batch.batch_id, batch.count))
        return done

    def drain(self) -> list[tuple[str, int]]:
        """Waits for every submitted batch: (batch_id, documents) of those fully written; the
        others' errors are dropped (their outbox rows stay, for the replay)."""
        done: list[tuple[str, int]] = []
        while self._batches:
            batch = self._batches.popleft()
            written = True
            for future in batch.futures:
                try:
                    future.result()
                except PipelineError:
                    written = False
            if written:
                done.append((batch.batch_id, batch.count))
        return done

    def close(self) -> None:
        """Waits for what is in flight (its errors are the caller's to collect first)."""
        self._pool.shutdown(wait=True)
