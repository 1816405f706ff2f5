"""Slack incoming webhooks with Block Kit (integrations.md section 4).

Incoming webhooks cannot edit a message, so every state change is a new post; the context block
carries the incident id and event so a duplicate after a timeout is recognisable.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from voxguard.notify import render
from voxguard.notify.channels.base import SendResult, _snippet, http_send, retry_after
from voxguard.notify.config import SlackChannel
from voxguard.notify.events import Alert

_EMOJI = {
    "critical": ":rotating_light:",
    "major": ":red_circle:",
    "warning": ":warning:",
    "info": ":information_source:",
}


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def build_message(alert: Alert, link_base: str) -> dict[str, Any]:
    """The webhook body: fallback ``text`` plus header, facts, top sources, button and context."""
    title = render.title(alert)
    fields = [{"type": "mrkdwn", "text": _clip(f"*{k}*\n{v}", 2000)} for k, v in render.facts(alert)][:10]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(title, 150)}},
        {"type": "section", "fields": fields},
    ]
    sources = render.top_sources(alert)
    if sources:
        text = "*Top sources*\n" + "\n".join(f"• `{s}`" for s in sources)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _clip(text, 3000)}})
    blocks.append(
        {
            "type": "actions",
            "elements": [
                {
                    "type": "button",
                    "text": {"type": "plain_text", "text": "Open in VoxGuard"},
                    "url": render.link(alert, link_base),
                    "style": "danger" if alert.severity == "critical" else "primary",
                }
            ],
        }
    )
    ref = f"incident {alert.incident_id}" if alert.incident_id else f"event {alert.source_event_id}"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"{ref} · {alert.kind}"}]})
    return {"text": f"{_EMOJI.get(alert.severity, '')} {title}".strip(), "blocks": blocks, "unfurl_links": False}


def classify(resp: httpx.Response) -> SendResult:
    """200 ``ok``; 429 and 5xx retry (honouring Retry-After); other errors are permanent."""
    code = resp.status_code
    if code == 200:
        return SendResult(True, code)
    retry = code == 429 or code >= 500
    return SendResult(False, code, retryable=retry, detail=_snippet(resp), retry_after=retry_after(resp))


class SlackSender:
    provider = "slack"

    def __init__(self, name: str, cfg: SlackChannel, link_base: str) -> None:
        self.name, self.cfg, self.link_base = name, cfg, link_base

    async def send(self, alert: Alert, key: str, client: httpx.AsyncClient, timeout_s: float) -> SendResult:
        body = orjson.dumps(build_message(alert, self.link_base))
        return await http_send(
            client,
            "POST",
            self.cfg.url.get_secret_value(),
            body=body,
            headers={"content-type": "application/json"},
            timeout_s=timeout_s,
            classify=classify,
        )
