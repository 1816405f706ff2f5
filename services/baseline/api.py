"""HTTP and WebSocket API of the baseline service (mounted under ``/v1`` by the app factory).

Reads come from the store (minute buckets, incidents) and from the engine (profiles, learning
state, expected values), the latter under the service's engine lock because detection runs in a
worker thread. Every bad input is a 4xx in the common error shape.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, ConfigDict, Field

from voxguard.baseline.incidents import runbook_of
from voxguard.baseline.models import COUNTERS
from voxguard.baseline.store import rates
from voxguard.shared.auth import require_scope
from voxguard.shared.config import Tier
from voxguard.shared.errors import ApiError
from voxguard.shared.runbooks import checklist_for, load_runbooks

if TYPE_CHECKING:
    from .service import BaselineService

MAX_POINTS = 5_000
DEFAULT_METRICS = ("packets", "bytes", "flows")
SERIES_METRICS = (*COUNTERS, "bytes_per_packet")
_STEP_RE = re.compile(r"^(\d+)([smhd]?)$")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
TargetId = Annotated[str, Path(min_length=1, max_length=80, pattern=r"^[A-Za-z0-9_.:-]+$")]


class TurnSessions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sessions: int = Field(ge=0, le=10_000_000)


def parse_step(value: str) -> int:
    """``300``, ``300s``, ``5m``, ``1h``, ``1d`` -> seconds (whole minutes only)."""
    m = _STEP_RE.match(value.strip().lower())
    if not m:
        raise ApiError(422, "invalid_step", f"step {value!r} is not a duration like 60, 5m, 1h or 1d")
    seconds = int(m.group(1)) * _UNIT[m.group(2)]
    if seconds < 60 or seconds % 60:
        raise ApiError(422, "invalid_step", "step must be a whole number of minutes (at least 60 s)")
    return seconds


def _utc(t: dt.datetime) -> dt.datetime:
    return t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t.astimezone(dt.UTC)


def build_router(svc: BaselineService) -> APIRouter:
    """The baseline routes, bound to one running service."""
    router = APIRouter(tags=["baseline"])
    runbooks = load_runbooks(svc.ctx.config.runbooks)

    async def engine_call(fn: Any, *args: Any) -> Any:
        async with svc.lock:
            return fn(*args)

    @router.get("/targets", summary="Targets with their learning state")
    async def list_targets(
        tier: Tier | None = None,
        limit: int = Query(500, ge=1, le=10_000),
        offset: int = Query(0, ge=0),
    ) -> dict[str, Any]:
        rows = await asyncio.to_thread(svc.store.targets, tier.value if tier else None)
        live = {str(t.get("target_id", t.get("id"))): t for t in await engine_call(svc.engine.targets)}
        items: list[dict[str, Any]] = []
        seen: set[str] = set()
        for r in rows:
            seen.add(r.id)
            item = {
                "id": r.id,
                "tier": r.tier,
                "name": r.name,
                "component": r.component,
                "host": r.host,
                "protocol": r.protocol,
                "ports": r.ports,
                "role": r.role,
                "region": r.region,
                "first_seen": r.first_seen,
                "last_seen": r.last_seen,
            }
            item.update({k: v for k, v in live.get(r.id, {}).items() if k not in ("id", "target_id")})
            items.append(item)
        for tid, info in live.items():  # known to the engine, not yet flushed to the registry
            if tid not in seen and (tier is None or str(info.get("tier")) == tier.value):
                items.append({"id": tid, **{k: v for k, v in info.items() if k not in ("id", "target_id")}})
        return {"items": items[offset : offset + limit], "total": len(items), "limit": limit, "offset": offset}

    @router.get("/targets/{target_id}/baseline", summary="A target's profile and learning state")
    async def target_baseline(target_id: TargetId) -> dict[str, Any]:
        info = await engine_call(svc.engine.baseline, target_id)
        if info is None:
            raise ApiError(404, "target_not_found", f"no baseline for target {target_id!r}")
        return {"target_id": target_id, **info}

    @router.get("/targets/{target_id}/series", summary="Observed minute buckets against the baseline")
    async def target_series(
        target_id: TargetId,
        from_: Annotated[dt.datetime | None, Query(alias="from")] = None,
        to: dt.datetime | None = None,
        step: str = "5m",
        metrics: str = ",".join(DEFAULT_METRICS),
    ) -> dict[str, Any]:
        step_s = parse_step(step)
        end = _utc(to) if to else svc.clock()
        start = _utc(from_) if from_ else end - dt.timedelta(hours=24)
        if start >= end:
            raise ApiError(422, "invalid_range", "'from' must be before 'to'")
        if (end - start).total_seconds() / step_s > MAX_POINTS:
            raise ApiError(422, "too_many_points", f"the range holds more than {MAX_POINTS} steps; use a larger step")
        wanted = [m.strip() for m in metrics.split(",") if m.strip()]
        if not wanted or len(wanted) > 20:
            raise ApiError(422, "invalid_metrics", "give 1 to 20 comma-separated metric names")
        unknown = [m for m in wanted if m not in SERIES_METRICS]
        if unknown:
            raise ApiError(422, "unknown_metric", f"unknown metric(s) {unknown}; known: {', '.join(SERIES_METRICS)}")
        known = await asyncio.to_thread(svc.store.target, target_id)
        if known is None and await engine_call(svc.engine.baseline, target_id) is None:
            raise ApiError(404, "target_not_found", f"no target {target_id!r}")
        points = await asyncio.to_thread(svc.store.series, target_id, start, end, step_s)
        mids = [p.start + dt.timedelta(seconds=step_s / 2) for p in points]
        expected: dict[str, list[float | None]] = {}
        for m in wanted:
            try:
                expected[m] = list(await engine_call(svc.engine.expected, target_id, m, mids))
            except KeyError:  # the engine has no profile of this target or metric (yet)
                expected[m] = [None] * len(mids)
        out = []
        for i, p in enumerate(points):
            observed = rates(p.values)
            out.append(
                {
                    "t": p.start,
                    "seconds_observed": p.values["seconds"],
                    "observed": {m: observed.get(m) for m in wanted},
                    "expected": {m: _finite(expected[m][i]) for m in wanted},
                }
            )
        return {"target_id": target_id, "from": start, "to": end, "step": step_s, "metrics": wanted, "points": out}

    @router.get("/targets/{target_id}/live", summary="The last minutes at tick resolution (memory only)")
    async def target_live(target_id: TargetId, since: dt.datetime | None = None) -> dict[str, Any]:
        return {"target_id": target_id, "points": svc.live.points(target_id, _utc(since) if since else None)}

    @router.get("/incidents", summary="Incidents, newest first")
    async def list_incidents(
        state: Literal["open", "mitigated", "resolved"] | None = None,
        tier: Tier | None = None,
        since: dt.datetime | None = None,
        limit: int = Query(50, ge=1, le=500),
        offset: int = Query(0, ge=0),
    ) -> dict[str, Any]:
        items, total = await asyncio.to_thread(
            lambda: svc.store.incidents(
                state=state, tier=tier.value if tier else None, since=_utc(since) if since else None,
                limit=limit, offset=offset,
            )
        )  # fmt: skip
        return {"items": [i.model_dump(mode="json") for i in items], "total": total, "limit": limit, "offset": offset}

    @router.get("/incidents/{incident_id}", summary="An incident with its timeline and evidence links")
    async def get_incident(
        incident_id: Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")],
    ) -> dict[str, Any]:
        found = await asyncio.to_thread(svc.store.incident, incident_id)
        if found is None:
            raise ApiError(404, "incident_not_found", f"no incident {incident_id!r}")
        view, timeline = found
        tid = view.target_id
        # the runbook the engine chose (its most specific vector's), else the same choice now
        book = next((rb for rb in runbooks if rb.name == view.runbook), None) or runbook_of(
            runbooks, view.tier.value, view.vectors, view.peak_ratio
        )
        incident = view.model_dump(mode="json")
        incident["runbook"] = incident.get("runbook") or (book.name if book else None)
        return {
            "incident": incident,
            # the runbook the incident triggers, and the NOC checklist with the regulatory
            # reporting steps when the target is tagged as an emergency-services trunk
            "runbook": book.model_dump(mode="json") if book else None,
            "checklist": checklist_for(book, view.tags),
            "timeline": timeline,
            "peak": {
                "ratio": view.peak_ratio,
                "value": view.peak_value,
                "baseline": view.baseline_value,
                "metric": view.metric,
            },
            "vectors": view.vectors,
            "top_sources": [s.model_dump() for s in view.top_sources],
            "top_prefixes": [s.model_dump() for s in view.top_prefixes],
            "evidence": {
                "pcap": f"/v1/targets/{tid}/evidence.pcap",
                "flows": f"/v1/targets/{tid}/flows",
                "series": f"/v1/targets/{tid}/series",
            },
        }

    @router.put(
        "/turn/{relay}/sessions",
        summary="Allocated sessions of a TURN relay (for per-session relay baselines)",
        dependencies=[Depends(require_scope("operate"))],
    )
    async def put_turn_sessions(
        relay: Annotated[str, Path(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")],
        body: TurnSessions,
    ) -> dict[str, Any]:
        try:
            await engine_call(svc.engine.set_turn_sessions, relay, body.sessions)
        except KeyError as exc:
            raise ApiError(404, "relay_not_found", str(exc).strip("'\"")) from None
        except ValueError as exc:
            raise ApiError(422, "invalid_relay", str(exc)) from None
        return {"relay": relay, "sessions": body.sessions}

    @router.websocket("/events")
    async def events(ws: WebSocket) -> None:
        """Incident events as they happen, one JSON object per message."""
        await ws.accept()
        q = svc.hub.subscribe()
        try:
            while True:
                getter = asyncio.ensure_future(q.get())
                receiver = asyncio.ensure_future(ws.receive())
                done, _ = await asyncio.wait({getter, receiver}, return_when=asyncio.FIRST_COMPLETED)
                if receiver in done:
                    getter.cancel()
                    msg = receiver.result()
                    if msg.get("type") == "websocket.disconnect":
                        return
                    continue
                receiver.cancel()
                ev = getter.result()
                if ev is None:
                    await ws.close(code=1013, reason="too slow or shutting down")
                    return
                await ws.send_json(ev.model_dump(mode="json"))
        except WebSocketDisconnect:
            return
        finally:
            svc.hub.unsubscribe(q)

    return router


def _finite(x: float | None) -> float | None:
    return None if x is None or x != x or x in (float("inf"), float("-inf")) else float(x)
