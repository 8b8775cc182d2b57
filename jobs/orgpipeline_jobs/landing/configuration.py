"""Settings of the landing stage."""

from __future__ import annotations

from dataclasses import dataclass, field

from orgpipeline_jobs.source.configuration import SourceConfig


@dataclass(frozen=True)
class LandingConfig:
    batch_rows: int = 50_000
    """Rows per landing batch (at most one parse block): one heads query, one insert_many, one commit."""
    fused_load: bool = True
    """Load each batch into PostgreSQL as it lands (the `run` path); False leaves versions pending."""
    write_rows: int = 2000
    """New versions written per PostgreSQL transaction and MongoDB submission (bounds memory: a
    part's documents are held until MongoDB has them; 2,000 measured 33 MB less peak RSS than 5,000)."""
    mongo_streams: int = 2
    """Concurrent insert_many streams to MongoDB (FerretDB takes more documents/s from a few)."""
    mongo_chunk: int = 1000
    """Documents per insert_many call."""
    source: SourceConfig = field(default_factory=SourceConfig)
