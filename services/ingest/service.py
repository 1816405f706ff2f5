"""The ingest service: the collector thread plus the async publisher of its traffic ticks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import FastAPI

from voxguard.ingest.api import build_router
from voxguard.ingest.collector import Collector
from voxguard.ingest.pipeline import Pipeline
from voxguard.shared.bus import PublishError
from voxguard.shared.http import ServiceSpec
from voxguard.shared.partition import traffic_subject
from voxguard.shared.runtime import ServiceContext

log = logging.getLogger("voxguard.ingest")

# closed ticks waiting for NATS (each item is one tick's burst); past this, the oldest go
MAX_PENDING_TICKS = 600


class IngestService:
    """Collector + publisher. Inert until ``start``; ``stop`` flushes the last tick."""

    def __init__(self, ctx: ServiceContext, *, host: str | None = None):
        self.ctx = ctx
        self.pipeline = Pipeline(ctx.config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue()
        self.collector = Collector(ctx.config, self._sink, pipeline=self.pipeline, host=host)
        self._publisher: asyncio.Task[None] | None = None
        self.dropped_ticks = 0
        self.published = 0
        self.shards = ctx.settings.baseline_shards

    def _sink(self, ticks: list[dict[str, Any]]) -> None:
        """Called in the collector thread: hand the tick to the event loop."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(self._enqueue, ticks)

    def _enqueue(self, ticks: list[dict[str, Any]]) -> None:
        while self._queue.qsize() >= MAX_PENDING_TICKS:
            dropped = self._queue.get_nowait()
            self.dropped_ticks += len(dropped)
            self.pipeline.metrics.publish_failures.inc(len(dropped))
        self._queue.put_nowait(ticks)

    async def _publish_loop(self) -> None:
        bus = self.ctx.bus
        while True:
            ticks = await self._queue.get()
            items = encode_ticks(ticks, self.shards)
            for attempt in range(5):
                try:
                    self.published += await bus.publish_raw_many(items)
                    break
                except PublishError as exc:
                    log.warning("publishing %d ticks: %s (attempt %d)", len(items), exc, attempt + 1)
                    await asyncio.sleep(min(2**attempt * 0.2, 5))
                except Exception:
                    log.exception("publishing ticks failed (attempt %d)", attempt + 1)
                    await asyncio.sleep(min(2**attempt * 0.2, 5))
            else:
                self.pipeline.metrics.publish_failures.inc(len(items))

    async def start(self) -> None:
        """Bind the UDP listeners and start the publisher."""
        self._loop = asyncio.get_running_loop()
        self._publisher = asyncio.create_task(self._publish_loop(), name="ingest-publisher")
        await asyncio.to_thread(self.collector.start)

    async def stop(self) -> None:
        """Stop receiving, publish what is left (bounded wait), stop the publisher."""
        await asyncio.to_thread(self.collector.stop)
        await asyncio.sleep(0)  # let the final tick's hand-off run
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                while not self._queue.empty():
                    await asyncio.sleep(0.05)
        if self._publisher is not None:
            self._publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._publisher

    def status(self) -> dict[str, Any]:
        """Listener and publisher state for the stats endpoint."""
        return {
            "running": self.collector.running,
            "listeners": self.collector.ports(),
            "kernel_drops": self.collector.kernel_drops(),
            "failed_batches": self.collector.failed_batches,
            "ticks_published": self.published,
            "ticks_dropped": self.dropped_ticks,
            "ticks_pending": self._queue.qsize(),
        }

    async def ready(self) -> bool:
        """Ready when the collector thread runs and NATS is reachable."""
        return self.collector.running and await self.ctx.bus.ready()

    @contextlib.asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        """Start with the app, stop with it."""
        await self.start()
        try:
            yield
        finally:
            await self.stop()


def encode_ticks(ticks: list[dict[str, Any]], shards: int = 1) -> list[tuple[str, bytes, str]]:
    """(subject, JSON bytes, message id) per tick: orjson, because a tick can hold 100k targets.
    With ``shards`` > 1 per-host ticks go to their baseline partition's subject."""
    return [
        (traffic_subject(t["tier"], t["target_id"], host=t.get("host"), shards=shards), orjson.dumps(t), t["id"])
        for t in ticks
    ]


def build(ctx: ServiceContext, *, host: str | None = None) -> tuple[ServiceSpec, IngestService]:
    """The ingest service's routes, readiness and lifespan."""
    svc = IngestService(ctx, host=host)
    spec = ServiceSpec(
        name="ingest",
        routers=[build_router(lambda: svc.pipeline, svc.status)],
        readiness={"collector": svc.ready},
        lifespans=[svc.lifespan],
        description="Flow collector: NetFlow v5/v9, IPFIX and sFlow v5 in, per-target traffic ticks out.",
    )
    return spec, svc
