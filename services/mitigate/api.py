"""HTTP API of the mitigate service (mounted under ``/v1``): mitigations, whitelist, audit.

Reads need the app-wide ``read`` scope; every write needs ``operate`` and is audited under the
API key's name. Refusals (whitelist, rails, malformed input) are 4xx with the usual error shape
and a message that names the entry or rail that stopped the rule.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from voxguard.mitigate.engine import ManualRule, MitigateService, Refused
from voxguard.mitigate.settings import WHITELIST_KINDS, WhitelistKind
from voxguard.shared.auth import KeyInfo, require_scope
from voxguard.shared.config import Tier
from voxguard.shared.errors import ApiError
from voxguard.shared.messages import MitigationView


class ManualRuleIn(BaseModel):
    """``POST /v1/mitigations``: a rule by hand. Prefixes are validated by the service (clear 422s)."""

    model_config = ConfigDict(extra="forbid")

    destination: str = Field(min_length=1, max_length=64)
    sources: list[str] = Field(default_factory=list, max_length=64)
    protocol: Literal["udp", "tcp", "icmp", "any"] = "any"
    destination_ports: str | None = Field(default=None, max_length=16)
    action: Literal["discard", "rate_limit"] = "discard"
    rate_bps: int | None = Field(default=None, ge=0, le=10**12)
    tier: Tier | None = None
    ttl_seconds: int | None = Field(default=None, ge=1, le=7 * 86_400)
    reason: str | None = Field(default=None, max_length=500)


class ActionIn(BaseModel):
    """Why an operator approves or withdraws (goes to the audit log)."""

    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(default=None, max_length=500)


class WhitelistIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prefix: str = Field(min_length=1, max_length=64)
    kind: WhitelistKind = "static"
    reason: str = Field(min_length=1, max_length=500)
    ttl_seconds: int | None = Field(default=None, ge=1, le=365 * 86_400)


def _api_error(exc: Refused) -> ApiError:
    details = {"mitigation_id": exc.mitigation_id} if exc.mitigation_id else None
    return ApiError(exc.status, exc.code, exc.message, details=details)


def build_router(get: Callable[[], MitigateService]) -> APIRouter:
    """The mitigate routes; ``get`` returns the running service."""
    router = APIRouter(tags=["mitigate"])
    operate = require_scope("operate")

    @router.get("/mitigations", response_model=list[MitigationView], summary="List mitigations")
    async def list_mitigations(
        state: str | None = Query(default=None, max_length=20),
        incident_id: str | None = Query(default=None, max_length=64),
        limit: int = Query(default=200, ge=1, le=5000),
        offset: int = Query(default=0, ge=0),
    ) -> list[MitigationView]:
        svc = get()
        rows = await asyncio.to_thread(
            svc.store.list_rules, state=state, incident_id=incident_id, limit=limit, offset=offset
        )
        return [r.view() for r in rows]

    @router.get("/mitigations/{mitigation_id}", response_model=MitigationView, summary="One mitigation")
    async def get_mitigation(mitigation_id: str) -> MitigationView:
        row = await asyncio.to_thread(get().store.get, mitigation_id)
        if row is None:
            raise ApiError(404, "not_found", f"no mitigation {mitigation_id}")
        return row.view()

    @router.post("/mitigations", response_model=MitigationView, status_code=201, summary="Create a manual rule")
    async def create_mitigation(body: ManualRuleIn, key: KeyInfo = Depends(operate)) -> MitigationView:
        rule = ManualRule(
            destination=body.destination,
            sources=body.sources,
            protocol=body.protocol,
            destination_ports=body.destination_ports,
            action=body.action,
            rate_bps=body.rate_bps,
            tier=body.tier,
            ttl_seconds=body.ttl_seconds,
            why=body.reason,
        )
        try:
            row = await get().create_manual(rule, key.name)
        except Refused as exc:
            raise _api_error(exc) from None
        return row.view()

    @router.post("/mitigations/{mitigation_id}/approve", response_model=MitigationView, summary="Approve a rule")
    async def approve(
        mitigation_id: str, body: ActionIn | None = None, key: KeyInfo = Depends(operate)
    ) -> MitigationView:
        try:
            row = await get().approve(mitigation_id, key.name, body.reason if body else None)
        except Refused as exc:
            raise _api_error(exc) from None
        return row.view()

    @router.delete("/mitigations/{mitigation_id}", response_model=MitigationView, summary="Withdraw a rule")
    async def withdraw(
        mitigation_id: str,
        reason: str | None = Query(default=None, max_length=500),
        key: KeyInfo = Depends(operate),
    ) -> MitigationView:
        try:
            row = await get().withdraw(mitigation_id, key.name, reason)
        except Refused as exc:
            raise _api_error(exc) from None
        return row.view()

    @router.get("/whitelist", summary="Whitelist: config entries and runtime entries")
    async def list_whitelist() -> list[dict[str, Any]]:
        svc = get()
        static = [
            {"id": None, "prefix": str(e.prefix), "kind": e.kind, "reason": e.reason, "source": "config"}
            for e in svc.static_whitelist()
        ]
        return static + [r.as_dict() for r in await asyncio.to_thread(svc.store.list_whitelist)]

    @router.post("/whitelist", status_code=201, summary="Add a runtime whitelist entry")
    async def add_whitelist(body: WhitelistIn, key: KeyInfo = Depends(operate)) -> dict[str, Any]:
        if body.kind not in WHITELIST_KINDS:
            raise ApiError(422, "invalid_kind", f"kind must be one of {', '.join(WHITELIST_KINDS)}")
        try:
            return await get().add_whitelist(body.prefix, body.kind, body.reason, key.name, body.ttl_seconds)
        except Refused as exc:
            raise _api_error(exc) from None

    @router.delete("/whitelist/{entry_id}", status_code=204, summary="Remove a runtime whitelist entry")
    async def delete_whitelist(entry_id: str, key: KeyInfo = Depends(operate)) -> Response:
        try:
            await get().delete_whitelist(entry_id, key.name)
        except Refused as exc:
            raise _api_error(exc) from None
        return Response(status_code=204)

    @router.get("/audit", summary="Who did what to which mitigation, when and why")
    async def audit(
        limit: int = Query(default=200, ge=1, le=5000), mitigation_id: str | None = Query(default=None)
    ) -> list[dict[str, Any]]:
        return [r.as_dict() for r in await asyncio.to_thread(get().store.list_audit, limit, mitigation_id)]

    @router.get("/bgp/status", summary="ExaBGP, bridge and reconciler state")
    async def bgp_status() -> dict[str, Any]:
        return get().status()

    return router
