"""``GET /v1/incidents/{id}/report``: the post-incident review, as Markdown or HTML.

The incident, its timeline and its traffic come from this service's store; the FlowSpec
rules and the notifications are the mitigate and notify services' data, so they are read
from their HTTP APIs with the caller's own key (same server in one-process mode, or
``VOXGUARD_MITIGATE_URL`` / ``VOXGUARD_NOTIFY_URL`` when the services run apart).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
from typing import Annotated, Any, Literal

import httpx
from fastapi import APIRouter, Path, Request
from fastapi.responses import PlainTextResponse, Response

from voxguard.baseline.incidents import runbook_of
from voxguard.baseline.report import ReviewInput, render_html, render_markdown
from voxguard.baseline.store import BaselineStore
from voxguard.shared.config import VoxGuardConfig
from voxguard.shared.errors import ApiError
from voxguard.shared.runbooks import Runbook, load_runbooks


async def _peer(request: Request, env: str, path: str, params: dict[str, str]) -> list[dict[str, Any]]:
    """GET another service's API with the caller's key; [] when that service is not reachable."""
    base = os.environ.get(env) or str(request.base_url).rstrip("/")
    headers = {"Authorization": request.headers.get("authorization", "")}
    try:
        transport = httpx.ASGITransport(app=request.app) if not os.environ.get(env) else None
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=10, transport=transport) as client:
            r = await client.get(path, params=params)
    except httpx.HTTPError:
        return []
    if r.status_code != 200:
        return []
    body = r.json()
    return body if isinstance(body, list) else list(body.get("items", []))


def _rule_events(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mitigation views -> (time, event) rows: announced, withdrawn, rejected, in time order."""
    events = []
    for m in rules:
        for key, name in (("announced_at", "announced"), ("withdrawn_at", "withdrawn")):
            if m.get(key):
                events.append({"ts": m[key], "event": name, "mitigation": m})
        if m.get("state") in ("rejected", "failed", "pending_approval", "proposed"):
            events.append({"ts": m.get("created_at"), "event": m["state"], "mitigation": m})
    return sorted(events, key=lambda e: str(e["ts"]))


def _detail(snapshot: Any) -> str:
    """One line from an incident snapshot of the timeline."""
    if isinstance(snapshot, (str, bytes)):
        try:
            snapshot = json.loads(snapshot)
        except ValueError:
            return ""
    if not isinstance(snapshot, dict):
        return ""
    vectors = ", ".join(snapshot.get("vectors") or [])
    return f"{vectors} {float(snapshot.get('peak_ratio') or 0):.1f}x, {snapshot.get('state', '')}".strip()


def build_review_router(store: BaselineStore, config: VoxGuardConfig) -> APIRouter:
    """The review route for one baseline service."""
    router = APIRouter(tags=["incidents"])
    runbooks: list[Runbook] = load_runbooks(config.runbooks)

    @router.get(
        "/incidents/{incident_id}/report",
        summary="Post-incident review (Markdown or HTML with a traffic chart)",
        response_class=Response,
        responses={200: {"content": {"text/markdown": {}, "text/html": {}}}},
    )
    async def report(
        request: Request,
        incident_id: Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")],
        format: Literal["md", "html"] = "md",
    ) -> Response:
        found = await asyncio.to_thread(store.incident, incident_id)
        if found is None:
            raise ApiError(404, "incident_not_found", f"no incident {incident_id!r}")
        view, timeline = found
        end = view.resolved_at or dt.datetime.now(dt.UTC)
        start = view.opened_at - dt.timedelta(minutes=30)
        points = await asyncio.to_thread(store.series, view.target_id, start, end + dt.timedelta(minutes=5), 60)
        series: list[tuple[dt.datetime, float, float | None]] = []
        for p in points:
            secs = max(float(p.values.get("seconds", 60) or 60), 1.0)
            series.append((p.start, float(p.values.get("packets", 0)) / secs, None))
        rules, notes = await asyncio.gather(
            _peer(request, "VOXGUARD_MITIGATE_URL", "/v1/mitigations", {"incident_id": incident_id}),
            _peer(request, "VOXGUARD_NOTIFY_URL", "/v1/notify/deliveries", {"incident_id": incident_id}),
        )
        deliveries = [
            {
                "ts": d.get("updated_at"),
                "channel": d.get("channel"),
                "status": d.get("status"),
                "attempt": d.get("attempts"),
                "response_code": d.get("last_code"),
            }
            for d in notes
        ]
        rows = [{"at": e.get("at"), "event": e.get("event"), "detail": _detail(e.get("incident"))} for e in timeline]
        tid = view.target_id
        inp = ReviewInput(
            incident=view,
            timeline=rows,
            series=series,
            mitigations=_rule_events(rules),
            notifications=deliveries,
            runbook=next((rb for rb in runbooks if rb.name == view.runbook), None)
            or runbook_of(runbooks, view.tier.value, view.vectors, view.peak_ratio),
            evidence={"flow records": f"/v1/targets/{tid}/flows", "sFlow pcap": f"/v1/targets/{tid}/evidence.pcap"},
        )
        if format == "html":
            return Response(render_html(inp), media_type="text/html")
        return PlainTextResponse(render_markdown(inp), media_type="text/markdown")

    return router
