"""Fixtures of the notify tests: the fake SaaS server, a migrated store, config builders."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from voxguard.notify.clock import Clock
from voxguard.notify.config import NotifyConfig, load_notify_config
from voxguard.notify.service import NotifyService
from voxguard.notify.store import MIGRATIONS, Store
from voxguard.shared.config import VoxGuardConfig
from voxguard.shared.db import make_engine, upgrade_to_head
from voxguard.shared.messages import IncidentEvent, IncidentView, NotificationEvent, SourceCount

from .fakesaas import (
    CACHET_TOKEN,
    IS_KEY,
    IS_PAGE,
    PD_KEY,
    SLACK_PATH,
    SP_KEY,
    SP_PAGE,
    WH_SECRET,
    FakeSaaS,
)

FAST_RETRY = {"max_attempts": 3, "base_s": 0.05, "cap_s": 0.2, "jitter": 0.5, "timeout_s": 1.0}
TIERS: dict[str, Any] = {
    "sbc": {
        "components": [{"name": "sbc-eu-1", "addresses": ["192.0.2.10/32"], "region": "eu"}],
        "monitors": [{"protocol": "udp", "ports": "5060"}],
    }
}


@pytest.fixture
def spec_dir(shared_dir: Path) -> Path:
    return shared_dir / "data" / "api-specs"


@pytest.fixture
async def saas(spec_dir: Path) -> AsyncIterator[FakeSaaS]:
    server = await FakeSaaS(spec_dir).start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def store(sqlite_url: str) -> Store:
    engine = make_engine(sqlite_url)
    upgrade_to_head(engine, MIGRATIONS)
    return Store(engine)


def channels(base: str) -> dict[str, Any]:
    return {
        "oncall": {
            "type": "pagerduty",
            "routing_key": PD_KEY,
            "url": f"{base}/pagerduty/v2/enqueue",
            "retry": FAST_RETRY,
        },
        "noc": {"type": "slack", "url": f"{base}{SLACK_PATH}", "retry": FAST_RETRY, "rate_per_s": 50, "burst": 50},
        "hook": {"type": "webhook", "url": f"{base}/webhook/ops", "secret": WH_SECRET, "retry": FAST_RETRY},
    }


def routes() -> list[dict[str, Any]]:
    return [
        {
            "name": "page",
            "match": {
                "severity": ["critical"],
                "kinds": ["incident.opened", "incident.mitigated", "incident.resolved"],
            },
            "channels": ["oncall"],
        },
        {"name": "noc", "match": {"severity": ["warning", "major", "critical"]}, "channels": ["noc"]},
        {"name": "monitoring", "match": {"severity": ["info"]}, "channels": ["hook"]},
    ]


def providers(base: str, **extra: Any) -> dict[str, Any]:
    return {
        "sp": {
            "type": "statuspage",
            "base_url": f"{base}/statuspage/v1",
            "page_id": SP_PAGE,
            "api_key": SP_KEY,
            "component_ids": {"sip_signaling": "8kbf7d35c070", "region-eu": "reg0eu"},
            **extra,
        },
        "is": {
            "type": "instatus",
            "base_url": f"{base}/instatus",
            "page_id": IS_PAGE,
            "api_key": IS_KEY,
            "component_ids": {"sip_signaling": "ckf01fvnxywz50a35nh1qzssm"},
            **extra,
        },
        "ca": {
            "type": "cachet",
            "base_url": f"{base}/cachet/api/v1",
            "token": CACHET_TOKEN,
            "component_ids": {"sip_signaling": "3"},
            **extra,
        },
        "gen": {"type": "generic", "base_url": f"{base}/generic", **extra},
    }


def make_config(
    base: str,
    *,
    notifications: dict[str, Any] | None = None,
    status_pages: dict[str, Any] | None = None,
) -> NotifyConfig:
    raw = VoxGuardConfig.model_validate(
        {
            "regions": ["eu"],
            "tiers": TIERS,
            "notifications": notifications
            if notifications is not None
            else {"channels": channels(base), "routes": routes()},
            "status_pages": status_pages if status_pages is not None else {"providers": {}},
        }
    )
    return load_notify_config(raw)


def incident_event(
    event: str = "opened",
    *,
    incident_id: str = "inc-1",
    severity: str = "critical",
    opened_at: dt.datetime | None = None,
    state: str | None = None,
    region: str | None = "eu",
    tier: str = "sbc",
) -> IncidentEvent:
    opened = opened_at or dt.datetime(2026, 1, 5, 12, 0, tzinfo=dt.UTC)
    view = IncidentView(
        id=incident_id,
        tier=tier,  # type: ignore[arg-type]
        target_id="t-sbc-5060",
        target="sbc-eu-1 udp/5060",
        region=region,
        vectors=["sip_flood"],
        state=state or ("resolved" if event == "resolved" else "mitigated" if event == "mitigated" else "open"),  # type: ignore[arg-type]
        severity=severity,  # type: ignore[arg-type]
        opened_at=opened,
        resolved_at=opened + dt.timedelta(minutes=5) if event == "resolved" else None,
        peak_ratio=12.5,
        top_sources=[SourceCount(source="198.51.100.7", packets=120000, bytes=9_000_000)],
    )
    return IncidentEvent(event=event, tier=tier, incident=view)  # type: ignore[arg-type]


class Published:
    """Collects the NotificationEvents the service would publish on the bus."""

    def __init__(self) -> None:
        self.events: list[NotificationEvent] = []

    async def __call__(self, ev: NotificationEvent) -> None:
        self.events.append(ev)


@pytest.fixture
def published() -> Published:
    return Published()


@contextlib.asynccontextmanager
async def running(
    cfg: NotifyConfig, store: Store, *, clock: Clock | None = None, publish: Published | None = None
) -> AsyncIterator[NotifyService]:
    svc = NotifyService(cfg, store, clock=clock, poll_s=0.02, tick_s=3600, publish=publish)
    await svc.start()
    try:
        yield svc
    finally:
        await svc.stop()
