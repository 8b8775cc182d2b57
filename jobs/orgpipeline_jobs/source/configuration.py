"""Settings of the source stage."""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1 << 20


@dataclass(frozen=True)
class SourceConfig:
    block_size: int = 1 * MiB
    """Bytes parsed per batch; bounds memory (each block's rows become Python objects where a
    version is written: 1 MiB measured 20 MB less peak RSS than 2 MiB on a 200k-row first load).
    A row larger than this is retried with bigger blocks."""
    max_block_size: int = 64 * MiB
    """The largest block tried; a row larger than this rejects the file."""
    max_field_bytes: int = 1 * MiB
    """A value larger than this rejects its row (field_too_large)."""
    max_record_bytes: int = 15 * MiB
    """A row whose values together are larger than this is rejected (record_too_large): its
    document must stay under MongoDB's 16 MiB, and a document holds the values once plus well under
    1 MiB of metadata, keys and quality texts. Rows past `max_block_size` still reject the file."""
    max_columns: int = 1024
    """A header wider than this rejects the file."""
    sniff_bytes: int = 8192
    """Bytes inspected at the start of a file to tell a binary file from text (a NUL in its first
    line, the header, makes it binary; a NUL in a data row rejects that row only)."""
