"""One reconcile's input: the object as Kopf (or the cache) saw it and what the cache knows about it.

Its own module so that the modules a reconcile calls (reader.py) and reconcile.py itself both take
it from here, rather than from each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from orgpipeline_operator.cache import ChildKey
from orgpipeline_operator.ownership import Owner


@dataclass(frozen=True)
class Request:
    """One reconcile: the object as Kopf saw it and the indexes it needs."""

    name: str
    uid: str
    generation: int | None
    resource_version: str | None
    spec: Mapping[str, Any]
    status: Mapping[str, Any] | None
    trigger: str  # create | update | resume | resync | deep
    existing: dict[ChildKey, str | None]
    org_owner: Owner | None  # the recorded owner of the org id (claims.py), as the cache has it
