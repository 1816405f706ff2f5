"""What every sender returns, and the one HTTP call path they share.

Classifying an answer (success, retry later, give up) is per provider; the transport errors
(timeouts, refused connections, a receiver speaking garbage) are the same for all and always
worth a retry.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from voxguard.notify.events import Alert

MAX_DETAIL = 300


@dataclass
class SendResult:
    """The outcome of one attempt."""

    ok: bool
    code: int | None = None
    retryable: bool = False
    detail: str = ""
    retry_after: float | None = None
    latency_ms: float = 0.0
    external_id: str | None = None  # e.g. a status-page incident id


class ChannelSender(Protocol):
    name: str
    provider: str

    async def send(self, alert: Alert, key: str, client: httpx.AsyncClient, timeout_s: float) -> SendResult:
        """Deliver ``alert`` once; ``key`` is the idempotency key of the (event, channel) pair."""
        ...


def retry_after(resp: httpx.Response) -> float | None:
    """``Retry-After`` in seconds when present and numeric (HTTP dates are rare on these APIs)."""
    value = resp.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def default_classify(resp: httpx.Response) -> SendResult:
    """2xx ok; 429/420/5xx retry; other codes are our bug or a dead endpoint: give up."""
    code = resp.status_code
    if 200 <= code < 300:
        return SendResult(True, code)
    retry = code in (420, 429) or code >= 500
    return SendResult(False, code, retryable=retry, detail=_snippet(resp), retry_after=retry_after(resp))


def _snippet(resp: httpx.Response) -> str:
    text = resp.text.strip().replace("\n", " ")
    return f"HTTP {resp.status_code}: {text[:MAX_DETAIL]}" if text else f"HTTP {resp.status_code}"


async def http_send(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    body: bytes,
    headers: dict[str, str],
    timeout_s: float,
    classify: Callable[[httpx.Response], SendResult] = default_classify,
) -> SendResult:
    """One request, never raising: transport failures come back as retryable results."""
    started = time.perf_counter()
    try:
        resp = await client.request(method, url, content=body, headers=headers, timeout=timeout_s)
        result = classify(resp)
    except httpx.TimeoutException:
        result = SendResult(False, None, retryable=True, detail=f"timeout after {timeout_s:g} s")
    except httpx.RemoteProtocolError as exc:
        result = SendResult(False, None, retryable=True, detail=f"receiver broke the HTTP protocol: {exc}"[:MAX_DETAIL])
    except httpx.TransportError as exc:
        result = SendResult(False, None, retryable=True, detail=f"{type(exc).__name__}: {exc}"[:MAX_DETAIL])
    if url in result.detail:  # a Slack webhook URL is a credential: never let it reach a log
        result.detail = result.detail.replace(url, redact_url(url))
    result.latency_ms = (time.perf_counter() - started) * 1000
    return result


def redact_url(url: str) -> str:
    """``scheme://host[:port]/...``: enough to debug, nothing that authenticates."""
    parts = httpx.URL(url)
    return f"{parts.scheme}://{parts.host}" + (f":{parts.port}" if parts.port else "") + "/..."


def json_or_none(resp: httpx.Response) -> Any:
    """The decoded body, or None when the receiver sent something that is not JSON."""
    try:
        return resp.json()
    except ValueError:
        return None
