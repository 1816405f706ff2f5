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
from voxguard.shared.messages import MAX_BATCH_BYTES, batch_subject, ticks_to_batch
from voxguard.shared.partition import partition_of, traffic_subject
from voxguard.shared.runtime import ServiceContext

log = logging.getLogger("voxguard.ingest")

# closed ticks waiting for NATS (each item is one tick's burst); past this, the oldest go
MAX_PENDING_TICKS = 600
BATCH_MARGIN = 0.85  # of the max payload: room for headers and for a record longer than the estimate
FIRST_BATCH = 500  # records in the first batch of a burst, before the bytes per record are known


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
        self.published = 0  # ticks
        self.messages_published = 0  # component ticks + batches of per-host ticks
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

    def _max_batch_bytes(self) -> int:
        """The server's max payload (and the stream's max message size), less a margin."""
        limit = MAX_BATCH_BYTES
        with contextlib.suppress(Exception):
            limit = min(limit, int(self.ctx.bus.nc.max_payload))
        return int(limit * BATCH_MARGIN)

    async def _publish_loop(self) -> None:
        bus = self.ctx.bus
        while True:
            ticks = await self._queue.get()
            items = encode_traffic(ticks, self.shards, self._max_batch_bytes())
            for attempt in range(5):
                try:
                    self.messages_published += await bus.publish_raw_many(items)
                    self.published += len(ticks)
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
            "messages_published": self.messages_published,
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
    """(subject, JSON bytes, message id) per tick, one message each (the collector uses it for
    component ticks, see ``encode_traffic``). With ``shards`` > 1 per-host ticks go to their
    baseline partition's subject."""
    return [
        (traffic_subject(t["tier"], t["target_id"], host=t.get("host"), shards=shards), orjson.dumps(t), t["id"])
        for t in ticks
    ]


def encode_traffic(
    ticks: list[dict[str, Any]], shards: int = 1, max_bytes: int = int(MAX_BATCH_BYTES * BATCH_MARGIN)
) -> list[tuple[str, bytes, str]]:
    """What the collector publishes for one tick: component ticks one message each on
    ``voxguard.traffic.v1.<tier>`` (as ``encode_ticks``), per-host ticks as ``TrafficBatch``
    messages of one tier (and partition, when ``shards`` > 1) on ``messages.batch_subject``,
    each encoded under ``max_bytes``."""
    single = [t for t in ticks if t.get("host") is None]
    groups: dict[tuple[str, int | None, str], list[dict[str, Any]]] = {}
    for t in ticks:
        if t.get("host") is not None:
            part = partition_of(t["target_id"], shards) if shards > 1 else None
            groups.setdefault((t["tier"], part, t["tick_start"]), []).append(t)
    items = encode_ticks(single, shards)
    for (tier, part, _), group in groups.items():
        subj = batch_subject(tier, part)
        items.extend((subj, data, mid) for data, mid in _split_batches(group, part, max_bytes))
    return items


def _split_batches(group: list[dict[str, Any]], part: int | None, max_bytes: int) -> list[tuple[bytes, str]]:
    """Encoded batches of ``group``, each under ``max_bytes``: sized from the bytes per record seen
    so far, halved when one still comes out too big."""
    out: list[tuple[bytes, str]] = []
    size = FIRST_BATCH
    i = 0
    while i < len(group):
        chunk = group[i : i + size]
        doc = ticks_to_batch(chunk, partition=part)
        data = orjson.dumps(doc)
        if len(data) > max_bytes:
            if len(chunk) == 1:
                log.warning("a per-host tick of %d bytes exceeds the max payload; dropped", len(data))
                i += 1
                continue
            size = max(1, len(chunk) // 2)
            continue
        out.append((data, doc["id"]))
        i += len(chunk)
        size = max(1, int(max_bytes * 0.9 / (len(data) / len(chunk))))
    return out


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
