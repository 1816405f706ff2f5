"""The notify service: incident and mitigation events in, notifications and status pages out.

Flow: bus event -> ``Alert`` -> routing decisions -> durable outbox rows (idempotency keys,
persisted before any send) -> ack. The dispatcher drains the outbox with per-channel limits and
retries; the status engine turns incidents into debounced component changes, which go through
the same outbox. ``NotifyService`` is usable without a bus (tests, benchmark).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
from fastapi import FastAPI

from voxguard.notify import events
from voxguard.notify.channels import ChannelSender, SendResult, make_sender
from voxguard.notify.clock import Clock, SystemClock
from voxguard.notify.config import NotifyConfig, RetryPolicy, load_notify_config
from voxguard.notify.delivery import ChannelLimits, Dispatcher, Publish, RawSender, idempotency_key
from voxguard.notify.routing import Router
from voxguard.notify.statuspages import make_adapter
from voxguard.notify.statuspages.engine import StatusEngine, channel_name
from voxguard.notify.statuspages.sender import StatusPageSender
from voxguard.notify.store import MIGRATIONS, Store
from voxguard.shared.bus import STREAM_EVENTS, Bus, Delivery, Subscription
from voxguard.shared.db import make_engine, readiness_check, upgrade_to_head
from voxguard.shared.http import ServiceSpec
from voxguard.shared.messages import IncidentEvent, MitigationEvent, NotificationEvent, subject_for
from voxguard.shared.runtime import ServiceContext

log = logging.getLogger("voxguard.notify")

STATUS_RETRY = RetryPolicy(max_attempts=20, base_s=2.0, cap_s=3600.0)  # status pages: keep trying for hours


class AlertSender:
    """Adapts a channel sender to the outbox's JSON payloads."""

    def __init__(self, inner: ChannelSender) -> None:
        self.inner = inner
        self.name, self.provider = inner.name, inner.provider

    async def send_payload(
        self, payload: dict[str, Any], key: str, client: httpx.AsyncClient, timeout_s: float
    ) -> SendResult:
        return await self.inner.send(events.Alert.model_validate(payload), key, client, timeout_s)


