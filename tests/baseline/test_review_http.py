"""``GET /v1/incidents/{id}/report`` on a running baseline service (real NATS, real database)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import websockets
from test_api_http import Api, api, feed, tick  # noqa: F401  (the fixture is used by name)

from voxguard.shared.bus import Bus


async def test_review_markdown_and_html(api: Api, bus: Bus) -> None:  # noqa: F811
    ws_url = api.url.replace("http://", "ws://") + "/v1/events"
    async with websockets.connect(f"{ws_url}?access_token={api.read}") as ws:
        await asyncio.sleep(0.1)
        await feed(api, bus, [tick("sbc-a", s, 5000 if s in (5, 6) else 10) for s in range(10)], 0)
        got: list[dict[str, Any]] = [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(3)]
    inc_id = got[0]["incident"]["id"]
    async with api.client(api.read) as c:
        r = await c.get(f"/v1/incidents/{inc_id}/report")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/markdown")
        md = r.text
        assert md.startswith("# Post-incident review: sip_flood")
        assert "| opened | sip_flood" in md and "| resolved | sip_flood" in md
        assert "198.51.100.77" in md and "50.0x baseline" in md
        assert "SIP flood on the SBC" in md  # the runbook of the example config's sbc tier
        assert "/v1/targets/sbc-a/evidence.pcap" in md
        h = await c.get(f"/v1/incidents/{inc_id}/report", params={"format": "html"})
        assert h.status_code == 200 and h.headers["content-type"].startswith("text/html")
        assert "<svg" in h.text and "<table>" in h.text
        assert (await c.get("/v1/incidents/nope/report")).status_code == 404
        assert (await c.get(f"/v1/incidents/{inc_id}/report", params={"format": "pdf"})).status_code == 422
    async with api.client() as anonymous:
        assert (await anonymous.get(f"/v1/incidents/{inc_id}/report")).status_code == 401
