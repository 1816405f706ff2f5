"""Slack, PagerDuty and signed webhooks against the fake vendors' contracts."""

from __future__ import annotations

import datetime as dt

from voxguard.notify.store import Store
from voxguard.shared.messages import FlowMatch, MitigationEvent, MitigationView

from .conftest import Published, incident_event, make_config, running
from .fakesaas import PD_KEY, FakeSaaS


async def test_incident_lifecycle_reaches_every_channel_within_contract(
    saas: FakeSaaS, store: Store, published: Published
) -> None:
    cfg = make_config(saas.url)
    async with running(cfg, store, publish=published) as svc:
        for event in ("opened", "mitigated", "resolved"):
            await svc.on_incident(incident_event(event, severity="critical"))
        await svc.on_incident(incident_event("opened", incident_id="inc-2", severity="info"))
        await svc.dispatcher.drain()
    assert saas.violations == []
    pd = saas.of("pagerduty")
    assert [r.body["event_action"] for r in pd] == ["trigger", "acknowledge", "resolve"]
    assert {r.body["dedup_key"] for r in pd} == {"voxguard:inc-1"}  # one PagerDuty alert per incident
    assert pd[0].body["payload"]["severity"] == "critical" and pd[0].body["routing_key"] == PD_KEY
    slack = saas.of("slack")
    assert len(slack) == 3
    text = str(slack[0].body["blocks"])
    for needle in ("sbc", "sip_flood", "12.5x", "198.51.100.7", "not mitigated", "/v1/incidents/inc-1"):
        assert needle in text, needle
    hooks = saas.of("webhook")
    assert len(hooks) == 1 and hooks[0].body["type"] == "ddos.attack.detected"
    assert hooks[0].body["data"]["severity"] == "info"
    sent = [e for e in published.events if e.status == "sent"]
    assert len(sent) == 7 and {e.provider for e in sent} == {"pagerduty", "slack", "webhook"}
    assert all(e.subject() == "voxguard.notification.v1.sbc" for e in sent)


async def test_severity_maps_to_pagerduty_values(saas: FakeSaaS, store: Store) -> None:
    base = make_config(saas.url).notifications.model_dump(mode="python")
    cfg = make_config(
        saas.url,
        notifications={
            "channels": {"oncall": {**base["channels"]["oncall"], "routing_key": PD_KEY, "type": "pagerduty"}},
            "routes": [{"name": "all", "channels": ["oncall"], "match": {"kinds": ["incident.opened"]}}],
        },
    )
    async with running(cfg, store) as svc:
        for n, sev in enumerate(("critical", "major", "warning", "info")):
            await svc.on_incident(incident_event(incident_id=f"i{n}", severity=sev))
        await svc.dispatcher.drain()
    assert saas.violations == []
    assert [r.body["payload"]["severity"] for r in saas.of("pagerduty")] == ["critical", "error", "warning", "info"]


async def test_mitigation_events_are_routed(saas: FakeSaaS, store: Store) -> None:
    cfg = make_config(saas.url)
    mit = MitigationView(
        id="m-1",
        incident_id="inc-1",
        state="failed",
        action="discard",
        match=FlowMatch(destination="192.0.2.10/32", sources=["198.51.100.0/24"], protocol="udp"),
        created_at=dt.datetime(2026, 1, 5, tzinfo=dt.UTC),
    )
    async with running(cfg, store) as svc:
        await svc.on_mitigation(MitigationEvent(event="failed", tier="sbc", mitigation=mit))  # type: ignore[arg-type]
        await svc.dispatcher.drain()
    assert saas.violations == []
    [msg] = saas.of("slack")  # failed mitigation = major -> NOC
    assert "mitigation failed" in msg.body["text"]
