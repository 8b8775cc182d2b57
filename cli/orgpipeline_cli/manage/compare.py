"""The merge-join behind `orgpipeline validate`: two streams sorted by (key, version), one pass.

Both sides arrive sorted by composite key (byte order: MongoDB's string order and PostgreSQL's
`COLLATE "C"`, which equals Python's code-point order for UTF-8) and then version, so the memory the
comparison needs is one record per side, whatever the table's size. A stream that is not sorted
would make the join report false differences; it is detected and raised instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

Kind = Literal["missing", "extra", "hash_mismatch"]

KIND_HELP: dict[str, str] = {
    "missing": "loaded in MongoDB, absent from PostgreSQL",
    "extra": "in PostgreSQL, not an active loaded version in MongoDB",
    "hash_mismatch": "in both, but PostgreSQL's business data does not hash to MongoDB's data_hash",
}


@dataclass(frozen=True)
class VersionRef:
    """One record version as a side of the comparison sees it."""

    composite_key: str
    version: int
    data_hash: str | None

    @property
    def position(self) -> tuple[str, int]:
        return (self.composite_key, self.version)


@dataclass(frozen=True)
class Difference:
    kind: Kind
    composite_key: str
    version: int
    mongo_hash: str | None = None
    postgres_hash: str | None = None


class UnsortedStream(RuntimeError):
    """A side did not arrive in (key, version) order: the comparison cannot be trusted."""


def _checked(side: str, items: Iterable[VersionRef]) -> Iterator[VersionRef]:
    last: tuple[str, int] | None = None
    for item in items:
        if last is not None and item.position <= last:
            raise UnsortedStream(f"{side} rows are not in (composite_key, version) order at {item.position}")
        last = item.position
        yield item


def compare(mongo: Iterable[VersionRef], postgres: Iterable[VersionRef]) -> Iterator[Difference]:
    """Yields every difference between the two sorted sides, in (key, version) order."""
    left = _checked("MongoDB", mongo)
    right = _checked("PostgreSQL", postgres)
    a = next(left, None)
    b = next(right, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a.position < b.position):
            assert a is not None
            yield Difference("missing", a.composite_key, a.version, mongo_hash=a.data_hash)
            a = next(left, None)
        elif a is None or b.position < a.position:
            yield Difference("extra", b.composite_key, b.version, postgres_hash=b.data_hash)
            b = next(right, None)
        else:
            if a.data_hash != b.data_hash:
                yield Difference("hash_mismatch", a.composite_key, a.version, a.data_hash, b.data_hash)
            a = next(left, None)
            b = next(right, None)
