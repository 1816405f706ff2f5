"""``GET /v1/shards``: which partitions and targets this baseline worker decides for.

With several workers behind one Service each answers for itself; the lease view it returns
(partition -> worker, as last read from the bucket) shows the whole assignment.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Query

if TYPE_CHECKING:
    from .service import BaselineService


def build_shards_router(svc: BaselineService) -> APIRouter:
    router = APIRouter(tags=["baseline"])

    async def owned_targets() -> list[str]:
        async with svc.lock:
            rows = svc.engine.targets()
        return sorted(str(t["id"]) for t in rows if svc.owns_target(str(t["id"])))

    @router.get("/shards", summary="Partitions held by this worker and the lease view")
    async def shards() -> dict[str, Any]:
        out = svc.shard_status()
        out["targets"] = len(await owned_targets())
        return out

    @router.get("/shards/targets", summary="Ids of the targets this worker decides for")
    async def shard_targets(limit: int = Query(1000, ge=1, le=100_000), offset: int = Query(0, ge=0)) -> dict[str, Any]:
        ids = await owned_targets()
        status = svc.shard_status()
        return {"worker": status["worker"], "owned": status["owned"], "total": len(ids),
                "items": ids[offset : offset + limit]}  # fmt: skip

    return router


__all__ = ["build_shards_router"]
