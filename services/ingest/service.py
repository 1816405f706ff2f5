"""The ingest service: the collector thread plus the async publisher of its traffic ticks.

Each closed tick is published as one burst; every message of it carries the tick manifest
(``tickmanifest``), so a consumer knows when it holds this collector's whole tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import FastAPI

from voxguard.ingest.api import build_router
from voxguard.ingest.closedtick import ClosedTick
from voxguard.ingest.collector import Collector
from voxguard.ingest.pipeline import Pipeline
from voxguard.shared.batches import MAX_BATCH_BYTES, batch_subject, encode_batches, ticks_to_columns
from voxguard.shared.bus import PublishError
from voxguard.shared.http import ServiceSpec
from voxguard.shared.partition import partition_of, traffic_subject
from voxguard.shared.runtime import ServiceContext
from voxguard.shared.tickmanifest import manifest_headers

log = logging.getLogger("voxguard.ingest")

# closed ticks waiting for NATS (each item is one tick's burst); past this, the oldest go
MAX_PENDING_TICKS = 600
BATCH_MARGIN = 0.85  # of the max payload: room for headers and for a record longer than the estimate


def producer_id() -> str:
    """This collector's id in tick manifests: host, process and a random part, so a restarted
    or second collector on the same host is another producer."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class IngestService:
    """Collector + publisher. Inert until ``start``; ``stop`` flushes the last tick."""

    def __init__(self, ctx: ServiceContext, *, host: str | None = None):
        self.ctx = ctx
        self.pipeline = Pipeline(ctx.config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[ClosedTick] = asyncio.Queue()
        self.collector = Collector(ctx.config, self._sink, pipeline=self.pipeline, host=host)
        self._publisher: asyncio.Task[None] | None = None
        self.dropped_ticks = 0
        self.published = 0  # ticks
        self.messages_published = 0  # component ticks + batches of per-host ticks
        self.shards = ctx.settings.baseline_shards
        self.producer = producer_id()

    def _sink(self, ticks: ClosedTick) -> None:
        """Called in the collector thread: hand the tick to the event loop."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(self._enqueue, ticks)

    def _enqueue(self, ticks: ClosedTick) -> None:
        while self._queue.qsize() >= MAX_PENDING_TICKS:
            dropped = self._queue.get_nowait()
            self._queue.task_done()
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
        while True:
            ticks = await self._queue.get()
            try:
                await self._publish(ticks)
            except Exception:  # a bug must cost one tick, never the publisher
                self.pipeline.metrics.publish_failures.inc(len(ticks))
                log.exception("encoding a tick of %d records failed", len(ticks))
            finally:
                self._queue.task_done()

    async def _publish(self, ticks: ClosedTick) -> None:
        """One tick's burst, every message with the tick's manifest; retried as a whole (the
        message ids let JetStream drop what an earlier attempt delivered)."""
        bus = self.ctx.bus
        items = encode_traffic(ticks, self.shards, self._max_batch_bytes())
        headers = manifest_headers(self.producer, ticks.tick_start, [subject for subject, _, _ in items])
        for attempt in range(5):
            try:
                self.messages_published += await bus.publish_raw_many(items, headers=headers)
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
                await self._queue.join()  # published, not only taken from the queue
        if self._publisher is not None:
            self._publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._publisher

    def status(self) -> dict[str, Any]:
        """Listener and publisher state for the stats endpoint."""
        return {
            "running": self.collector.running,
            "producer": self.producer,
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
    ticks: ClosedTick | list[dict[str, Any]], shards: int = 1, max_bytes: int = int(MAX_BATCH_BYTES * BATCH_MARGIN)
) -> list[tuple[str, bytes, str]]:
    """What the collector publishes for one tick: component ticks one message each on
    ``voxguard.traffic.v1.<tier>`` (as ``encode_ticks``), per-host ticks as ``TrafficBatch``
    messages of one tier (and partition, when ``shards`` > 1) on ``batches.batch_subject``,
    each encoded under ``max_bytes``.

    A ``ClosedTick``'s per-host columns become packed batches; so do ``TrafficTick``-shaped
    dicts (tests and tools that render ticks one by one)."""
    if isinstance(ticks, list):
        return _encode_dicts(ticks, shards, max_bytes)
    items = encode_ticks(ticks.components, shards)
    head = ticks.head
    for tier, part, cols, n in ticks.hosts.groups(shards):
        subject = batch_subject(tier, part)
        batches = encode_batches(
            tier, head.tick_start_iso, head.tick_seconds, cols, n, partition=part, max_bytes=max_bytes
        )
        items.extend((subject, data, mid) for data, mid in batches)
    return items


def _encode_dicts(ticks: list[dict[str, Any]], shards: int, max_bytes: int) -> list[tuple[str, bytes, str]]:
    """``encode_traffic`` of ``TrafficTick``-shaped dicts (one tick): the same messages."""
    single = [t for t in ticks if t.get("host") is None]
    groups: dict[tuple[str, int | None], list[dict[str, Any]]] = {}
    for t in ticks:
        if t.get("host") is not None:
            part = partition_of(t["target_id"], shards) if shards > 1 else None
            groups.setdefault((t["tier"], part), []).append(t)
    items = encode_ticks(single, shards)
    for (tier, part), group in groups.items():
        batches = encode_batches(tier, group[0]["tick_start"], group[0]["tick_seconds"], ticks_to_columns(group),
                                 len(group), partition=part, max_bytes=max_bytes)  # fmt: skip
        items.extend((batch_subject(tier, part), data, mid) for data, mid in batches)
    return items


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
