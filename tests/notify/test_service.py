"""The service as wired in production: build(ctx) validation, and events over a real NATS."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from voxguard.notify.service import NotifyService, build
from voxguard.notify.store import Store
from voxguard.shared.bus import STREAM_EVENTS
from voxguard.shared.config import ConfigError, VoxGuardConfig
from voxguard.shared.messages import NotificationEvent, subject_for
from voxguard.shared.runtime import ServiceContext
from voxguard.shared.settings import Settings

from .conftest import TIERS, channels, incident_event, make_config, routes
from .fakesaas import FakeSaaS


def _ctx(sqlite_url: str, notifications: dict[str, Any]) -> ServiceContext:
    cfg = VoxGuardConfig.model_validate({"tiers": TIERS, "regions": ["eu"], "notifications": notifications})
    return ServiceContext(Settings.model_validate({"DATABASE_URL": sqlite_url}), cfg, "nats://127.0.0.1:1")


def test_build_refuses_bad_notify_config(sqlite_url: str) -> None:
    with pytest.raises(ConfigError, match=r"notifications\.channels\.noc\.url"):
        build(_ctx(sqlite_url, {"channels": {"noc": {"type": "slack", "url": "not a url"}}}))


def test_build_gives_routes_and_a_lifespan(sqlite_url: str) -> None:
    spec = build(_ctx(sqlite_url, {"channels": channels("http://127.0.0.1:9"), "routes": routes()}))
    paths = {r.path for router in spec.routers for r in router.routes}  # type: ignore[attr-defined]
    assert {"/notify/deliveries", "/notify/dead-letters/{delivery_id}/retry", "/status-components"} <= paths
    assert spec.lifespans and set(spec.readiness) == {"nats", "db"}


async def test_incident_on_the_bus_is_delivered_and_reported(bus: Any, saas: FakeSaaS, store: Store) -> None:
    svc = NotifyService(make_config(saas.url), store, bus=bus, poll_s=0.02, tick_s=3600)
    outcomes: list[NotificationEvent] = []

    async def collect(ev: NotificationEvent, _d: Any) -> None:
        outcomes.append(ev)

    await svc.start()
    sub = await bus.subscribe_durable(STREAM_EVENTS, "t-notif", subject_for("notification"), NotificationEvent, collect)
    try:
        ev = incident_event(severity="critical")
        await bus.publish(ev.subject(), ev)
        await bus.publish(ev.subject(), ev)  # same id: JetStream dedups; our outbox would anyway
        for _ in range(200):
            if len([o for o in outcomes if o.status == "sent"]) >= 2:
                break
            await asyncio.sleep(0.05)
    finally:
        await sub.stop()
        await svc.stop()
    assert {(o.provider, o.status) for o in outcomes} == {("pagerduty", "sent"), ("slack", "sent")}
    assert all(o.incident_id == "inc-1" and o.source_event_id == ev.id for o in outcomes)
    assert len(saas.of("pagerduty")) == 1 and len(saas.of("slack")) == 1
