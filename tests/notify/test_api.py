"""The notify HTTP API: channels without secrets, deliveries by incident, dead letters, test-send."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from voxguard.notify.api import build_router
from voxguard.notify.clock import ManualClock
from voxguard.notify.service import NotifyService
from voxguard.notify.store import Store
from voxguard.shared.auth import KeyStore
from voxguard.shared.http import create_app

from .conftest import FAST_RETRY, PD_KEY, WH_SECRET, incident_event, make_config, providers, routes, running
from .fakesaas import SLACK_PATH, FakeSaaS


@pytest.fixture
async def api(saas: FakeSaaS, store: Store) -> AsyncIterator[tuple[httpx.AsyncClient, NotifyService, dict[str, str]]]:
    keys = KeyStore(store.engine)
    keys.migrate()
    headers = {"Authorization": f"Bearer {keys.create_key('t', 'operate')}"}
    base = saas.url
    chans = {
        "oncall": {
            "type": "pagerduty",
            "routing_key": PD_KEY,
            "url": f"{base}/pagerduty/v2/enqueue",
            "retry": FAST_RETRY,
        },
        "noc": {"type": "slack", "url": f"{base}{SLACK_PATH}", "retry": FAST_RETRY},
        "hook": {"type": "webhook", "url": f"{base}/webhook/ops", "secret": WH_SECRET, "retry": FAST_RETRY},
    }
    cfg = make_config(
        base,
        notifications={"channels": chans, "routes": routes()},
        status_pages={"providers": providers(base)},
    )
    async with running(cfg, store, clock=ManualClock()) as svc:
        app = create_app("notify", [build_router(lambda: svc)], keys=keys)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            yield client, svc, headers


async def test_channels_never_show_secrets(api: Any) -> None:
    client, _, h = api
    r = await client.get("/v1/notify/channels", headers=h)
    assert r.status_code == 200
    body = r.text
    assert {c["name"] for c in r.json()} == {"oncall", "noc", "hook"}
    assert PD_KEY not in body and "XXXXSECRET" not in body and WH_SECRET not in body
    assert (await client.get("/v1/notify/routes", headers=h)).json()[0]["channels"] == ["oncall"]


async def test_deliveries_by_incident_and_detail(api: Any, saas: FakeSaaS) -> None:
    client, svc, h = api
    await svc.on_incident(incident_event(severity="critical"))
    await svc.on_incident(incident_event(incident_id="other", severity="warning"))
    await svc.dispatcher.drain()
    rows = (await client.get("/v1/notify/deliveries", params={"incident_id": "inc-1"}, headers=h)).json()
    assert {r["channel"] for r in rows} == {"oncall", "noc"} and all(r["status"] == "sent" for r in rows)
    one = (await client.get(f"/v1/notify/deliveries/{rows[0]['id']}", headers=h)).json()
    assert one["history"][0]["response_code"] in (200, 202) and one["history"][0]["latency_ms"] >= 0
    assert (await client.get("/v1/notify/deliveries/9999", headers=h)).status_code == 404


async def test_dead_letter_retry_through_the_api(api: Any, saas: FakeSaaS) -> None:
    client, svc, h = api
    saas.queue("slack", "500", "500", "500")
    await svc.on_incident(incident_event(severity="warning"))
    for _ in range(200):
        if svc.store.counts().get("pending", 0) == 0:
            break
        svc.clock.advance(1)
        svc.dispatcher.kick()
        await __import__("asyncio").sleep(0.02)
    [dead] = (await client.get("/v1/notify/dead-letters", headers=h)).json()
    assert dead["channel"] == "noc" and dead["attempts"] == 3
    assert (await client.post(f"/v1/notify/dead-letters/{dead['id']}/retry")).status_code == 401
    r = await client.post(f"/v1/notify/dead-letters/{dead['id']}/retry", headers=h)
    assert r.status_code == 200 and r.json()["status"] == "pending"
    await svc.dispatcher.drain()
    assert (await client.get(f"/v1/notify/deliveries/{dead['id']}", headers=h)).json()["status"] == "sent"
    again = await client.post(f"/v1/notify/dead-letters/{dead['id']}/retry", headers=h)
    assert again.status_code == 409 and again.json()["error"]["code"] == "not_dead_letter"


async def test_test_send_per_channel(api: Any, saas: FakeSaaS) -> None:
    client, _, h = api
    for name in ("noc", "oncall", "hook"):
        r = await client.post(f"/v1/notify/channels/{name}/test", headers=h)
        assert r.status_code == 200 and r.json()["status"] == "sent", r.text
    assert saas.violations == []
    assert [r.vendor for r in saas.requests] == ["slack", "pagerduty", "webhook"]
    assert saas.of("webhook")[0].body["type"] == "webhook.test"
    missing = await client.post("/v1/notify/channels/nope/test", headers=h)
    assert missing.status_code == 404 and "nope" in missing.json()["error"]["message"]


async def test_status_components_and_preview(api: Any) -> None:
    client, svc, h = api
    comps = (await client.get("/v1/status-components", headers=h)).json()
    assert {c["name"] for c in comps} == {"SIP Signaling", "Voice Quality", "API / Management", "Region eu"}
    assert all(c["status"] == "operational" for c in comps)
    await svc.on_incident(incident_event(severity="warning"))
    svc.clock.advance(61)
    preview = (await client.get("/v1/status-components/preview", headers=h)).json()
    assert {p["component"] for p in preview} == {"sip_signaling", "region-eu"}
    assert "sp-key" not in str(preview) and "***" in str(preview)
