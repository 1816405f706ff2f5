"""What every service is built from, in one process or many: settings, config and the bus.

A service module exposes ``build(ctx) -> ServiceSpec`` (see ``voxguard.shared.http``): an
inert description (routers, readiness checks, lifespans). ``voxguard serve`` builds one,
``voxguard up`` builds all four into one app; the bus connection is opened once, by the
first lifespan, and shared.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from fastapi import FastAPI

from voxguard.shared.bus import Bus
from voxguard.shared.config import VoxGuardConfig
from voxguard.shared.settings import Settings


@dataclass
class ServiceContext:
    """Shared by the services of one process."""

    settings: Settings
    config: VoxGuardConfig
    nats_url: str
    bus: Bus = field(init=False)

    def __post_init__(self) -> None:
        self.bus = Bus(self.nats_url, name="voxguard", namespace=self.settings.nats_namespace)

    @contextlib.asynccontextmanager
    async def bus_lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        """Connect to NATS and make sure the streams exist; close at shutdown."""
        await self.bus.connect()
        await self.bus.ensure_streams()
        try:
            yield
        finally:
            await self.bus.close()
