"""The outbox worker: bounded concurrency per channel, provider rate limits, backoff, dead letters.

Bus handlers only *enqueue* (one durable row per event+channel) and return, so a burst of
incidents never blocks the consumer; this worker drains the outbox. Each channel has its own
semaphore (concurrency), token bucket (the provider's published rate limit) and pause (a 429's
``Retry-After`` holds the whole channel, not just the one message). Rows of ``ordered`` channels
(status pages: open before resolve) go one at a time, oldest first.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import orjson

from voxguard.notify.channels.base import SendResult
from voxguard.notify.clock import Clock
from voxguard.notify.config import RetryPolicy
from voxguard.notify.metrics import DELIVERIES, DELIVERY_SECONDS
from voxguard.notify.store import Outbox, Store
from voxguard.shared.messages import NotificationEvent

log = logging.getLogger("voxguard.notify.delivery")

Publish = Callable[[NotificationEvent], Awaitable[None]]


class RawSender(Protocol):
    """What the worker calls: a JSON payload from the outbox in, one attempt's result out."""

    name: str
    provider: str

    async def send_payload(
        self, payload: dict[str, Any], key: str, client: httpx.AsyncClient, timeout_s: float
    ) -> SendResult: ...


@dataclass
class ChannelLimits:
    rate_per_s: float = 1.0
    burst: int = 5
    concurrency: int = 4
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    ordered: bool = False


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; ``pause`` blocks until a moment."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, float(burst)
        self.tokens = float(burst)
        self.stamp = time.monotonic()
        self.paused_until = 0.0
        self._lock = asyncio.Lock()

    def pause(self, seconds: float) -> None:
        self.paused_until = max(self.paused_until, time.monotonic() + seconds)

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = time.monotonic()
                if now < self.paused_until:
                    await asyncio.sleep(self.paused_until - now)
                    continue
                self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
                self.stamp = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return
                await asyncio.sleep((1 - self.tokens) / self.rate)


def backoff(policy: RetryPolicy, attempt: int, rng: random.Random, retry_after: float | None = None) -> float:
    """Exponential from ``base_s``, capped, minus up to ``jitter`` of it; Retry-After wins when longer."""
    delay = min(policy.cap_s, policy.base_s * 2 ** max(0, attempt - 1))
    delay *= 1 - policy.jitter * rng.random()
    return max(delay, retry_after or 0.0)


def idempotency_key(source_event_id: str, channel: str) -> str:
    return f"{source_event_id}:{channel}"


