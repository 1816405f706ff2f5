"""Severity routing, quiet hours and per-route storm limits."""

from __future__ import annotations

import datetime as dt

from voxguard.notify import events
from voxguard.notify.clock import ManualClock
from voxguard.notify.routing import Router

from .conftest import channels, incident_event, make_config, routes

BASE = "http://127.0.0.1:9"


def _router(clock: ManualClock, **route_extra: object) -> Router:
    rs = routes()
    for r in rs:
        r.update(route_extra)
    return Router(make_config(BASE, notifications={"channels": channels(BASE), "routes": rs}).notifications, clock)


def test_severity_decides_the_channel() -> None:
    router = _router(ManualClock())
    crit = router.decide(events.from_incident(incident_event(severity="critical")))
    warn = router.decide(events.from_incident(incident_event(severity="warning")))
    info = router.decide(events.from_incident(incident_event(severity="info")))
    assert [d.channel for d in crit] == ["oncall", "noc"]
    assert [d.channel for d in warn] == ["noc"]
    assert [d.channel for d in info] == ["hook"]
    assert all(d.suppressed is None for d in crit + warn + info)


def test_kind_and_tier_match() -> None:
    router = _router(ManualClock())
    updated = router.decide(events.from_incident(incident_event("updated", severity="critical")))
    assert [d.channel for d in updated] == ["noc"]  # pages only on open/mitigated/resolved


def test_quiet_hours_hold_back_all_but_critical() -> None:
    clock = ManualClock(dt.datetime(2026, 1, 5, 23, 30, tzinfo=dt.UTC))
    router = _router(clock, quiet_hours={"start": "22:00", "end": "07:00"})
    warn = router.decide(events.from_incident(incident_event(severity="warning")))
    crit = router.decide(events.from_incident(incident_event(severity="critical")))
    assert warn[0].suppressed and "quiet hours" in warn[0].suppressed
    assert all(d.suppressed is None for d in crit)
    clock.advance(8 * 3600)  # 07:30
    assert router.decide(events.from_incident(incident_event(severity="warning")))[0].suppressed is None


def test_rate_limit_stops_a_storm_but_not_resolutions() -> None:
    clock = ManualClock()
    router = _router(clock, rate_limit={"max": 3, "per_s": 60})
    out = [
        router.decide(events.from_incident(incident_event(incident_id=f"i{n}", severity="warning")))[0]
        for n in range(10)
    ]
    assert [d.suppressed is None for d in out] == [True] * 3 + [False] * 7
    resolved = router.decide(events.from_incident(incident_event("resolved", severity="warning")))
    assert resolved[0].suppressed is None
    clock.advance(61)
    assert router.decide(events.from_incident(incident_event(severity="warning")))[0].suppressed is None
