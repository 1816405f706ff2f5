"""The mitigate service. BGP FlowSpec rules through ExaBGP, with whitelists and safety rails.

Until its issue lands this service serves only the common endpoints (`/healthz`,
`/readyz`, `/metrics`, OpenAPI) and reports NATS readiness.
"""

from __future__ import annotations

from voxguard.shared.http import ServiceSpec
from voxguard.shared.runtime import ServiceContext


def build(ctx: ServiceContext) -> ServiceSpec:
    """The mitigate service's routes, readiness and lifespan."""
    return ServiceSpec(
        name="mitigate",
        readiness={"nats": ctx.bus.ready},
        description="BGP FlowSpec rules through ExaBGP, with whitelists and safety rails.",
    )
