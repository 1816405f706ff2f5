"""The baseline service. Time series, seasonal baselines, detectors and incidents.

Until its issue lands this service serves only the common endpoints (`/healthz`,
`/readyz`, `/metrics`, OpenAPI) and reports NATS readiness.
"""

from __future__ import annotations

from voxguard.shared.http import ServiceSpec
from voxguard.shared.runtime import ServiceContext


def build(ctx: ServiceContext) -> ServiceSpec:
    """The baseline service's routes, readiness and lifespan."""
    return ServiceSpec(
        name="baseline",
        readiness={"nats": ctx.bus.ready},
        description="Time series, seasonal baselines, detectors and incidents.",
    )