class Dispatcher:
    def __init__(
        self,
        store: Store,
        senders: Mapping[str, RawSender],
        limits: Mapping[str, ChannelLimits],
        clock: Clock,
        *,
        publish: Publish | None = None,
        max_in_flight: int = 256,
        poll_s: float = 0.25,
        rng: random.Random | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.store = store
        self.senders = dict(senders)
        self.limits = dict(limits)
        self.clock = clock
        self.publish = publish
        self.max_in_flight = max_in_flight
        self.poll_s = poll_s
        self.rng = rng or random.Random()
        self._client = client  # injected: shared by every channel (tests)
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._sems = {n: asyncio.Semaphore(lim.concurrency) for n, lim in self.limits.items()}
        self._buckets = {n: TokenBucket(lim.rate_per_s, lim.burst) for n, lim in self.limits.items()}
        self._in_flight: dict[int, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._pending_outcomes: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._ready: dict[int, Outbox] = {}  # fresh rows, in insertion order
        self._force_poll = False
        self._flusher: asyncio.Task[None] | None = None

    def client_for(self, channel: str) -> httpx.AsyncClient:
        """One connection pool per channel, sized to its concurrency.

        httpcore scans every pooled connection (a syscall each) on every request, so one big
        shared pool made each request cost O(all connections); per-channel pools keep it O(8).
        No redirects: Standard Webhooks treats 3xx as failure, and a redirect could leak a body.
        """
        if self._client is not None:
            return self._client
        client = self._clients.get(channel)
        if client is None:
            size = self.limits.get(channel, ChannelLimits()).concurrency
            client = httpx.AsyncClient(
                follow_redirects=False, limits=httpx.Limits(max_connections=size, max_keepalive_connections=size)
            )
            self._clients[channel] = client
        return client

    # -- enqueueing ---------------------------------------------------------------------------

    async def enqueue(self, rows: list[dict[str, Any]]) -> list[int]:
        """Persist outbox rows (dupes by key are ignored); suppressed rows are final at once."""
        now = self.clock.now()
        for r in rows:
            r.setdefault("status", "pending")
            r.setdefault("attempts", 0)
            r.setdefault("next_attempt_at", now)
            r.setdefault("created_at", now)
            r.setdefault("updated_at", now)
        aligned = await self.store.run(self.store.enqueue_aligned, rows)
        for row, new_id in zip(rows, aligned, strict=True):
            # Fresh rows go straight to the in-memory ready queue: the database is polled only
            # for retries and leftovers (restart), not once per event.
            if new_id is None:
                continue
            fresh = row["status"] == "pending" and row["next_attempt_at"] <= now
            if fresh and not self.limits.get(row["channel"], ChannelLimits()).ordered:
                self._ready[new_id] = Outbox(id=new_id, **row)
        ids = [i for i in aligned if i is not None]
        if ids:
            self._wake.set()
        return ids

    # -- running ------------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._pump(), name="notify-dispatcher")

    async def stop(self) -> None:
        """Stop picking rows; in-flight attempts finish (bounded) so their outcome is recorded."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._in_flight:
            await asyncio.wait(list(self._in_flight.values()), timeout=10)
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()

    def kick(self) -> None:
        """Look at the database now (a dead letter was requeued, a retry may be due)."""
        self._force_poll = True
        self._wake.set()

    async def _pump(self) -> None:
        ordered = {n for n, lim in self.limits.items() if lim.ordered}
        last_poll = 0.0
        while True:
            try:
                self._start(self._take_ready())
                free = self.max_in_flight - len(self._in_flight)
                if free > 0 and (self._force_poll or time.monotonic() - last_poll >= self.poll_s):
                    self._force_poll = False
                    last_poll = time.monotonic()
                    busy = set(self._in_flight) | set(self._ready)
                    rows = await self.store.run(self.store.due, self.clock.now(), free, ordered, busy)
                    # Rows that entered the ready queue while we queried are already handled there.
                    self._start([r for r in rows if r.id not in self._in_flight and r.id not in self._ready])
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox poll failed; retrying")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_s):
                    await self._wake.wait()
            self._wake.clear()

    def _take_ready(self) -> list[Outbox]:
        rows: list[Outbox] = []
        while self._ready and len(self._in_flight) + len(rows) < self.max_in_flight:
            row_id = next(iter(self._ready))
            row = self._ready.pop(row_id)
            if row_id not in self._in_flight:
                rows.append(row)
        return rows

    def _start(self, rows: list[Outbox]) -> None:
        for row in rows:
            task = asyncio.create_task(self._deliver(row))
            self._in_flight[row.id] = task
            task.add_done_callback(self._done_cb(row.id))

    def _done_cb(self, row_id: int) -> Callable[[asyncio.Task[None]], None]:
        def done(_task: asyncio.Task[None]) -> None:
            self._in_flight.pop(row_id, None)
            self._wake.set()

        return done

    async def drain(self, timeout_s: float = 30.0) -> None:
        """Wait until nothing is pending or in flight (tests and the benchmark)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.kick()
            await asyncio.sleep(self.poll_s / 2)
            if not self._in_flight and not self._ready:
                counts = await self.store.run(self.store.counts)
                if not counts.get("pending") and not self._in_flight:
                    return
        raise TimeoutError("outbox did not drain")

    # -- one attempt ----------------------------------------------------------------------------

    async def _deliver(self, row: Outbox) -> None:
        sender = self.senders.get(row.channel)
        limits = self.limits.get(row.channel, ChannelLimits())
        attempt = row.attempts + 1
        if sender is None:
            result = SendResult(False, None, retryable=False, detail=f"channel {row.channel!r} is no longer configured")
        else:
            try:
                payload = orjson.loads(row.payload)
                async with self._sems.setdefault(row.channel, asyncio.Semaphore(limits.concurrency)):
                    await self._buckets.setdefault(row.channel, TokenBucket(limits.rate_per_s, limits.burst)).acquire()
                    result = await sender.send_payload(
                        payload, row.key, self.client_for(row.channel), limits.retry.timeout_s
                    )
            except Exception as exc:  # a sender bug must not kill the worker or lose the row
                log.exception("sender %s crashed", row.channel)
                result = SendResult(False, None, retryable=True, detail=f"internal error: {type(exc).__name__}")
        if result.retry_after:
            self._buckets[row.channel].pause(result.retry_after)
        await self._record(row, attempt, result, limits.retry)

    async def _record(self, row: Outbox, attempt: int, result: SendResult, policy: RetryPolicy) -> None:
        now = self.clock.now()
        next_at: dt.datetime | None = None
        if result.ok:
            status = attempt_status = "sent"
        elif result.retryable and attempt < policy.max_attempts:
            status, attempt_status = "pending", "retrying"
            next_at = now + dt.timedelta(seconds=backoff(policy, attempt, self.rng, result.retry_after))
        else:
            status = attempt_status = "dead_letter"
        detail = result.detail
        DELIVERIES.labels(row.provider, attempt_status).inc()
        DELIVERY_SECONDS.labels(row.provider).observe(result.latency_ms / 1000.0)
        if status == "dead_letter" and result.retryable:
            detail = f"gave up after {attempt} attempts: {detail}"
        try:
            await self._flush_soon(
                {
                    "outbox_id": row.id,
                    "attempt": attempt,
                    "status": status,
                    "attempt_status": attempt_status,
                    "code": result.code,
                    "latency_ms": round(result.latency_ms, 3),
                    "detail": detail,
                    "now": now,
                    "next_at": next_at,
                }
            )
        except Exception:  # the row stays pending in the database and is tried again
            log.exception("recording the outcome of delivery %s failed", row.id)
            return
        if status == "dead_letter":
            log.warning("delivery %s to %s dead-lettered: %s", row.id, row.channel, detail)
        await self._announce(row, attempt, attempt_status, result.code, result.latency_ms, detail)

    async def _flush_soon(self, outcome: dict[str, Any]) -> None:
        """Queue an outcome for the next batched commit and wait until it is durable."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending_outcomes.append((outcome, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        await fut

    async def _flush(self) -> None:
        while self._pending_outcomes:
            await asyncio.sleep(0.005)  # gather the outcomes finishing together
            batch, self._pending_outcomes = self._pending_outcomes, []
            try:
                await self.store.run(self.store.record_many, [o for o, _ in batch])
            except Exception as exc:
                for _, fut in batch:
                    fut.set_exception(exc)
            else:
                for _, fut in batch:
                    fut.set_result(None)

    async def _announce(
        self, row: Outbox, attempt: int, status: str, code: int | None, latency: float | None, detail: str | None
    ) -> None:
        if self.publish is None:
            return
        ev = NotificationEvent(
            id=hashlib.sha256(f"{row.key}:{attempt}:{status}".encode()).hexdigest()[:32],
            tier=row.tier,  # type: ignore[arg-type]
            source_event_id=row.source_event_id,
            incident_id=row.incident_id,
            channel=row.channel,
            provider=row.provider,
            status=status,  # type: ignore[arg-type]
            attempt=max(1, attempt),
            response_code=code,
            latency_ms=latency,
            detail=detail,
        )
        try:
            await self.publish(ev)
        except Exception as exc:  # the delivery log in the database is the record; the event is a courtesy
            log.warning("publishing notification event failed: %r", exc)

    async def announce_suppressed(self, row: dict[str, Any]) -> None:
        """Publish the ``suppressed`` outcome of a row that was never sent."""
        fake = Outbox(**{k: v for k, v in row.items() if k in Outbox.__table__.columns})
        await self._announce(fake, 1, "suppressed", None, None, row.get("last_detail"))
