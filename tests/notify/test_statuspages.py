"""Status pages: the 60-second rule, debounce, restoration, providers' contracts, dry run."""

from __future__ import annotations

from typing import Any

from voxguard.notify.clock import ManualClock
from voxguard.notify.config import NotifyConfig
from voxguard.notify.store import Store

from .conftest import incident_event, make_config, providers, running
from .fakesaas import FakeSaaS


def _cfg(saas: FakeSaaS, **sp: Any) -> NotifyConfig:
    return make_config(
        saas.url,
        notifications={},
        status_pages={"providers": providers(saas.url), "recover_after_s": 60, "min_hold_s": 120, **sp},
    )


def _status(svc: Any, key: str) -> str:
    return next(c["status"] for c in svc.status.view() if c["key"] == key)


async def test_sixty_second_rule_then_restoration(saas: FakeSaaS, store: Store) -> None:
    clock = ManualClock()
    async with running(_cfg(saas), store, clock=clock) as svc:
        await svc.on_incident(incident_event(severity="critical"))
        clock.advance(59)
        assert await svc.status.evaluate() == []
        assert _status(svc, "sip_signaling") == "operational"
        clock.advance(2)
        changes = await svc.status.evaluate()
        assert {(c.component, c.new, c.action) for c in changes} == {
            ("sip_signaling", "major_outage", "open"),
            ("region-eu", "major_outage", "open"),
        }
        await svc.dispatcher.drain()
        assert _status(svc, "sip_signaling") == "major_outage"
        assert _status(svc, "voice_quality") == "operational"  # other tiers untouched
        assert saas.violations == []
        sp = saas.of("statuspage")
        assert [r.method for r in sp] == ["POST", "POST"]  # sip_signaling + region-eu, component inside the call
        assert sp[0].body["incident"]["components"] == {"8kbf7d35c070": "major_outage"}
        assert "attack" not in sp[0].body["incident"]["body"].lower()  # customer-friendly wording
        assert saas.of("instatus")[0].body["statuses"] == [{"id": "ckf01fvnxywz50a35nh1qzssm", "status": "MAJOROUTAGE"}]
        assert saas.of("cachet")[0].body["component_status"] == 4
        saas.requests.clear()

        clock.advance(30)
        await svc.on_incident(incident_event("resolved", severity="critical"))
        clock.advance(59)
        assert await svc.status.evaluate() == []  # debounce: not yet
        clock.advance(2)
        changes = await svc.status.evaluate()
        assert {(c.component, c.new, c.action) for c in changes} == {
            ("sip_signaling", "operational", "resolve"),
            ("region-eu", "operational", "resolve"),
        }
        await svc.dispatcher.drain()
    assert saas.violations == []
    sp = saas.of("statuspage")
    assert {r.method for r in sp} == {"PATCH"}
    assert all(r.path.startswith("/statuspage/v1/pages/kctbh9vrtdwd/incidents/inc") for r in sp)
    assert sp[0].body["incident"]["status"] == "resolved"
    assert [r.body["status"] for r in saas.of("instatus")] == ["RESOLVED"]
    assert [(r.method, r.body["status"]) for r in saas.of("cachet")] == [("POST", 4), ("PUT", 1)]
    assert {r.body["type"] for r in saas.of("generic")} == {"incident.resolved"}


async def test_short_incident_never_reaches_the_page(saas: FakeSaaS, store: Store) -> None:
    clock = ManualClock()
    async with running(_cfg(saas), store, clock=clock) as svc:
        await svc.on_incident(incident_event(severity="critical"))
        clock.advance(40)
        await svc.on_incident(incident_event("resolved", severity="critical"))
        for _ in range(10):
            clock.advance(30)
            assert await svc.status.evaluate() == []
    assert saas.requests == []


async def test_no_flapping_when_incidents_come_back(saas: FakeSaaS, store: Store) -> None:
    clock = ManualClock()
    async with running(_cfg(saas, per_region=False), store, clock=clock) as svc:
        await svc.on_incident(incident_event(severity="warning"))
        clock.advance(61)
        await svc.status.evaluate()
        await svc.on_incident(incident_event("resolved", severity="warning"))
        clock.advance(30)  # a new attack before the recovery window closes
        await svc.on_incident(incident_event(incident_id="inc-2", severity="warning", opened_at=clock.now()))
        for _ in range(6):
            clock.advance(20)
            assert await svc.status.evaluate() == []
        assert _status(svc, "sip_signaling") == "degraded_performance"
        await svc.dispatcher.drain()
    assert [r.method for r in saas.of("statuspage")] == ["POST"]  # one incident, no operational blip


