"""What a tier means: the resources of one job, the org's quota and limits, and the run deadline."""

from __future__ import annotations

from dataclasses import dataclass

from orgpipeline_api.v1alpha1 import Tier


@dataclass(frozen=True)
class TierResources:
    """Requests and limits of one job container, the namespace quota, and the job deadline."""

    cpu_request: str
    memory_request: str
    cpu_limit: str
    memory_limit: str
    quota_cpu_requests: str
    quota_memory_requests: str
    quota_cpu_limits: str
    quota_memory_limits: str
    quota_pods: int
    active_deadline_seconds: int
    tmp_size: str


TIERS: dict[Tier, TierResources] = {
    Tier.small: TierResources("100m", "256Mi", "500m", "512Mi", "1", "1Gi", "2", "2Gi", 4, 1800, "1Gi"),
    Tier.medium: TierResources("250m", "512Mi", "1", "1Gi", "2", "4Gi", "4", "8Gi", 8, 3600, "4Gi"),
    Tier.large: TierResources("500m", "1Gi", "2", "4Gi", "8", "16Gi", "16", "32Gi", 16, 7200, "16Gi"),
}


def of(tier: Tier) -> TierResources:
    return TIERS[tier]
