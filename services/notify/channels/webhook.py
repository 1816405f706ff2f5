"""Generic webhooks signed per Standard Webhooks 1.0 (integrations.md section 6, docs/webhooks.md).

The ``webhook-id`` is derived from the idempotency key, so it is the same on every retry and
after a restart: receivers dedup on it. The body is serialised once and those exact bytes signed.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import httpx
import orjson

from voxguard.notify import render, signing
from voxguard.notify.channels.base import SendResult, _snippet, http_send, retry_after
from voxguard.notify.config import WebhookChannel
from voxguard.notify.events import Alert

_TYPE = {
    "incident.opened": "ddos.attack.detected",
    "incident.updated": "ddos.attack.updated",
    "incident.mitigated": "ddos.attack.mitigated",
    "incident.resolved": "ddos.attack.ended",
}
_STATE = {"opened": "detected", "updated": "ongoing", "mitigated": "mitigated", "resolved": "ended"}
_SEVERITY = {"critical": "critical", "major": "error", "warning": "warning", "info": "info"}


def webhook_id(key: str) -> str:
    """Stable per (event, channel), no dots (the signed content uses '.' as separator)."""
    return "msg_" + hashlib.sha256(key.encode()).hexdigest()[:32]


def build_envelope(alert: Alert, link_base: str) -> dict[str, Any]:
    data: dict[str, Any] = {
        "alert_id": alert.incident_id or (alert.mitigation.id if alert.mitigation else alert.source_event_id),
        "state": _STATE.get(alert.event, "ongoing"),
        "severity": _SEVERITY.get(alert.severity, "info"),
        "event_id": alert.source_event_id,
        "kind": alert.kind,
        "tier": alert.tier,
        "url": render.link(alert, link_base),
        "mitigation_state": render.mitigation_state(alert),
    }
    if alert.incident is not None:
        inc = alert.incident
        data.update(
            target=inc.target,
            started_at=inc.opened_at.isoformat(),
            ended_at=inc.resolved_at.isoformat() if inc.resolved_at else None,
            vectors=inc.vectors,
            peak_ratio=inc.peak_ratio,
            region=inc.region,
            top_sources=[s.model_dump() for s in inc.top_sources[:10]],
        )
    if alert.mitigation is not None:
        data["mitigation"] = alert.mitigation.model_dump(mode="json", include={"id", "state", "action", "match"})
    kind = _TYPE.get(alert.kind) or ("webhook.test" if alert.kind == "test" else f"ddos.{alert.kind.replace('.', '_')}")
    if alert.kind.startswith("mitigation."):
        kind = f"ddos.mitigation.{alert.event}"
    return {"type": kind, "timestamp": alert.ts.isoformat(), "data": data}


def classify(resp: httpx.Response) -> SendResult:
    """Any 2xx is success whatever the body; 410 disables; 3xx and others retry (no redirects)."""
    code = resp.status_code
    if 200 <= code < 300:
        return SendResult(True, code)
    return SendResult(False, code, retryable=code != 410, detail=_snippet(resp), retry_after=retry_after(resp))


class WebhookSender:
    provider = "webhook"

    def __init__(self, name: str, cfg: WebhookChannel, link_base: str) -> None:
        self.name, self.cfg, self.link_base = name, cfg, link_base

    async def send(self, alert: Alert, key: str, client: httpx.AsyncClient, timeout_s: float) -> SendResult:
        body = orjson.dumps(build_envelope(alert, self.link_base))
        hdrs = signing.headers(self.cfg.secret.get_secret_value(), webhook_id(key), body, time.time())
        return await http_send(
            client, "POST", self.cfg.url, body=body, headers=hdrs, timeout_s=timeout_s, classify=classify
        )