async def test_escalation_is_immediate_lowering_waits(saas: FakeSaaS, store: Store) -> None:
    clock = ManualClock()
    async with running(_cfg(saas, per_region=False), store, clock=clock) as svc:
        await svc.on_incident(incident_event(severity="warning"))
        clock.advance(61)
        await svc.status.evaluate()
        await svc.on_incident(incident_event("updated", severity="critical"))  # evaluates at once
        assert _status(svc, "sip_signaling") == "major_outage"
        await svc.on_incident(incident_event("updated", severity="warning"))
        assert await svc.status.evaluate() == []  # hold time
        assert _status(svc, "sip_signaling") == "major_outage"
        clock.advance(121)
        assert [c.new for c in await svc.status.evaluate()] == ["degraded_performance"]
        await svc.dispatcher.drain()
    assert saas.violations == []


async def test_preview_shows_requests_without_credentials(saas: FakeSaaS, store: Store) -> None:
    clock = ManualClock()
    async with running(_cfg(saas, per_region=False), store, clock=clock) as svc:
        await svc.on_incident(incident_event(severity="major"))
        clock.advance(61)
        [p] = svc.status.preview()
        assert (p["component"], p["to"], p["action"]) == ("sip_signaling", "partial_outage", "open")
        sp = p["requests"]["sp"][0]
        assert sp["method"] == "POST" and sp["headers"]["Authorization"] == "***"
        assert p["requests"]["ca"][0]["headers"]["X-Cachet-Token"] == "***"
        assert "sp-key" not in str(p)
        assert saas.requests == []  # a preview sends nothing
        assert _status(svc, "sip_signaling") == "operational"


async def test_page_incident_is_resolved_after_a_restart(saas: FakeSaaS, store: Store) -> None:
    clock = ManualClock()
    cfg = _cfg(saas, per_region=False)
    async with running(cfg, store, clock=clock) as svc:
        await svc.on_incident(incident_event(severity="critical"))
        clock.advance(61)
        await svc.status.evaluate()
        await svc.dispatcher.drain()
    created = saas.of("statuspage")[0]
    saas.requests.clear()
    async with running(cfg, store, clock=clock) as svc2:
        assert _status(svc2, "sip_signaling") == "major_outage"
        await svc2.on_incident(incident_event("resolved", severity="critical"))
        clock.advance(61)
        await svc2.status.evaluate()
        await svc2.dispatcher.drain()
    [patch] = saas.of("statuspage")
    assert created.method == "POST" and patch.path.endswith("/incidents/inc1")


async def test_status_page_429_is_retried_in_order(saas: FakeSaaS, store: Store) -> None:
    clock = ManualClock()
    saas.queue("statuspage", "429:0")
    async with running(_cfg(saas, per_region=False), store, clock=clock) as svc:
        await svc.on_incident(incident_event(severity="critical"))
        clock.advance(61)
        await svc.status.evaluate()
        for _ in range(40):
            clock.advance(10)  # backoff is on the injected clock
            svc.dispatcher.kick()
            await __import__("asyncio").sleep(0.03)
            if store.counts().get("pending", 0) == 0:
                break
    sp = saas.of("statuspage")
    assert [r.method for r in sp] == ["POST", "POST"] and saas.violations == []
    assert store.counts() == {"sent": 4}


async def test_create_that_timed_out_is_reconciled_not_duplicated(saas: FakeSaaS, store: Store) -> None:
    """integrations.md 1.5: the POST may have worked; list unresolved incidents before re-creating."""
    sp = providers(saas.url)["sp"]
    sp["retry"] = {"max_attempts": 4, "base_s": 0.05, "cap_s": 0.1, "timeout_s": 0.5}
    cfg = make_config(
        saas.url, notifications={}, status_pages={"providers": {"sp": sp}, "affect_after_s": 0, "per_region": False}
    )
    saas.queue("statuspage", "timeout")
    async with running(cfg, store) as svc:  # system clock: real backoff, real timeout
        await svc.on_incident(incident_event(severity="critical", opened_at=svc.clock.now()))
        await svc.dispatcher.drain()
        await svc.on_incident(incident_event("resolved", severity="critical"))
        svc.status.sp = svc.status.sp.model_copy(update={"recover_after_s": 0, "min_hold_s": 0})
        await svc.status.evaluate()
        await svc.dispatcher.drain()
    calls = [(r.method, r.path.rsplit("/", 1)[1]) for r in saas.of("statuspage")]
    assert calls == [("POST", "incidents"), ("GET", "unresolved"), ("PATCH", "inc1")]
    assert len(saas.sp_incidents) == 1 and saas.violations == []
