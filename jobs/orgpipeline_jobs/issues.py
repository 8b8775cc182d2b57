"""A quality issue of one value: its type, column and message (shared by the rules and the checker).

In a module of its own, without pyarrow: a run's result counts issues without needing the columnar
rules (`rules`), and a run with nothing new never imports pyarrow.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Issue:
    issue_type: str
    field: str | None
    message: str
