"""One normalised ``Alert`` per incoming bus event: what routing, rendering and status pages read.

Incident and mitigation events differ in shape; channels should not care. The alert is also what
the outbox stores, so a retry after a restart renders exactly the same message.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from voxguard.shared.messages import IncidentEvent, IncidentView, MitigationEvent, MitigationView

# Mitigation events carry no severity of their own: failures matter more than routine changes.
_MITIGATION_SEVERITY = {
    "failed": "major",
    "rejected": "warning",
    "pending_approval": "warning",
    "proposed": "info",
    "announced": "info",
    "withdrawn": "info",
}


class Alert(BaseModel):
    """What we notify about: an incident or mitigation event, flattened."""

    source_event_id: str
    kind: str  # "incident.opened", "mitigation.announced", "test"...
    ts: datetime
    severity: str
    tier: str | None = None
    region: str | None = None
    incident_id: str | None = None
    incident: IncidentView | None = None
    mitigation: MitigationView | None = None

    @property
    def event(self) -> str:
        return self.kind.split(".", 1)[1] if "." in self.kind else self.kind

    @property
    def resolving(self) -> bool:
        return self.kind == "incident.resolved"


def from_incident(ev: IncidentEvent) -> Alert:
    inc = ev.incident
    return Alert(
        source_event_id=ev.id,
        kind=f"incident.{ev.event}",
        ts=ev.ts,
        severity=inc.severity,
        tier=ev.tier.value,
        region=inc.region,
        incident_id=inc.id,
        incident=inc,
    )


def from_mitigation(ev: MitigationEvent) -> Alert:
    mit = ev.mitigation
    return Alert(
        source_event_id=ev.id,
        kind=f"mitigation.{ev.event}",
        ts=ev.ts,
        severity=_MITIGATION_SEVERITY.get(ev.event, "info"),
        tier=ev.tier.value if ev.tier else (mit.tier.value if mit.tier else None),
        incident_id=mit.incident_id,
        mitigation=mit,
    )
