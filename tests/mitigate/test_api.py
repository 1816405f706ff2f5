"""The mitigate HTTP API: manual rules refused with clear 4xx, approval, withdraw, whitelist, audit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mitigate_helpers import example_config, incident

from voxguard.mitigate.api import build_router
from voxguard.mitigate.engine import MitigateService
from voxguard.mitigate.settings import parse_bgp
from voxguard.shared.auth import KeyStore
from voxguard.shared.bus import Bus
from voxguard.shared.config import parse_config
from voxguard.shared.db import make_engine
from voxguard.shared.http import create_app

CFG = example_config()


def approval_config() -> Any:
    data = CFG.model_dump(mode="json")
    data["tiers"]["sbc"]["mitigation"]["approval_required"] = True
    return parse_config(data)


@pytest.fixture
async def api(tmp_path: Path, bus: Bus, sqlite_url: str, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    engine = make_engine(sqlite_url)
    keys = KeyStore(engine)
    keys.migrate()
    config = approval_config() if "approval" in request.node.name else CFG
    svc = MitigateService(config, bus, engine, tmp_path / "var", bgp=parse_bgp({}), consume=False)
    await svc.start()
    app = create_app("mitigate", [build_router(lambda: svc)], keys=keys)
    headers = {"Authorization": f"Bearer {keys.create_key('noc-alice', 'operate')}"}
    read = {"Authorization": f"Bearer {keys.create_key('viewer', 'read')}"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=headers) as client:
        client.svc = svc  # type: ignore[attr-defined]
        client.read_headers = read  # type: ignore[attr-defined]
        yield client
    await svc.stop()
    engine.dispose()


RULE = {
    "destination": "203.0.113.10/32",
    "sources": ["198.19.1.0/24"],
    "protocol": "udp",
    "destination_ports": "5060",
    "action": "discard",
    "reason": "manual block of a scanner network",
}


async def test_manual_rule_created_listed_and_withdrawn_with_audit(api: httpx.AsyncClient) -> None:
    r = await api.post("/v1/mitigations", json=RULE)
    assert r.status_code == 201, r.text
    m = r.json()
    assert set(m) >= {"id", "incident_id", "state", "action", "rate_bps", "match", "expires_at", "reason", "command"}
    assert m["state"] == "proposed" and m["incident_id"] is None and m["created_by"] == "noc-alice"
    assert m["match"] == {
        "destination": "203.0.113.10/32",
        "sources": ["198.19.1.0/24"],
        "protocol": "udp",
        "destination_ports": "5060",
    }
    assert m["command"].startswith("announce flow route { match { destination 203.0.113.10/32; source 198.19.1.0/24;")
    assert m["expires_at"]

    listed = (await api.get("/v1/mitigations", headers=api.read_headers)).json()  # type: ignore[attr-defined]
    assert [x["id"] for x in listed] == [m["id"]]
    assert (await api.get(f"/v1/mitigations/{m['id']}")).json()["id"] == m["id"]
    assert (await api.get("/v1/mitigations/nope")).status_code == 404

    d = await api.delete(f"/v1/mitigations/{m['id']}", params={"reason": "false positive"})
    assert d.status_code == 200 and d.json()["state"] == "withdrawn"
    assert (await api.delete(f"/v1/mitigations/{m['id']}")).status_code == 409

    audit = (await api.get("/v1/audit")).json()
    assert [(a["who"], a["action"]) for a in audit] == [("noc-alice", "withdraw"), ("noc-alice", "create")]
    assert audit[0]["why"] == "false positive" and audit[0]["at"]


@pytest.mark.parametrize(
    ("change", "status", "code", "fragment"),
    [
        ({"sources": ["192.0.2.200/32"]}, 422, "whitelisted", "192.0.2.192/27"),
        ({"sources": ["192.0.2.0/24"]}, 422, "whitelisted", "SIP trunk provider"),
        ({"sources": ["0.0.0.0/0"]}, 422, "rail", "every address"),
        ({"sources": ["198.19.0.0/16"]}, 422, "rail", "shorter than /24"),
        ({"sources": ["198.19.1.300/24"]}, 422, "invalid_rule", "not a valid IP prefix"),
        ({"sources": ["198.19.1.5/24"]}, 422, "invalid_rule", "host bits set"),
        ({"destination": "garbage"}, 422, "invalid_rule", "destination"),
        ({"destination": "0.0.0.0/0"}, 422, "rail", "destination 0.0.0.0/0"),
        ({"destination_ports": "20000-10000"}, 422, "invalid_rule", "inverted"),
        ({"sources": [], "action": "discard"}, 422, "rail", "must name its source prefixes"),
        ({"protocol": "icmp"}, 422, "invalid_rule", "ports need protocol"),
        ({"tier": "registrar"}, 422, "alert_only_tier", "alert-only"),
        ({"action": "rate_limit"}, 422, "invalid_rule", "rate_bps"),
        ({"action": "redirect"}, 422, "validation_error", "not valid"),
    ],
)
async def test_bad_manual_rules_are_refused_clearly(
    api: httpx.AsyncClient, change: dict[str, Any], status: int, code: str, fragment: str
) -> None:
    r = await api.post("/v1/mitigations", json={**RULE, **change})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code
    assert fragment in err["message"], err["message"]
    svc: MitigateService = api.svc  # type: ignore[attr-defined]
    assert svc.store.desired() == []
    assert all(row.state == "rejected" for row in svc.store.list_rules())


async def test_writes_need_operate_scope(api: httpx.AsyncClient) -> None:
    r = await api.post("/v1/mitigations", json=RULE, headers=api.read_headers)  # type: ignore[attr-defined]
    assert r.status_code == 403
    assert (await api.get("/v1/mitigations", headers={"Authorization": ""})).status_code == 401


async def test_approval_mode_holds_rules_until_approved(api: httpx.AsyncClient) -> None:
    svc: MitigateService = api.svc  # type: ignore[attr-defined]
    ev = incident(svc.config, top_prefixes=["198.19.1.0/24", "198.19.2.0/24"])
    await svc.on_incident(ev)
    pending = (await api.get("/v1/mitigations", params={"state": "pending_approval"})).json()
    assert len(pending) == 2
    r = await api.post(f"/v1/mitigations/{pending[0]['id']}/approve", json={"reason": "checked the pcap"})
    assert r.status_code == 200 and r.json()["state"] == "proposed"
    assert (await api.post(f"/v1/mitigations/{pending[0]['id']}/approve")).status_code == 409
    assert (await api.post("/v1/mitigations/missing/approve")).status_code == 404
    audit = (await api.get("/v1/audit", params={"mitigation_id": pending[0]["id"]})).json()
    assert audit[0]["action"] == "approve" and audit[0]["who"] == "noc-alice" and audit[0]["why"] == "checked the pcap"


async def test_whitelist_crud_and_rules_reworked_around_new_entries(api: httpx.AsyncClient) -> None:
    svc: MitigateService = api.svc  # type: ignore[attr-defined]
    r = await api.post("/v1/mitigations", json=RULE)
    assert r.status_code == 201
    rule_id = r.json()["id"]

    w = await api.post(
        "/v1/whitelist",
        json={"prefix": "198.19.1.128/25", "kind": "authenticated_api_clients", "reason": "partner API"},
    )
    assert w.status_code == 201, w.text
    entry = w.json()
    wl = (await api.get("/v1/whitelist")).json()
    assert {x["prefix"] for x in wl} >= {"192.0.2.192/27", "203.0.113.0/28", "198.19.1.128/25"}

    old = (await api.get(f"/v1/mitigations/{rule_id}")).json()
    assert old["state"] == "withdrawn"
    live = [row.view() for row in svc.store.list_rules(state="proposed")]
    assert [v.match.sources for v in live] == [["198.19.1.0/25"]]

    bad = await api.post("/v1/whitelist", json={"prefix": "nonsense", "reason": "x"})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_prefix"
    assert (await api.post("/v1/whitelist", json={"prefix": "0.0.0.0/0", "reason": "x"})).status_code == 422

    assert (await api.delete(f"/v1/whitelist/{entry['id']}")).status_code == 204
    assert (await api.delete(f"/v1/whitelist/{entry['id']}")).status_code == 404
    actions = [a["action"] for a in (await api.get("/v1/audit")).json()]
    assert actions[0] == "whitelist_delete" and "whitelist_add" in actions


async def test_metrics_follow_rules_and_events(api: httpx.AsyncClient) -> None:
    from prometheus_client import REGISTRY

    def sample(name: str, labels: dict[str, str]) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before = sample("voxguard_mitigation_events_total", {"event": "proposed"})
    assert (await api.post("/v1/mitigations", json=RULE)).status_code == 201
    assert sample("voxguard_mitigation_events_total", {"event": "proposed"}) == before + 1
    await api.svc.reconciler.run_once()  # type: ignore[attr-defined]
    assert sample("voxguard_mitigation_rules", {"state": "proposed"}) == 1


async def test_status_reports_dry_run(api: httpx.AsyncClient) -> None:
    s = (await api.get("/v1/bgp/status")).json()
    assert s["dry_run"] is True and s["bridge_connected"] is False
