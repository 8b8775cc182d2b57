"""Composite keys in the seed's format, `org_{org_id}_{table}_{business keys}`, made injective.

The seed joins the business-key values with `_`, so ("A_B", "C") and ("A", "B_C") collide. Here
each value is percent-escaped for `%`, `_` and `~` before the join: ordinary values (no such
characters) stay readable, and since an escaped value never contains `_`, the join can be split back
unambiguously, so two different tuples never give the same key. A key longer than `max_length`
becomes `org_{org}_{table}_~sha256~{hex}` of the readable form: `~` never occurs in a readable
key's value part, so hashed and readable keys cannot collide either (up to SHA-256 collisions).

Keys are unique within one org's table, the scope of the MongoDB collection and PostgreSQL table
that hold them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from orgpipeline_api import store_names

MAX_KEY_LENGTH = 200
"""Longer keys are hashed: they stay usable as index entries and URL parts."""

ESCAPES = {"%": "%25", "_": "%5F", "~": "%7E"}
"""Each escaped character and its escape (`%` first: applied in order, no escape is escaped again)."""

_ESCAPES = str.maketrans(ESCAPES)


def escape(value: str) -> str:
    return value.translate(_ESCAPES)


def prefix(org_id: str, table: str) -> str:
    """`org_{org_id}_{table}_`: the record's org id (`store_names.record_org_id`), then the table."""
    return f"{store_names.record_org_id(org_id)}_{table}_"


def composite_key(org_id: str, table: str, values: Sequence[str], *, max_length: int = MAX_KEY_LENGTH) -> str:
    """The key of one record from its business-key values (canonical strings, never empty)."""
    head = prefix(org_id, table)
    body = "_".join(escape(v) for v in values)
    key = head + body
    if len(key) <= max_length:
        return key
    return head + "~sha256~" + hashlib.sha256(body.encode("utf-8")).hexdigest()


def split_key(org_id: str, table: str, key: str) -> list[str] | None:
    """The business-key values of a readable key (None for a hashed one): proof of injectivity."""
    head = prefix(org_id, table)
    if not key.startswith(head):
        raise ValueError(f"key {key!r} does not belong to org {org_id} table {table}")
    body = key[len(head) :]
    if body.startswith("~sha256~"):
        return None
    from urllib.parse import unquote

    return [unquote(part) for part in body.split("_")]
