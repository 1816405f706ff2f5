"""The app factory: ops endpoints, /v1 auth, errors, body limits, metrics, tracing, combined mode."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from fastapi import APIRouter, Depends, FastAPI, HTTPException
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY
from pydantic import BaseModel

import voxguard.shared.http as vhttp
from voxguard.shared.auth import KeyStore, require_scope
from voxguard.shared.db import make_engine
from voxguard.shared.errors import ApiError
from voxguard.shared.http import MAX_BODY_BYTES, ServiceSpec, create_app, create_combined_app
from voxguard.shared.telemetry import setup_tracing


@pytest.fixture
def store(sqlite_url: str) -> Iterator[KeyStore]:
    ks = KeyStore(make_engine(sqlite_url))
    ks.migrate()
    yield ks
    ks.engine.dispose()


@pytest.fixture
def key(store: KeyStore) -> dict[str, str]:
    return {"Authorization": f"Bearer {store.create_key('test', 'operate')}"}


class Rule(BaseModel):
    destination: str
    rate_bps: int


def baseline_router() -> APIRouter:
    r = APIRouter(prefix="/targets", tags=["targets"])

    @r.get("/{target_id}")
    def get_target(target_id: str) -> dict[str, str]:
        if target_id == "missing":
            raise ApiError(404, "target_not_found", "no target missing")
        if target_id == "plain":
            raise HTTPException(409, detail={"why": "conflict"})
        if target_id == "crash":
            raise RuntimeError("bug")
        return {"id": target_id}

    @r.post("/rules", dependencies=[Depends(require_scope("operate"))])
    def post_rule(rule: Rule) -> Rule:
        return rule

    return r


def ingest_router() -> APIRouter:
    r = APIRouter(prefix="/exporters")

    @r.get("")
    def exporters() -> list[str]:
        return ["edge-sbc-01"]

    return r


async def ok() -> bool:
    return True


async def broken() -> bool:
    raise ConnectionError("nats unreachable")


async def slow() -> bool:
    await asyncio.sleep(10)
    return True


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_ops_endpoints_need_no_key(store: KeyStore) -> None:
    app = create_app("baseline", [baseline_router()], {"db": ok}, keys=store)
    with TestClient(app) as c:
        h = c.get("/healthz")
        assert h.status_code == 200 and h.json()["status"] == "ok" and h.json()["services"] == ["baseline"]
        r = c.get("/readyz")
        assert r.status_code == 200
        assert r.json()["status"] == "ready"
        assert set(r.json()["checks"]) == {"auth.keystore", "baseline.db"}
        m = c.get("/metrics")
        assert m.status_code == 200 and m.headers["content-type"].startswith("text/plain")
        assert "voxguard_http_requests_total" in m.text
        assert c.get("/docs").status_code == 200
        spec = c.get("/openapi.json").json()
    assert spec["info"]["title"] == "VoxGuard baseline"
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": spec["components"]["securitySchemes"]["bearerAuth"]["description"],
    }
    assert spec["paths"]["/v1/targets/{target_id}"]["get"]["security"] == [{"bearerAuth": []}]
    assert "security" not in spec["paths"]["/healthz"]["get"]
    assert "/metrics" not in spec["paths"]


def test_readiness_fails_with_details(store: KeyStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vhttp, "READINESS_TIMEOUT_S", 0.2)
    app = create_app("notify", [], {"db": ok, "bus": broken, "smtp": slow}, keys=store)
    with TestClient(app) as c:
        r = c.get("/readyz")
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "not_ready"
    assert body["checks"]["notify.db"]["ok"] is True
    assert body["checks"]["notify.bus"] == {
        "ok": False,
        "error": "ConnectionError: nats unreachable",
        "ms": body["checks"]["notify.bus"]["ms"],
    }
    assert body["checks"]["notify.smtp"]["ok"] is False and "timed out" in body["checks"]["notify.smtp"]["error"]


def test_v1_requires_a_key_by_default(store: KeyStore, key: dict[str, str]) -> None:
    with TestClient(create_app("baseline", [baseline_router()], keys=store)) as c:
        assert c.get("/v1/targets/sbc-1").status_code == 401
        assert c.get("/v1/targets/sbc-1", headers=key).json() == {"id": "sbc-1"}


def test_error_bodies_have_one_shape(store: KeyStore, key: dict[str, str]) -> None:
    app = create_app("baseline", [baseline_router()], keys=store)
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.get("/v1/targets/missing", headers=key)
        assert (r.status_code, r.json()) == (
            404,
            {"error": {"code": "target_not_found", "message": "no target missing"}},
        )
        r = c.get("/v1/targets/plain", headers=key)
        assert r.status_code == 409
        assert r.json() == {"error": {"code": "conflict", "message": "conflict", "details": {"why": "conflict"}}}
        r = c.get("/nowhere")
        assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found")
        r = c.delete("/healthz")
        assert (r.status_code, r.json()["error"]["code"]) == (405, "method_not_allowed")
        r = c.post("/v1/targets/rules", headers=key, json={"destination": "192.0.2.1", "rate_bps": "fast"})
        assert r.status_code == 422
        err = r.json()["error"]
        assert err["code"] == "validation_error"
        assert err["details"] == [{"loc": ["body", "rate_bps"], "msg": err["details"][0]["msg"], "type": "int_parsing"}]
        r = c.get("/v1/targets/crash", headers=key)
        assert r.status_code == 500
        assert r.json() == {"error": {"code": "internal_error", "message": "internal server error"}}


def test_bodies_over_one_mib_get_413(store: KeyStore, key: dict[str, str]) -> None:
    app = create_app("baseline", [baseline_router()], keys=store)
    rule = b'{"destination": "192.0.2.1", "rate_bps": 1000}'
    with TestClient(app) as c:
        padded = rule[:-1] + b" " * (MAX_BODY_BYTES - len(rule)) + b"}"
        assert len(padded) == MAX_BODY_BYTES
        r = c.post("/v1/targets/rules", headers={**key, "Content-Type": "application/json"}, content=padded)
        assert r.status_code == 200
        r = c.post("/v1/targets/rules", headers=key, content=b"x" * (MAX_BODY_BYTES + 1))
        assert r.status_code == 413
        assert r.json()["error"]["code"] == "payload_too_large"

        def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while streaming
            for _ in range(32):
                yield b" " * 65536

        r = c.post("/v1/targets/rules", headers={**key, "Content-Type": "application/json"}, content=chunks())
        assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
        r = c.post("/v1/targets/rules", headers={**key, "Content-Length": "lots"}, content=b"{}")
        assert r.status_code == 400


def test_requests_are_counted_and_timed_by_route_template(store: KeyStore, key: dict[str, str]) -> None:
    app = create_app("metrics-svc", [baseline_router()], keys=store)
    labels = {"service": "metrics-svc", "route": "/v1/targets/{target_id}"}
    before_ok = sample("voxguard_http_requests_total", **labels, status="200")
    before_401 = sample("voxguard_http_requests_total", **labels, status="401")
    before_n = sample("voxguard_http_request_duration_seconds_count", **labels)
    with TestClient(app) as c:
        for i in range(3):
            c.get(f"/v1/targets/sbc-{i}", headers=key)
        c.get("/v1/targets/x")
        c.get("/random/attacker/path/123")
    assert sample("voxguard_http_requests_total", **labels, status="200") - before_ok == 3
    assert sample("voxguard_http_requests_total", **labels, status="401") - before_401 == 1
    assert sample("voxguard_http_request_duration_seconds_count", **labels) - before_n == 4
    assert sample("voxguard_http_requests_total", service="metrics-svc", route="<unmatched>", status="404") >= 1
    assert sample("voxguard_http_requests_total", service="metrics-svc", route="/v1/targets/sbc-0", status="200") == 0


def test_requests_start_server_spans_continuing_the_callers_trace(store: KeyStore) -> None:
    exporter = InMemorySpanExporter()
    setup_tracing("test").add_span_processor(SimpleSpanProcessor(exporter))
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    with TestClient(create_app("baseline", [baseline_router()], keys=store)) as c:
        c.get("/healthz", headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"})
    spans = [s for s in exporter.get_finished_spans() if s.name == "GET /healthz"]
    assert spans, [s.name for s in exporter.get_finished_spans()]
    assert format(spans[0].context.trace_id, "032x") == trace_id
    assert spans[0].attributes is not None and spans[0].attributes["http.response.status_code"] == 200


def test_combined_app_serves_all_services_on_one_port(store: KeyStore, key: dict[str, str]) -> None:
    events: list[str] = []

    def hook(name: str):  # type: ignore[no-untyped-def]
        @contextlib.asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[None]:
            events.append(f"start {name}")
            yield
            events.append(f"stop {name}")

        return lifespan

    specs = [
        ServiceSpec("ingest", [ingest_router()], {"listeners": ok}, [hook("ingest")]),
        ServiceSpec("baseline", [baseline_router()], {"db": ok, "bus": broken}, [hook("baseline")]),
    ]
    before = sample("voxguard_http_requests_total", service="ingest", route="/v1/exporters", status="200")
    with TestClient(create_combined_app(specs, keys=store)) as c:
        assert events == ["start ingest", "start baseline"]
        assert c.get("/v1/exporters", headers=key).json() == ["edge-sbc-01"]
        assert c.get("/v1/targets/t1", headers=key).json() == {"id": "t1"}
        assert c.get("/healthz").json()["services"] == ["ingest", "baseline"]
        r = c.get("/readyz")
        assert r.status_code == 503
        assert {k: v["ok"] for k, v in r.json()["checks"].items()} == {
            "auth.keystore": True,
            "ingest.listeners": True,
            "baseline.db": True,
            "baseline.bus": False,
        }
        spec = c.get("/openapi.json").json()
    assert events[2:] == ["stop baseline", "stop ingest"]
    assert spec["info"]["title"] == "VoxGuard"
    assert {"/v1/exporters", "/v1/targets/{target_id}", "/v1/targets/rules"} <= set(spec["paths"])
    assert sample("voxguard_http_requests_total", service="ingest", route="/v1/exporters", status="200") == before + 1
    with pytest.raises(ValueError, match="unique"):
        create_combined_app([ServiceSpec("a"), ServiceSpec("a")], keys=store)


def test_default_keystore_comes_from_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("VOXGUARD_VAR_DIR", str(tmp_path / "var"))
    with TestClient(create_app("ingest", [ingest_router()])) as c:
        assert c.get("/v1/exporters").status_code == 401
        store = KeyStore(make_engine(f"sqlite:///{tmp_path / 'var' / 'voxguard.db'}"))
        token = store.create_key("k", "read")
        assert c.get("/v1/exporters", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        store.engine.dispose()