class NotifyService:
    def __init__(
        self,
        cfg: NotifyConfig,
        store: Store,
        *,
        clock: Clock | None = None,
        bus: Bus | None = None,
        poll_s: float = 0.25,
        tick_s: float = 1.0,
        client: httpx.AsyncClient | None = None,
        publish: Publish | None = None,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.clock = clock or SystemClock()
        self.bus = bus
        self.tick_s = tick_s
        n = cfg.notifications
        self.router = Router(n, self.clock)
        senders: dict[str, RawSender] = {}
        limits: dict[str, ChannelLimits] = {}
        for name, ch in n.channels.items():
            senders[name] = AlertSender(make_sender(name, ch, n.link_base))
            limits[name] = ChannelLimits(ch.rate_per_s, ch.burst, ch.concurrency, ch.retry or n.retry)
        adapters = {}
        for name, prov in cfg.status_pages.providers.items():
            ad = make_adapter(name, prov)
            adapters[name] = ad
            chan = channel_name(name)
            senders[chan] = StatusPageSender(chan, ad, store, dry_run=prov.dry_run)
            limits[chan] = ChannelLimits(prov.rate_per_s, 1, 1, prov.retry or STATUS_RETRY, ordered=True)
        self.dispatcher = Dispatcher(
            store,
            senders,
            limits,
            self.clock,
            publish=publish or (self._publish if bus else None),
            poll_s=poll_s,
            client=client,
        )
        self.status = StatusEngine(cfg, store, self.clock, adapters, self.dispatcher.enqueue)
        self._subs: list[Subscription[Any]] = []
        self._ticker: asyncio.Task[None] | None = None

    # -- events in ------------------------------------------------------------------------------

    async def handle_alert(self, alert: events.Alert) -> list[int]:
        """Route, persist (idempotently), and feed the status engine. Returns new outbox ids."""
        rows: list[dict[str, Any]] = []
        suppressed: list[dict[str, Any]] = []
        payload = alert.model_dump_json()
        for d in self.router.decide(alert):
            row = {
                "key": idempotency_key(alert.source_event_id, d.channel),
                "source_event_id": alert.source_event_id,
                "incident_id": alert.incident_id,
                "channel": d.channel,
                "provider": self.dispatcher.senders[d.channel].provider,
                "route": d.route,
                "kind": alert.kind,
                "severity": alert.severity,
                "tier": alert.tier,
                "payload": payload,
            }
            if d.suppressed:
                row.update(status="suppressed", last_detail=d.suppressed)
                suppressed.append(row)
            rows.append(row)
        ids = await self.dispatcher.enqueue(rows)
        for row in suppressed:
            await self.dispatcher.announce_suppressed(row)
        await self.status.on_alert(alert)
        return ids

    async def on_incident(self, ev: IncidentEvent, delivery: Delivery | None = None) -> None:
        await self.handle_alert(events.from_incident(ev))

    async def on_mitigation(self, ev: MitigationEvent, delivery: Delivery | None = None) -> None:
        await self.handle_alert(events.from_mitigation(ev))

    async def _publish(self, ev: NotificationEvent) -> None:
        assert self.bus is not None
        await self.bus.publish(ev.subject(), ev)

    # -- test send ------------------------------------------------------------------------------

    async def test_send(self, channel: str) -> int:
        """Send one ``test`` alert now through the normal path (recorded like any delivery)."""
        alert = events.Alert(
            source_event_id=f"test-{uuid.uuid4().hex[:16]}", kind="test", ts=self.clock.now(), severity="info"
        )
        far = self.clock.now().replace(year=self.clock.now().year + 100)  # keep the pump off it
        row = {
            "key": idempotency_key(alert.source_event_id, channel),
            "source_event_id": alert.source_event_id,
            "channel": channel,
            "provider": self.dispatcher.senders[channel].provider,
            "route": "test",
            "kind": "test",
            "severity": "info",
            "tier": None,
            "payload": alert.model_dump_json(),
            "next_attempt_at": far,
        }
        [row_id] = await self.dispatcher.enqueue([row])
        outbox = await self.store.run(self.store.get, row_id)
        assert outbox is not None
        await self.dispatcher._deliver(outbox)  # one attempt now; retries (if any) follow the policy
        return int(row_id)

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.status.load()
        await self.dispatcher.start()
        self._ticker = asyncio.create_task(self._tick(), name="notify-status-tick")
        if self.bus is not None:
            self._subs.append(
                await self.bus.subscribe_durable(
                    STREAM_EVENTS, "notify-incidents", subject_for("incident"), IncidentEvent, self.on_incident
                )
            )
            self._subs.append(
                await self.bus.subscribe_durable(
                    STREAM_EVENTS, "notify-mitigations", subject_for("mitigation"), MitigationEvent, self.on_mitigation
                )
            )

    async def _tick(self) -> None:
        """The 60-second rule and the debounce are time-driven: evaluate even without events."""
        while True:
            await asyncio.sleep(self.tick_s)
            try:
                await self.status.evaluate()
            except Exception:
                log.exception("status-page evaluation failed")

    async def stop(self) -> None:
        for sub in self._subs:
            await sub.stop()
        self._subs.clear()
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        await self.dispatcher.stop()


def build(ctx: ServiceContext) -> ServiceSpec:
    """The notify service's routes, readiness and lifespan; refuses a bad config here."""
    from voxguard.notify.api import build_router

    cfg = load_notify_config(ctx.config, str(ctx.settings.config_path or "voxguard.yaml"))
    engine = make_engine(ctx.settings.effective_database_url(), application_name="voxguard-notify")
    holder: dict[str, NotifyService] = {}

    def service() -> NotifyService:
        if "svc" not in holder:
            holder["svc"] = NotifyService(cfg, Store(engine), bus=ctx.bus)
        return holder["svc"]

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(upgrade_to_head, engine, MIGRATIONS)
        svc = service()
        await svc.start()
        try:
            yield
        finally:
            await svc.stop()

    return ServiceSpec(
        name="notify",
        routers=[build_router(service)],
        readiness={"nats": ctx.bus.ready, "db": readiness_check(engine)},
        lifespans=[lifespan],
        description="Slack, PagerDuty, email, webhooks and status pages.",
    )


__all__ = ["NotifyService", "build", "orjson"]
