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


def outside_source(uri: str, bucket: str, prefix: str) -> str | None:
    """Why `s3://bucket/key` is not an object of the org's source (its bucket, under its prefix's
    folder), or None when it is. The key is taken literally, as S3 does: a `.` or `..` segment, an
    empty segment, a backslash, a `%` (URL-encoded tricks), a control character or a character that
    Unicode compatibility folds into another (look-alike slashes and dots) is refused outright."""
    import unicodedata

    rest = uri.removeprefix("s3://")
    got_bucket, _, key = rest.partition("/")
    if got_bucket != bucket:
        return f"{uri}: not in the org's source bucket {bucket}"
    own = folder(prefix)
    bad = (
        not key
        or key.endswith("/")
        or any(s in ("", ".", "..") for s in key.split("/"))
        or any(c in key for c in "\\%")
        or any(ord(c) < 32 or ord(c) == 127 for c in key)
        or unicodedata.normalize("NFKC", key) != key
    )
    if bad:
        return (
            f"{uri}: not a plain object key (no ., .. or empty part, \\, %, control or look-alike characters)"
        )
    if not key.startswith(own):
        return f"{uri}: outside the org's source s3://{bucket}/{own}"
    return None
