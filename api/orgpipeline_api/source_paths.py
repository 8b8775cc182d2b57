"""Which S3 objects are an org's table files: one rule for the data plane's listing and the
operator's file-arrival routing.

- An org's `source.prefix` is a folder: `org-1` means the keys under `org-1/`, so it never takes
  `org-10/...` (a bare string prefix would).
- A table's `filePattern` is matched segment by segment: its `*` does not cross a `/`, so `*.csv`
  takes the files directly in the org's folder and not those of a folder below it, which may be
  another org's prefix (`data/` and `data/b/`).
"""

from __future__ import annotations

import fnmatch


def folder(prefix: str) -> str:
    """The prefix as a folder: empty (the whole bucket) or ending with `/`."""
    return prefix if not prefix or prefix.endswith("/") else prefix + "/"


def matches(relative: str, pattern: str) -> bool:
    """Whether a key relative to the org's folder is a file of the table with this pattern."""
    return relative.count("/") == pattern.count("/") and fnmatch.fnmatchcase(relative, pattern)
