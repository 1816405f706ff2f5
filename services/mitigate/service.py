"""The mitigate service: incidents in, BGP FlowSpec rules out through ExaBGP.

Pieces (each its own module): ``policy`` (runbooks), ``whitelist`` (split/drop), ``rails``,
``flowspec`` (ExaBGP command text), ``store`` (desired rules, whitelist, audit), ``reconcile``
(desired == announced), ``exabgp`` + ``bridge`` (the ExaBGP child and its process-API relay),
``engine`` (ties them together) and ``api``.
"""

from __future__ import annotations

from voxguard.mitigate.api import build_router
from voxguard.mitigate.engine import MitigateService
from voxguard.mitigate.settings import parse_bgp
from voxguard.shared.db import make_engine
from voxguard.shared.http import ServiceSpec
from voxguard.shared.runtime import ServiceContext


def build(ctx: ServiceContext) -> ServiceSpec:
    """The mitigate service's routes, readiness and lifespan (the ``bgp`` section is validated now)."""
    bgp = parse_bgp(ctx.config.bgp)
    engine = make_engine(ctx.settings.effective_database_url(), application_name="voxguard-mitigate")
    svc = MitigateService(ctx.config, ctx.bus, engine, ctx.settings.ensure_var_dir(), bgp=bgp, owns_engine=True)
    return ServiceSpec(
        name="mitigate",
        routers=[build_router(lambda: svc)],
        readiness={"nats": ctx.bus.ready, "mitigate": svc.ready},
        lifespans=[svc.lifespan],
        description="BGP FlowSpec rules through ExaBGP, with whitelists and safety rails.",
    )
