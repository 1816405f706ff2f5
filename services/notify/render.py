"""Text shared by the channels: titles, summaries and links, so Slack, mail and pages agree."""

from __future__ import annotations

from voxguard.notify.events import Alert

_EVENT_WORD = {
    "opened": "detected",
    "updated": "update",
    "mitigated": "mitigated",
    "resolved": "resolved",
}


def title(alert: Alert) -> str:
    if alert.incident is not None:
        inc = alert.incident
        vectors = ", ".join(inc.vectors) or "anomaly"
        word = _EVENT_WORD.get(alert.event, alert.event)
        return f"[{inc.severity.upper()}] {vectors} on {inc.tier.value} {inc.target} ({word})"
    if alert.mitigation is not None:
        mit = alert.mitigation
        return f"[{alert.severity.upper()}] mitigation {alert.event}: {mit.action} {mit.match.destination}"
    return f"[{alert.severity.upper()}] VoxGuard {alert.kind}"


def link(alert: Alert, base: str) -> str:
    base = base.rstrip("/")
    if alert.incident_id:
        return f"{base}/v1/incidents/{alert.incident_id}"
    if alert.mitigation is not None:
        return f"{base}/v1/mitigations/{alert.mitigation.id}"
    return f"{base}/v1/notify/deliveries"


def mitigation_state(alert: Alert) -> str:
    if alert.mitigation is not None:
        return alert.mitigation.state
    if alert.incident is not None:
        return {"open": "not mitigated", "mitigated": "mitigated", "resolved": "ended"}[alert.incident.state]
    return "n/a"


def top_sources(alert: Alert, n: int = 5) -> list[str]:
    if alert.incident is None:
        return list(alert.mitigation.match.sources[:n]) if alert.mitigation else []
    return [f"{s.source} ({s.packets} pkts)" for s in alert.incident.top_sources[:n]]


def facts(alert: Alert) -> list[tuple[str, str]]:
    """(label, value) pairs every channel shows."""
    rows: list[tuple[str, str]] = [("Severity", alert.severity), ("Event", alert.kind)]
    if alert.tier:
        rows.append(("Tier", alert.tier))
    if alert.incident is not None:
        inc = alert.incident
        rows += [
            ("Target", inc.target),
            ("Vectors", ", ".join(inc.vectors) or "-"),
            ("Peak ratio", f"{inc.peak_ratio:.1f}x baseline"),
        ]
        if inc.region:
            rows.append(("Region", inc.region))
    rows.append(("Mitigation", mitigation_state(alert)))
    return rows
