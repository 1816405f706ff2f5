"""The FastAPI app factory of every VoxGuard service, and of the one-process mode.

``create_app("baseline", [router], readiness={...})`` gives a service its own app and OpenAPI
document; ``create_combined_app([ingest_spec, baseline_spec, ...])`` serves the same routers on
one port for ``voxguard up``, so URLs are identical in both modes. Every app has:

* ``GET /healthz`` (process alive), ``GET /readyz`` (the services' readiness checks; 503 when
  one fails), ``GET /metrics`` (Prometheus text) -- no key needed, so probes and scrapers work;
* routers mounted under ``/v1``, each requiring a key of at least ``read`` scope (routes add
  ``Depends(require_scope("operate"))`` for more). Router paths are written without ``/v1``;
* one error shape, ``{"error": {"code", "message"[, "details"]}}``, for HTTP errors, validation
  errors and crashes;
* request bodies capped (1 MiB default; 413 beyond, checked on Content-Length and while
  streaming, so a chunked upload cannot get around it);
* ``voxguard_http_requests_total{service,route,status}`` and
  ``voxguard_http_request_duration_seconds{service,route}``, labelled with the route template
  (never the raw path, whose cardinality an attacker controls);
* server spans from FastAPI's native OpenTelemetry support (W3C ``traceparent`` honoured)
  whenever ``telemetry.setup_tracing`` installed a provider.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from voxguard.shared.auth import KeyStore, require_scope
from voxguard.shared.db import make_engine, readiness_check
from voxguard.shared.errors import ApiError, default_code, error_body

MAX_BODY_BYTES = 1024 * 1024
READINESS_TIMEOUT_S = 5.0
API_PREFIX = "/v1"
SECURITY_SCHEME = "bearerAuth"

Readiness = Callable[[], Awaitable[bool]]
Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]

HTTP_REQUESTS = Counter("voxguard_http_requests", "HTTP requests answered", ["service", "route", "status"])
HTTP_LATENCY = Histogram(
    "voxguard_http_request_duration_seconds",
    "HTTP request latency",
    ["service", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)

_stdlog = logging.getLogger("voxguard.http")


@dataclass
class ServiceSpec:
    """What one service contributes to an app: routers, readiness checks and lifespans.

    ``lifespans`` are async context managers entered at start (in order) and exited at
    stop (in reverse): connect to NATS, start consumers, open the database, ...
    """

    name: str
    routers: Sequence[APIRouter] = ()
    readiness: Mapping[str, Readiness] = field(default_factory=dict)
    lifespans: Sequence[Lifespan] = ()
    description: str = ""


class BodyTooLarge(ApiError):
    """Raised from the body stream, so FastAPI passes it through as an HTTP error."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, "payload_too_large", f"request body larger than {limit} bytes")


def _scope_route(scope: Scope) -> str:
    """The matched route template (``/v1/incidents/{id}``), bounded cardinality."""
    fastapi_scope = scope.get("fastapi") or {}
    ctx = fastapi_scope.get("effective_route_context") if isinstance(fastapi_scope, dict) else None
    path = getattr(ctx, "path_format", None)
    if path is None:
        path = getattr(scope.get("route"), "path_format", None)
    return str(path) if path else "<unmatched>"


class _HttpMiddleware:
    """Body limit + Prometheus metrics, as raw ASGI (no per-request buffering)."""

    def __init__(self, app: ASGIApp, service: str, max_body_bytes: int) -> None:
        self.app = app
        self.service = service
        self.max_body = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        route = "<unmatched>"
        response_started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = int(message["status"])
                response_started = True
            await send(message)

        try:
            early = self._check_length(scope)
            if early is not None:
                route = "<rejected>"
                await early(scope, receive, send_wrapper)
                return
            received = 0

            async def receive_limited() -> Message:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > self.max_body:
                        raise BodyTooLarge(self.max_body)
                return message

            try:
                await self.app(scope, receive_limited, send_wrapper)
            except BodyTooLarge as exc:
                # Raised outside FastAPI's handlers (e.g. a raw Request.stream() read).
                if response_started:
                    raise
                await _json_error(exc.status_code, exc.code, exc.message)(scope, receive, send_wrapper)
            route = _scope_route(scope)
        finally:
            service = scope.get("voxguard.service", self.service)
            HTTP_REQUESTS.labels(service, route, str(status)).inc()
            HTTP_LATENCY.labels(service, route).observe(time.perf_counter() - started)

    def _check_length(self, scope: Scope) -> Response | None:
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    return _json_error(400, "bad_request", "invalid Content-Length header")
                if length > self.max_body:
                    return _json_error(413, "payload_too_large", f"request body larger than {self.max_body} bytes")
        return None


def _json_error(
    status: int, code: str, message: str, details: Any = None, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(code, message, details), status_code=status, headers=dict(headers or {}))


async def _http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    headers = getattr(exc, "headers", None)
    if isinstance(exc, ApiError):
        return _json_error(exc.status_code, exc.code, exc.message, exc.details, headers)
    if isinstance(exc.detail, str):
        message, details = exc.detail, None
    else:
        message, details = default_code(exc.status_code).replace("_", " "), jsonable_encoder(exc.detail)
    if exc.status_code in (204, 304):  # no body allowed
        return Response(status_code=exc.status_code, headers=headers)
    return _json_error(exc.status_code, default_code(exc.status_code), message, details, headers)


async def _validation_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    # loc/msg/type only: echoing "input" back could reflect megabytes or secrets.
    details = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()
    ]
    return _json_error(422, "validation_error", "the request is not valid", jsonable_encoder(details))


