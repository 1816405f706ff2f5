"""The baseline HTTP and WebSocket API, served by uvicorn on loopback over a running service
(real NATS, SQLite or PostgreSQL), with real API keys."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
import websockets

from voxguard.baseline.api import build_router, parse_step
from voxguard.baseline.review_api import build_review_router
from voxguard.baseline.service import BaselineService
from voxguard.shared.auth import KeyStore
from voxguard.shared.bus import Bus
from voxguard.shared.config import Tier, example_config_path, load_config
from voxguard.shared.db import make_engine
from voxguard.shared.errors import ApiError
from voxguard.shared.http import create_app
from voxguard.shared.messages import SourceCount, TrafficTick
from voxguard.shared.runtime import ServiceContext
from voxguard.shared.settings import Settings

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
T0 = (NOW - dt.timedelta(minutes=10)).replace(second=0)


def tick(target: str, second: int, packets: int) -> TrafficTick:
    return TrafficTick(
        tier=Tier.SBC, target_id=target, target=f"{target} udp/5060", component="sbc-eu-1", protocol="udp",
        ports="5060", role="signalling", tick_start=T0 + dt.timedelta(seconds=second), tick_seconds=1.0,
        bytes=packets * 400, packets=packets, flows=1, distinct_sources=3,
        top_sources=[SourceCount(source="198.51.100.77", packets=packets, bytes=packets * 400)],
    )  # fmt: skip


@dataclass
class Api:
    url: str
    read: str
    operate: str
    svc: BaselineService

    def client(self, key: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=10)


@pytest.fixture
async def api(bus: Bus, db_url: str, fake_engine: Any) -> AsyncIterator[Api]:
    db = make_engine(db_url)
    keys = KeyStore(db)
    keys.migrate()
    read, operate = keys.create_key("reader", "read"), keys.create_key("operator", "operate")
    ctx = ServiceContext(Settings(), load_config(example_config_path()), bus.url)
    ctx.bus = bus
    svc = BaselineService(ctx, engine=fake_engine(threshold=1000), db=db, clock=lambda: NOW)
    await svc.start()
    app = create_app("baseline", [build_router(svc), build_review_router(svc.store, ctx.config)], keys=keys)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield Api(f"http://127.0.0.1:{port}", read, operate, svc)
    finally:
        server.should_exit = True
        await task
        await svc.stop()
        db.dispose()


async def feed(api: Api, bus: Bus, ticks: list[TrafficTick], minutes: int) -> None:
    await bus.publish_many([(t.subject(), t) for t in ticks])
    deadline = asyncio.get_running_loop().time() + 15
    while api.svc.stats["ticks"] < len(ticks) or api.svc.stats["minutes_written"] < minutes:
        assert asyncio.get_running_loop().time() < deadline, api.svc.stats
        await asyncio.sleep(0.05)


async def test_targets_series_and_baseline(api: Api, bus: Bus) -> None:
    await feed(api, bus, [tick("sbc-a", s, 100 + s) for s in range(180)], 3)
    async with api.client(api.read) as c:
        r = await c.get("/v1/targets")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["total"] == 1 and body["items"][0]["id"] == "sbc-a" and body["items"][0]["tier"] == "sbc"
        assert body["items"][0]["progress"] == 0.5  # the engine's learning state is merged in
        assert (await c.get("/v1/targets", params={"tier": "media"})).json()["total"] == 0

        r = await c.get("/v1/targets/sbc-a/baseline")
        assert r.status_code == 200 and r.json()["learning"] is True
        r = await c.get("/v1/targets/nope/baseline")
        assert r.status_code == 404 and r.json()["error"]["code"] == "target_not_found"

        params = {"from": T0.isoformat(), "to": (T0 + dt.timedelta(minutes=3)).isoformat(), "step": "1m",
                  "metrics": "packets,bytes_per_packet"}  # fmt: skip
        r = await c.get("/v1/targets/sbc-a/series", params=params)
        assert r.status_code == 200, r.text
        pts = r.json()["points"]
        assert len(pts) == 3
        assert pts[0]["observed"]["packets"] == pytest.approx(sum(100 + s for s in range(60)) / 60)
        assert pts[0]["observed"]["bytes_per_packet"] == pytest.approx(400.0)
        assert pts[0]["expected"]["packets"] == float(len("packets"))  # from engine.expected
        r = await c.get("/v1/targets/sbc-a/series", params={**params, "step": "1h"})
        assert len(r.json()["points"]) == 1

        live = (await c.get("/v1/targets/sbc-a/live")).json()["points"]
        assert len(live) == 180 and live[-1]["packets"] == 279.0


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"step": "90s"}, "invalid_step"),
        ({"step": "soon"}, "invalid_step"),
        ({"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "invalid_range"),
        ({"from": "2020-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z", "step": "1m"}, "too_many_points"),
        ({"metrics": "packets,nonsense"}, "unknown_metric"),
        ({"from": "yesterday"}, "validation_error"),
    ],
)
async def test_series_bad_input(api: Api, params: dict[str, str], code: str) -> None:
    api.svc.store.upsert_targets([{"id": "sbc-a", "tier": "sbc"}], NOW)
    async with api.client(api.read) as c:
        r = await c.get("/v1/targets/sbc-a/series", params=params)
    assert r.status_code == 422 and r.json()["error"]["code"] == code, r.text


async def test_incidents_list_detail_and_websocket(api: Api, bus: Bus) -> None:
    ws_url = api.url.replace("http://", "ws://") + "/v1/events"
    async with websockets.connect(f"{ws_url}?access_token={api.read}") as ws:
        await asyncio.sleep(0.1)
        await feed(api, bus, [tick("sbc-a", s, 5000 if s in (5, 6) else 10) for s in range(10)], 0)
        got = [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(3)]
    assert [g["event"] for g in got] == ["opened", "updated", "resolved"]
    inc_id = got[0]["incident"]["id"]

    async with api.client(api.read) as c:
        r = await c.get("/v1/incidents")
        assert r.status_code == 200 and r.json()["total"] == 1
        assert (await c.get("/v1/incidents", params={"state": "open"})).json()["total"] == 0
        assert (await c.get("/v1/incidents", params={"tier": "media"})).json()["total"] == 0
        since = (T0 + dt.timedelta(hours=1)).isoformat()
        assert (await c.get("/v1/incidents", params={"since": since})).json()["total"] == 0
        assert (await c.get("/v1/incidents", params={"state": "bogus"})).status_code == 422
        assert (await c.get("/v1/incidents", params={"limit": 0})).status_code == 422

        r = await c.get(f"/v1/incidents/{inc_id}")
        assert r.status_code == 200
        d = r.json()
        assert [e["event"] for e in d["timeline"]] == ["opened", "updated", "resolved"]
        assert d["peak"]["ratio"] == 50.0 and d["vectors"] == ["sip_flood"]
        assert d["top_sources"][0]["source"] == "198.51.100.77"
        assert d["evidence"]["pcap"] == "/v1/targets/sbc-a/evidence.pcap"
        assert d["evidence"]["flows"] == "/v1/targets/sbc-a/flows"
        assert (await c.get("/v1/incidents/nope")).status_code == 404


async def test_websocket_auth(api: Api) -> None:
    ws_url = api.url.replace("http://", "ws://") + "/v1/events"
    with pytest.raises(websockets.exceptions.InvalidStatus):
        async with websockets.connect(ws_url):
            pass
    with pytest.raises(websockets.exceptions.InvalidStatus):
        async with websockets.connect(f"{ws_url}?access_token=vg_bad"):
            pass
    async with websockets.connect(ws_url, additional_headers={"Authorization": f"Bearer {api.read}"}) as ws:
        await asyncio.sleep(0.1)
        assert len(api.svc.hub) == 1
        await ws.close()


async def test_turn_sessions_needs_operate(api: Api) -> None:
    async with api.client() as c:
        assert (await c.put("/v1/turn/turn-eu/sessions", json={"sessions": 5})).status_code == 401
    async with api.client(api.read) as c:
        r = await c.put("/v1/turn/turn-eu/sessions", json={"sessions": 5})
        assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope"
    async with api.client(api.operate) as c:
        r = await c.put("/v1/turn/turn-eu/sessions", json={"sessions": 5})
        assert r.status_code == 200 and r.json() == {"relay": "turn-eu", "sessions": 5}
        assert api.svc.engine.turn == {"turn-eu": 5}  # type: ignore[attr-defined]
        assert (await c.put("/v1/turn/turn-eu/sessions", json={"sessions": -1})).status_code == 422
        assert (await c.put("/v1/turn/turn-eu/sessions", json={"sessions": "x"})).status_code == 422
        assert (await c.put("/v1/turn/turn-eu/sessions", json={"sessions": 1, "x": 1})).status_code == 422
        r = await c.put("/v1/turn/unknown-relay/sessions", json={"sessions": 1})
        assert r.status_code == 404 and r.json()["error"]["code"] == "relay_not_found"


def test_parse_step() -> None:
    assert parse_step("60") == 60 and parse_step("5m") == 300 and parse_step("1h") == 3600 and parse_step("1d") == 86400
    for bad in ("0", "30s", "61", "1w", ""):
        with pytest.raises(ApiError):
            parse_step(bad)
