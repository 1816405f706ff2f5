"""The notify service. Slack, PagerDuty, email, webhooks and status pages.

Until its issue lands this service serves only the common endpoints (`/healthz`,
`/readyz`, `/metrics`, OpenAPI) and reports NATS readiness.
"""

from __future__ import annotations

from voxguard.shared.http import ServiceSpec
from voxguard.shared.runtime import ServiceContext


def build(ctx: ServiceContext) -> ServiceSpec:
    """The notify service's routes, readiness and lifespan."""
    return ServiceSpec(
        name="notify",
        readiness={"nats": ctx.bus.ready},
        description="Slack, PagerDuty, email, webhooks and status pages.",
    )