async def _unhandled_error_handler(request: Request, exc: Exception) -> Response:
    # stdlib logger: rendered by configure_logging's formatter (plain traceback in JSON mode);
    # structlog's unconfigured default would render rich locals, seconds per crash.
    _stdlog.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _json_error(500, "internal_error", "internal server error")


def _tag_service(name: str) -> Callable[[HTTPConnection], None]:
    def tag(conn: HTTPConnection) -> None:
        conn.scope["voxguard.service"] = name

    tag.__name__ = f"service_{name}"
    return tag


async def _run_check(check: Readiness) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        ok = bool(await asyncio.wait_for(check(), READINESS_TIMEOUT_S))
        result: dict[str, Any] = {"ok": ok}
    except TimeoutError:
        result = {"ok": False, "error": f"timed out after {READINESS_TIMEOUT_S:g}s"}
    except Exception as exc:
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    result["ms"] = round((time.perf_counter() - started) * 1000, 1)
    return result


def _keystore_check(app: FastAPI) -> Readiness:
    async def check() -> bool:
        store: KeyStore | None = getattr(app.state, "keystore", None)
        return store is not None and await readiness_check(store.engine)()

    return check


def _build(
    title: str,
    label: str,
    specs: Sequence[ServiceSpec],
    keys: KeyStore | None,
    max_body_bytes: int,
    version: str | None,
) -> FastAPI:
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"service names must be unique: {names}")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            if app.state.keystore is None:
                app.state.keystore = await asyncio.to_thread(_default_keystore)
                stack.callback(app.state.keystore.engine.dispose)
            for spec in specs:
                for hook in spec.lifespans:
                    await stack.enter_async_context(hook(app))
            yield

    app = FastAPI(
        title=title,
        version=version or _package_version(),
        description="\n\n".join(s.description for s in specs if s.description),
        lifespan=lifespan,
        # Spans only (when a TracerProvider is installed); metrics go to Prometheus below.
        telemetry={"metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.keystore = keys
    app.state.services = names
    started_at = time.time()

    checks: dict[str, Readiness] = {"auth.keystore": _keystore_check(app)}
    for spec in specs:
        for check_name, check in spec.readiness.items():
            checks[f"{spec.name}.{check_name}"] = check

    @app.get("/healthz", tags=["ops"], summary="Process is alive")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "services": names, "uptime_s": round(time.time() - started_at, 1)}

    @app.get("/readyz", tags=["ops"], summary="Dependencies are reachable", response_model=None)
    async def readyz() -> JSONResponse:
        results = await asyncio.gather(*(_run_check(c) for c in checks.values()))
        detail = dict(zip(checks, results, strict=True))
        ready = all(r["ok"] for r in results)
        body = {"status": "ready" if ready else "not_ready", "services": names, "checks": detail}
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    read = require_scope("read")
    for spec in specs:
        for router in spec.routers:
            app.include_router(
                router, prefix=API_PREFIX, dependencies=[Depends(_tag_service(spec.name)), Depends(read)]
            )

    app.add_exception_handler(StarletteHTTPException, _http_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_error_handler)
    app.add_exception_handler(Exception, _unhandled_error_handler)
    app.add_middleware(_HttpMiddleware, service=label, max_body_bytes=max_body_bytes)
    _install_openapi(app)
    return app


def _package_version() -> str:
    try:
        return importlib.metadata.version("voxguard")
    except importlib.metadata.PackageNotFoundError:
        return "0"


def _default_keystore() -> KeyStore:
    from voxguard.shared.settings import load_settings

    store = KeyStore(make_engine(load_settings().effective_database_url()))
    store.migrate()
    return store


def _install_openapi(app: FastAPI) -> None:
    """Declare the bearer scheme and mark every ``/v1`` operation as needing it."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = schema.setdefault("components", {})
        components.setdefault("securitySchemes", {})[SECURITY_SCHEME] = {
            "type": "http",
            "scheme": "bearer",
            "description": "A VoxGuard API key (`voxguard keys create NAME --scope read|operate|admin`).",
        }
        for path, item in schema.get("paths", {}).items():
            if path == API_PREFIX or path.startswith(API_PREFIX + "/"):
                for op in item.values():
                    if isinstance(op, dict):
                        op["security"] = [{SECURITY_SCHEME: []}]
                        op.setdefault("responses", {}).update(
                            {
                                "401": {"description": "Missing or invalid API key"},
                                "403": {"description": "API key scope too low"},
                            }
                        )
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(
    service_name: str,
    routers: Sequence[APIRouter] = (),
    readiness: Mapping[str, Readiness] | None = None,
    lifespans: Sequence[Lifespan] = (),
    *,
    keys: KeyStore | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    description: str = "",
    version: str | None = None,
) -> FastAPI:
    """The app of one service (``voxguard serve SERVICE``).

    ``keys``: the API-key store; None opens the default database at start and migrates it.
    """
    spec = ServiceSpec(service_name, routers, dict(readiness or {}), lifespans, description)
    return _build(f"VoxGuard {service_name}", service_name, [spec], keys, max_body_bytes, version)


def create_combined_app(
    services: Sequence[ServiceSpec],
    *,
    keys: KeyStore | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    version: str | None = None,
) -> FastAPI:
    """All services in one app (``voxguard up``): same URLs, aggregated health, one OpenAPI."""
    return _build("VoxGuard", "voxguard", services, keys, max_body_bytes, version)


__all__ = [
    "API_PREFIX",
    "HTTP_LATENCY",
    "HTTP_REQUESTS",
    "MAX_BODY_BYTES",
    "ApiError",
    "BodyTooLarge",
    "Lifespan",
    "Readiness",
    "ServiceSpec",
    "create_app",
    "create_combined_app",
]
