"""Errors of the warehouse stage."""

from __future__ import annotations

from orgpipeline_api.errors import PipelineError


class WarehouseError(PipelineError):
    """PostgreSQL refused a statement of the load (schema drift, permissions)."""

    stage = "warehouse"
