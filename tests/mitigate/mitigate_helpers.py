"""Builders shared by the mitigate tests (incidents against the example config)."""

from __future__ import annotations

import datetime as dt
import uuid

from voxguard.shared.config import Tier, VoxGuardConfig, load_config
from voxguard.shared.config import example_config_path as _example
from voxguard.shared.messages import IncidentEvent, IncidentView, SourceCount


def example_config() -> VoxGuardConfig:
    return load_config(_example())


def target_id(config: VoxGuardConfig, component: str, label: str) -> str:
    """The id of a configured target, e.g. ``("sbc-eu-1", "udp/5060")``."""
    for t in config.iter_targets():
        if t.component == component and t.monitor.label() == label:
            return t.id
    raise KeyError((component, label))


def counts(prefixes: list[str]) -> list[SourceCount]:
    """Sources in descending volume order."""
    n = len(prefixes)
    return [SourceCount(source=p, packets=(n - i) * 1000, bytes=(n - i) * 100_000) for i, p in enumerate(prefixes)]


def incident(
    config: VoxGuardConfig,
    *,
    tier: str = "sbc",
    component: str = "sbc-eu-1",
    label: str = "udp/5060",
    vectors: tuple[str, ...] = ("sip_flood",),
    top_prefixes: list[str] | None = None,
    top_sources: list[str] | None = None,
    host: str | None = None,
    learning: bool = False,
    incident_id: str | None = None,
    event: str = "opened",
) -> IncidentEvent:
    tid = target_id(config, component, label)
    if host:
        tid = next(t for t in config.iter_targets() if t.id == tid).for_host(host).id
    view = IncidentView(
        id=incident_id or uuid.uuid4().hex,
        tier=Tier(tier),
        target_id=tid,
        target=f"{component} {label}",
        component=component,
        host=host,
        vectors=list(vectors),
        state="resolved" if event == "resolved" else "open",
        severity="major",
        opened_at=dt.datetime.now(dt.UTC),
        learning=learning,
        top_sources=counts(top_sources or []),
        top_prefixes=counts(top_prefixes or []),
    )
    return IncidentEvent(event=event, tier=Tier(tier), incident=view)  # type: ignore[arg-type]
