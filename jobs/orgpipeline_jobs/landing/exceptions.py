"""Errors of the landing stage."""

from __future__ import annotations

from orgpipeline_api.errors import PipelineError


class LandingError(PipelineError):
    """MongoDB refused a write of the landing (other than a replayed duplicate)."""

    stage = "landing"
