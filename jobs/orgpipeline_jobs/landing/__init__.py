"""Landing stage: CSV rows -> versioned, audited, quality-scored MongoDB documents."""
