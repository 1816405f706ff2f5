"""The collector's HTTP surface: exporters, statistics, live targets and evidence."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Response

from voxguard.ingest.pcapio import write_sflow_evidence
from voxguard.ingest.pipeline import Pipeline


def build_router(get_pipeline: Callable[[], Pipeline], get_status: Callable[[], dict[str, Any]]) -> APIRouter:
    """Routes for one collector; the app factory mounts them under ``/v1`` behind API keys."""
    router = APIRouter(tags=["ingest"])

    @router.get("/exporters", summary="Every exporter the collector hears from")
    def exporters() -> list[dict[str, Any]]:
        p = get_pipeline()
        out = []
        cache = p.netflow.templates
        for st in p.registry.all():
            item = st.as_dict(
                templates=[
                    {"observation_domain": d, **view}
                    for d in sorted(st.domains)
                    for view in cache.templates_view(st.address, d)
                ]
            )
            item["sampling"] = {str(d): cache.sampling_view(st.address, d) for d in sorted(st.domains)}
            out.append(item)
        return out

    @router.get("/ingest/stats", summary="Collector totals, listeners and kernel drops")
    def stats() -> dict[str, Any]:
        p = get_pipeline()
        s = p.stats
        return {
            **get_status(),
            "datagrams": s.datagrams,
            "bytes": s.bytes,
            "flow_records": s.flow_records,
            "classified_records": s.classified,
            "unclassified_records": s.unclassified,
            "decode_errors": s.decode_errors,
            "unknown_exporter_dropped": s.unknown_exporter_dropped,
            "ticks_emitted": s.ticks_emitted,
            "batches": s.batches,
            "busy_seconds": round(s.busy_seconds, 3),
            "per_format": dict(s.per_format),
            "exporters": len(p.registry),
            "configured_targets": p.table.n_config_targets,
            "host_targets": p.table.host_target_count,
            "host_targets_dropped": p.table.host_targets_dropped,
        }

    @router.get("/ingest/targets", summary="Targets the collector classifies to, with their last tick")
    def targets(tier: str | None = None, limit: int = Query(1000, ge=1, le=100_000)) -> list[dict[str, Any]]:
        p = get_pipeline()
        out = []
        for ix, td in enumerate(p.table.targets):
            if tier and td.tier.value != tier:
                continue
            last = p.last_ticks.get(ix)
            out.append(
                {
                    "id": td.id,
                    "name": td.name,
                    "tier": td.tier.value,
                    "component": td.component,
                    "host": td.host,
                    "protocol": td.monitor.protocol.value,
                    "ports": str(td.monitor.ports) if td.monitor.ports else None,
                    "role": td.monitor.effective_role,
                    "region": td.region,
                    "last_tick": last,
                }
            )
            if len(out) >= limit:
                break
        return out

    def _target_ix(target_id: str) -> int:
        ix = get_pipeline().table.index.get(target_id)
        if ix is None:
            raise HTTPException(404, f"no target {target_id!r} is known to the collector")
        return ix

    @router.get("/targets/{target_id}/flows", summary="Recent decoded flow records (JSON lines)")
    def flows(target_id: str, limit: int = Query(1000, ge=1, le=50_000)) -> Response:
        rows = get_pipeline().flow_ring.for_target(_target_ix(target_id), limit)
        body = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows)
        return Response(body, media_type="application/x-ndjson")

    @router.get(
        "/targets/{target_id}/evidence.pcap",
        summary="Recent sFlow-sampled packet headers as a pcap file",
        response_class=Response,
        responses={200: {"content": {"application/vnd.tcpdump.pcap": {}}}},
    )
    def evidence(target_id: str, limit: int = Query(10_000, ge=1, le=50_000)) -> Response:
        samples = get_pipeline().header_ring.for_target(_target_ix(target_id), limit)
        buf = io.BytesIO()
        write_sflow_evidence(buf, [(s.ts, s) for s in samples])
        return Response(
            buf.getvalue(),
            media_type="application/vnd.tcpdump.pcap",
            headers={"Content-Disposition": f'attachment; filename="{target_id}.pcap"'},
        )

    return router
