"""PagerDuty Events API v2 (integrations.md section 5).

The dedup key is derived from the incident id alone, so every trigger, acknowledge and resolve of
one incident lands on one PagerDuty alert, and a retried trigger only adds a log entry.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from voxguard.notify import render
from voxguard.notify.channels.base import SendResult, _snippet, http_send, json_or_none
from voxguard.notify.config import PagerDutyChannel
from voxguard.notify.events import Alert


def dedup_key(alert: Alert) -> str:
    """``voxguard:<incident id>`` (or the mitigation id for a manual rule)."""
    if alert.incident_id:
        return f"voxguard:{alert.incident_id}"[:255]
    if alert.mitigation is not None:
        return f"voxguard:mitigation:{alert.mitigation.id}"[:255]
    return f"voxguard:event:{alert.source_event_id}"[:255]


def event_action(alert: Alert) -> str:
    """Resolved incidents resolve, mitigated ones are acknowledged, everything else triggers."""
    if alert.kind == "incident.resolved" or (alert.kind == "mitigation.withdrawn" and not alert.incident_id):
        return "resolve"
    if alert.kind == "incident.mitigated":
        return "acknowledge"
    return "trigger"


def build_event(alert: Alert, cfg: PagerDutyChannel, link_base: str) -> dict[str, Any]:
    action = event_action(alert)
    body: dict[str, Any] = {
        "routing_key": cfg.routing_key.get_secret_value(),
        "event_action": action,
        "dedup_key": dedup_key(alert),
    }
    if action != "trigger":
        return body
    inc = alert.incident
    url = render.link(alert, link_base)
    details: dict[str, Any] = {"event": alert.kind, "mitigation": render.mitigation_state(alert)}
    if inc is not None:
        details.update(
            vectors=inc.vectors,
            peak_ratio=inc.peak_ratio,
            top_sources=[s.source for s in inc.top_sources[:10]],
            incident_state=inc.state,
        )
    body.update(
        payload={
            "summary": render.title(alert)[:1024],
            "source": (inc.target if inc else (alert.mitigation.match.destination if alert.mitigation else "voxguard"))
            or "voxguard",
            "severity": cfg.severity_map.get(alert.severity, "warning"),  # type: ignore[call-overload]
            "timestamp": alert.ts.isoformat(),
            "component": alert.tier or "voxguard",
            "group": alert.region or "global",
            "class": ",".join(inc.vectors) if inc else alert.kind,
            "custom_details": details,
        },
        client="VoxGuard",
        client_url=url,
        links=[{"href": url, "text": "Incident in VoxGuard"}],
    )
    return body


def classify(resp: httpx.Response) -> SendResult:
    """202 accepted; 400 is our bug (never retried); 429 and 5xx retry."""
    code = resp.status_code
    if code in (200, 201, 202):
        data = json_or_none(resp)
        ext = data.get("dedup_key") if isinstance(data, dict) else None
        return SendResult(True, code, external_id=ext)
    return SendResult(False, code, retryable=code == 429 or code >= 500, detail=_snippet(resp))


class PagerDutySender:
    provider = "pagerduty"

    def __init__(self, name: str, cfg: PagerDutyChannel, link_base: str) -> None:
        self.name, self.cfg, self.link_base = name, cfg, link_base

    async def send(self, alert: Alert, key: str, client: httpx.AsyncClient, timeout_s: float) -> SendResult:
        body = orjson.dumps(build_event(alert, self.cfg, self.link_base))
        return await http_send(
            client,
            "POST",
            self.cfg.url,
            body=body,
            headers={"content-type": "application/json"},
            timeout_s=timeout_s,
            classify=classify,
        )
