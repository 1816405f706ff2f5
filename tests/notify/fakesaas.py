"""Local stand-ins for Slack, PagerDuty, Statuspage, Instatus, Cachet and webhook receivers.

Every request is checked against the vendor contract in ``../shared/data/api-specs/`` (method,
path, auth header, JSON body via jsonschema); a violation is answered 400 *and* recorded, so a
test fails on ``server.violations``. ``script`` queues misbehaviour per vendor (429, 500,
timeouts, garbage) to exercise retries. Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from jsonschema import Draft202012Validator, FormatChecker
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from voxguard.notify import signing

PD_KEY = "e93facc04764012d7bfb002500d5d1a6"
SP_KEY, SP_PAGE = "sp-key-123", "kctbh9vrtdwd"
IS_KEY, IS_PAGE = "is-key-456", "ckpage01"
CACHET_TOKEN = "9yMHsdioQosnyVK4iCVR"
WH_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SLACK_PATH = "/slack/services/T000/B000/XXXXSECRET"


@dataclass
class Seen:
    vendor: str
    method: str
    path: str
    headers: dict[str, str]
    body: Any


def _validator(spec_dir: Path, rel: str, name: str) -> Draft202012Validator:
    full = json.loads((spec_dir / rel).read_text())
    schema = {"$schema": full["$schema"], "$defs": full["$defs"], "$ref": f"#/$defs/{name}"}
    return Draft202012Validator(schema, format_checker=FormatChecker())


# (vendor, method, path regex, schema file, $defs name, auth check)
def _contracts(spec: Path) -> list[tuple[str, str, re.Pattern[str], Draft202012Validator | None, Any]]:
    sp, ins, ca = (
        "statuspage/statuspage-v1.schema.json",
        "instatus/instatus-v1.schema.json",
        "cachet/cachet-v2.schema.json",
    )

    def hdr(name: str, pattern: str) -> Any:
        return lambda h: re.fullmatch(pattern, h.get(name, "")) is not None

    oauth, bearer = hdr("authorization", f"OAuth {SP_KEY}"), hdr("authorization", f"Bearer {IS_KEY}")
    cachet = hdr("x-cachet-token", CACHET_TOKEN)
    p = rf"/statuspage/v1/pages/{SP_PAGE}"
    i = rf"/instatus/v1/{IS_PAGE}"
    return [
        (
            "slack",
            "POST",
            re.compile(re.escape(SLACK_PATH)),
            _validator(spec, "slack/incoming-webhook.schema.json", "Message"),
            None,
        ),
        (
            "pagerduty",
            "POST",
            re.compile(r"/pagerduty/v2/enqueue"),
            _validator(spec, "pagerduty/events-v2.schema.json", "EnqueueRequest"),
            None,
        ),
        (
            "statuspage",
            "PATCH",
            re.compile(rf"{p}/components/\w+"),
            _validator(spec, sp, "ComponentPatchRequest"),
            oauth,
        ),
        ("statuspage", "POST", re.compile(rf"{p}/incidents"), _validator(spec, sp, "IncidentCreateRequest"), oauth),
        ("statuspage", "PATCH", re.compile(rf"{p}/incidents/\w+"), _validator(spec, sp, "IncidentPatchRequest"), oauth),
        ("statuspage", "GET", re.compile(rf"{p}/incidents/unresolved"), None, oauth),
        ("instatus", "PUT", re.compile(rf"{i}/components/\w+"), _validator(spec, ins, "ComponentPutRequest"), bearer),
        ("instatus", "POST", re.compile(rf"{i}/incidents"), _validator(spec, ins, "IncidentCreateRequest"), bearer),
        (
            "instatus",
            "POST",
            re.compile(rf"{i}/incidents/\w+/incident-updates"),
            _validator(spec, ins, "IncidentUpdateRequest"),
            bearer,
        ),
        (
            "cachet",
            "PUT",
            re.compile(r"/cachet/api/v1/components/\d+"),
            _validator(spec, ca, "ComponentPutRequest"),
            cachet,
        ),
        ("cachet", "POST", re.compile(r"/cachet/api/v1/incidents"), _validator(spec, ca, "IncidentRequest"), cachet),
        (
            "cachet",
            "POST",
            re.compile(r"/cachet/api/v1/incidents/\d+/updates"),
            _validator(spec, ca, "IncidentUpdateRequest"),
            cachet,
        ),
        (
            "webhook",
            "POST",
            re.compile(r"/webhook/\w+"),
            _validator(spec, "standard-webhooks/signed-webhook.schema.json", "Envelope"),
            None,
        ),
        ("generic", "POST", re.compile(r"/generic"), None, None),
    ]


@dataclass
class FakeSaaS:
    spec_dir: Path
    requests: list[Seen] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    script: dict[str, deque[str]] = field(default_factory=dict)
    seen_webhook_ids: set[str] = field(default_factory=set)
    stamps: list[tuple[str, float]] = field(default_factory=list)  # (vendor, arrival time)
    sp_incidents: list[dict[str, Any]] = field(default_factory=list)  # Statuspage incidents created
    duplicate_webhooks: int = 0
    delay_s: float = 0.0  # added to every answer (benchmark realism)
    port: int = 0
    _server: uvicorn.Server | None = None
    _task: asyncio.Task[None] | None = None
    _ids: int = 100

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def of(self, vendor: str) -> list[Seen]:
        return [r for r in self.requests if r.vendor == vendor]

    def queue(self, vendor: str, *behaviours: str) -> None:
        """``"429:2"`` (Retry-After 2), ``"500"``, ``"timeout"``, ``"garbage"`` (200, non-JSON)."""
        self.script.setdefault(vendor, deque()).extend(behaviours)

    async def handle(self, request: Request) -> Response:
        path, method = request.url.path, request.method
        if path == "/_stats":  # for a server in another process (the benchmark)
            return JSONResponse({"violations": self.violations, "stamps": self.stamps})
        raw = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        match = None
        for vendor, m, rx, validator, auth in self.contracts:
            if rx.fullmatch(path) and m == method:
                match = (vendor, validator, auth)
                break
        if match is None:
            self.violations.append(f"{method} {path}: no such endpoint in the contract")
            return JSONResponse({"message": "not found"}, status_code=404)
        vendor, validator, auth = match
        problems: list[str] = []
        if method == "GET":
            return self.get(vendor, request, headers, auth)
        if headers.get("content-type", "").split(";")[0] != "application/json":
            problems.append("Content-Type must be application/json")
        if auth is not None and not auth(headers):
            problems.append("missing or wrong auth header")
        try:
            body = json.loads(raw)
        except ValueError:
            body, problems = None, [*problems, "body is not JSON"]
        if validator is not None and body is not None:
            problems += [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(body)]
        if vendor == "webhook":
            try:
                signing.verify(WH_SECRET, headers, raw)
            except signing.SignatureError as exc:
                problems.append(f"signature: {exc}")
            wid = headers.get("webhook-id", "")
            if wid in self.seen_webhook_ids:
                self.duplicate_webhooks += 1
        self.requests.append(Seen(vendor, method, path, headers, body))
        self.stamps.append((vendor, time.time()))
        if problems:
            self.violations += [f"{vendor} {method} {path}: {p}" for p in problems]
            return JSONResponse({"message": "; ".join(problems)}, status_code=422 if vendor != "pagerduty" else 400)
        if vendor == "statuspage" and method == "POST":  # created before the answer (which may time out)
            self.sp_incidents.append({"id": f"inc{len(self.sp_incidents) + 1}", **body["incident"]})
        behaviour = self.script.get(vendor, deque()).popleft() if self.script.get(vendor) else "ok"
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if behaviour.startswith("429"):
            ra = behaviour.split(":")[1] if ":" in behaviour else None
            return PlainTextResponse("rate limited", status_code=429, headers={"Retry-After": ra} if ra else None)
        if behaviour == "500":
            return PlainTextResponse("rollup_error", status_code=500)
        if behaviour == "410":
            return PlainTextResponse("gone", status_code=410)
        if behaviour == "timeout":
            await asyncio.sleep(3)
            return PlainTextResponse("too late", status_code=200)
        if behaviour == "garbage":
            return Response(b"\x00\xffnot json <html>", status_code=200, media_type="text/html")
        if vendor == "webhook":
            self.seen_webhook_ids.add(headers["webhook-id"])
        return self.ok(vendor, method, path, body)

    def get(self, vendor: str, request: Request, headers: dict[str, str], auth: Any) -> Response:
        """List calls: auth, pagination parameters (unpaginated lists are throttled), no body."""
        problems = []
        if auth is not None and not auth(headers):
            problems.append("missing or wrong auth header")
        if "per_page" not in request.query_params:
            problems.append("list without per_page (Statuspage limits unpaginated GETs to 1/min)")
        self.requests.append(Seen(vendor, "GET", request.url.path, headers, None))
        if problems:
            self.violations += [f"{vendor} GET {request.url.path}: {p}" for p in problems]
            return JSONResponse({"message": "; ".join(problems)}, status_code=401)
        return JSONResponse([i for i in self.sp_incidents if i.get("status") != "resolved"])

    def ok(self, vendor: str, method: str, path: str, body: Any) -> Response:
        self._ids += 1
        if vendor == "slack":
            return PlainTextResponse("ok")
        if vendor == "pagerduty":
            return JSONResponse(
                {"status": "success", "message": "Event processed", "dedup_key": body.get("dedup_key")}, 202
            )
        if vendor == "statuspage":
            if method == "POST":
                return JSONResponse({"id": self.sp_incidents[-1]["id"], "status": "investigating"}, 201)
            item_id = path.rsplit("/", 1)[1]
            if "component" in body:
                return JSONResponse({"id": item_id, "status": body["component"]["status"]})
            for inc in self.sp_incidents:
                if inc["id"] == item_id:
                    inc.update(body["incident"])
            return JSONResponse({"id": item_id, "status": body["incident"].get("status")})
        if vendor == "instatus":
            return JSONResponse({"id": f"ckinc{self._ids}", "status": body.get("status")})
        if vendor == "cachet":
            return JSONResponse({"data": {"id": self._ids}})
        return JSONResponse({"ok": True})

    async def start(self) -> FakeSaaS:
        self.contracts = _contracts(self.spec_dir)
        app = Starlette(routes=[Route("/{path:path}", self.handle, methods=["GET", "POST", "PUT", "PATCH"])])
        config = uvicorn.Config(
            app, host="127.0.0.1", port=0, log_level="warning", lifespan="off", timeout_graceful_shutdown=1
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            await asyncio.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task


async def garbage_server() -> tuple[asyncio.Server, int]:
    """A TCP listener that answers every request with bytes that are not HTTP at all."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\x00\x01garbage\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]
