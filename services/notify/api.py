"""HTTP API of the notify service (mounted under /v1 by shared.http).

Reads need a ``read`` key; test-sends and dead-letter retries need ``operate``. Nothing here
ever returns a secret: channels are shown with the host of their URL only (a Slack webhook URL
*is* its credential), and status-page providers without their keys.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from voxguard.notify.config import Channel, EmailChannel, PagerDutyChannel, SlackChannel, WebhookChannel
from voxguard.notify.store import Attempt, Outbox
from voxguard.shared.auth import require_scope
from voxguard.shared.errors import ApiError


class ChannelOut(BaseModel):
    name: str
    type: str
    enabled: bool
    target: str  # host (or relay host:port): never the secret part
    rate_per_s: float
    concurrency: int
    max_attempts: int


class AttemptOut(BaseModel):
    attempt: int
    status: str
    response_code: int | None
    latency_ms: float | None
    detail: str | None
    at: datetime


class DeliveryOut(BaseModel):
    id: int
    event_id: str
    incident_id: str | None
    channel: str
    provider: str
    route: str | None
    kind: str
    severity: str
    status: str
    attempts: int
    last_code: int | None
    last_detail: str | None
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime
    history: list[AttemptOut] | None = None


def _host(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


def channel_out(name: str, ch: Channel, default_attempts: int) -> ChannelOut:
    if isinstance(ch, SlackChannel):
        target = _host(ch.url.get_secret_value())
    elif isinstance(ch, PagerDutyChannel | WebhookChannel):
        target = _host(ch.url)
    elif isinstance(ch, EmailChannel):
        target = f"smtp://{ch.host}:{ch.port} -> {', '.join(ch.to)}"
    else:  # pragma: no cover
        target = "?"
    attempts = ch.retry.max_attempts if ch.retry else default_attempts
    return ChannelOut(
        name=name,
        type=ch.type,
        enabled=ch.enabled,
        target=target,
        rate_per_s=ch.rate_per_s,
        concurrency=ch.concurrency,
        max_attempts=attempts,
    )


def delivery_out(row: Outbox, history: list[Attempt] | None = None) -> DeliveryOut:
    return DeliveryOut(
        id=row.id,
        event_id=row.source_event_id,
        incident_id=row.incident_id,
        channel=row.channel,
        provider=row.provider,
        route=row.route,
        kind=row.kind,
        severity=row.severity,
        status=row.status,
        attempts=row.attempts,
        last_code=row.last_code,
        last_detail=row.last_detail,
        next_attempt_at=row.next_attempt_at if row.status == "pending" else None,
        created_at=row.created_at,
        updated_at=row.updated_at,
        history=[
            AttemptOut(
                attempt=a.attempt,
                status=a.status,
                response_code=a.response_code,
                latency_ms=a.latency_ms,
                detail=a.detail,
                at=a.at,
            )
            for a in history
        ]
        if history is not None
        else None,
    )


def build_router(get_service: Callable[[], Any]) -> APIRouter:
    """``get_service`` returns the NotifyService (typed loosely: mypy sees the package twice)."""
    router = APIRouter(tags=["notify"])

    @router.get("/notify/channels", response_model=list[ChannelOut])
    async def list_channels() -> list[ChannelOut]:
        """Configured channels, without secrets."""
        n = get_service().cfg.notifications
        return [channel_out(name, ch, n.retry.max_attempts) for name, ch in n.channels.items()]

    @router.get("/notify/routes")
    async def list_routes() -> list[dict[str, Any]]:
        """Routing rules in evaluation order."""
        return [r.model_dump(mode="json") for r in get_service().cfg.notifications.routes]

    @router.post(
        "/notify/channels/{name}/test", response_model=DeliveryOut, dependencies=[Depends(require_scope("operate"))]
    )
    async def test_channel(name: str) -> DeliveryOut:
        """Send a test notification now; the answer is the recorded delivery (first attempt)."""
        svc = get_service()
        if name not in svc.cfg.notifications.channels:
            raise ApiError(404, "unknown_channel", f"no channel named {name!r}")
        row_id = await svc.test_send(name)
        row = await svc.store.run(svc.store.get, row_id)
        assert row is not None
        return delivery_out(row, await svc.store.run(svc.store.attempts, row_id))

    @router.get("/notify/deliveries", response_model=list[DeliveryOut])
    async def list_deliveries(
        incident_id: str | None = None,
        status: Literal["pending", "sent", "dead_letter", "suppressed"] | None = None,
        channel: str | None = None,
        limit: int = Query(100, ge=1, le=1000),
        offset: int = Query(0, ge=0),
    ) -> list[DeliveryOut]:
        """The delivery log, newest first; ``incident_id`` shows everything sent about one incident."""
        rows = await get_service().store.run(
            get_service().store.list,
            incident_id=incident_id,
            status=status,
            channel=channel,
            limit=limit,
            offset=offset,
        )
        return [delivery_out(r) for r in rows]

    @router.get("/notify/deliveries/{delivery_id}", response_model=DeliveryOut)
    async def get_delivery(delivery_id: int) -> DeliveryOut:
        """One delivery with every attempt (status, response code, latency)."""
        store = get_service().store
        row = await store.run(store.get, delivery_id)
        if row is None:
            raise ApiError(404, "not_found", f"no delivery {delivery_id}")
        return delivery_out(row, await store.run(store.attempts, delivery_id))

    @router.get("/notify/dead-letters", response_model=list[DeliveryOut])
    async def dead_letters(limit: int = Query(100, ge=1, le=1000)) -> list[DeliveryOut]:
        rows = await get_service().store.run(get_service().store.list, status="dead_letter", limit=limit)
        return [delivery_out(r) for r in rows]

    @router.post(
        "/notify/dead-letters/{delivery_id}/retry",
        response_model=DeliveryOut,
        dependencies=[Depends(require_scope("operate"))],
    )
    async def retry_dead_letter(delivery_id: int) -> DeliveryOut:
        """Put a dead letter back in the outbox with a fresh attempt budget."""
        svc = get_service()
        ok = await svc.store.run(svc.store.requeue, delivery_id, svc.clock.now())
        if not ok:
            row = await svc.store.run(svc.store.get, delivery_id)
            if row is None:
                raise ApiError(404, "not_found", f"no delivery {delivery_id}")
            raise ApiError(409, "not_dead_letter", f"delivery {delivery_id} is {row.status}, not dead_letter")
        svc.dispatcher.kick()
        row = await svc.store.run(svc.store.get, delivery_id)
        assert row is not None
        return delivery_out(row)

    @router.get("/status-components")
    async def status_components() -> list[dict[str, Any]]:
        """Every status-page component: current status, active incidents, vendor ids."""
        return get_service().status.view()

    @router.get("/status-components/preview")
    async def status_preview() -> list[dict[str, Any]]:
        """Dry run: what would be sent to each provider if evaluated now (credentials masked)."""
        return await asyncio.to_thread(get_service().status.preview)

    return router
