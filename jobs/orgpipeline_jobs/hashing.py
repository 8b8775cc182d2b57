"""data_hash: SHA-256 over a record's normalised business data.

Values are hashed in their canonical form (see `values.py`: "042" in an integer column is 42,
decimals are quantised to the column's scale), keyed by column name with sorted keys, so neither the
CSV's formatting nor the order of columns in the file or the manifest changes a record's hash.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any


def canonical_json(data: Mapping[str, Any]) -> str:
    """The text the data hash covers: sorted keys, no spaces, UTF-8 as is."""
    return json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def data_hash(data: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(data).encode("utf-8")).hexdigest()


def changed_fields(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Columns whose canonical value differs, sorted."""
    return sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
