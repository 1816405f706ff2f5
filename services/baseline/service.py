"""The baseline service: traffic ticks in, minute buckets and incidents stored, events out.

One durable consumer feeds every tick to the detection engine (``observe``), to the minute
rollup and to the live window; a loop calls ``advance(now)`` once per tick, stores the incident
events it returns (one commit), then publishes anomalies and events (JetStream dedups on the
message id, so a retry after a failed publish is safe) and pushes them to WebSocket clients.
Closed minutes are written with an additive upsert, the engine state is snapshotted every
``snapshot_interval_s`` and at stop, and loaded at start, so a restart keeps what was learned.

Ticks are acked once they are in the engine and the open minute (in memory); a crash loses at
most the open minute of the rollup and what the engine learned since its last snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol

from fastapi import FastAPI
from sqlalchemy import Engine

from voxguard.baseline import metrics
from voxguard.baseline.rollup import LiveWindow, MinuteRollup, target_meta
from voxguard.baseline.store import BaselineStore, minute_floor
from voxguard.shared.bus import STREAM_TRAFFIC, Delivery, Subscription
from voxguard.shared.config import VoxGuardConfig
from voxguard.shared.db import make_engine, readiness_check
from voxguard.shared.http import ServiceSpec
from voxguard.shared.messages import Anomaly, IncidentEvent, IncidentView, TrafficTick
from voxguard.shared.runtime import ServiceContext

log = logging.getLogger("voxguard.baseline")

DURABLE = "baseline"
SNAPSHOT_INTERVAL_S = 60.0
FLUSH_GRACE_S = 5.0  # a minute is written once this long has passed after its end
RETAIN_DAYS = 90  # as timescale.RETAIN_FOR: the longest baseline window a tier may configure
RETENTION_EVERY_S = 3600.0
WS_QUEUE = 256  # events buffered per WebSocket client before it is dropped as too slow


class EngineOutputLike(Protocol):
    anomalies: list[Anomaly]
    events: list[IncidentEvent]


class EngineLike(Protocol):
    """What the service needs of ``voxguard.baseline.engine.DetectionEngine``."""

    def observe(self, ticks: Sequence[TrafficTick]) -> None: ...
    def advance(self, now: dt.datetime) -> EngineOutputLike: ...
    def set_turn_sessions(self, relay: str, sessions: int) -> None: ...
    def targets(self) -> list[dict[str, Any]]: ...
    def baseline(self, target_id: str) -> dict[str, Any] | None: ...
    def expected(self, target_id: str, metric: str, at: Sequence[dt.datetime]) -> list[float]: ...
    def open_incidents(self) -> list[IncidentView]: ...
    def export_state(self) -> bytes: ...
    def import_state(self, data: bytes) -> None: ...


def default_engine(config: VoxGuardConfig) -> EngineLike:
    """The real detection engine for this config."""
    from voxguard.baseline.engine import DetectionEngine

    engine: EngineLike = DetectionEngine(config, tick_seconds=config.ingest.tick_seconds)
    return engine


class EventHub:
    """Fan-out of incident events to WebSocket clients; a client too slow to keep up is dropped."""

    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[IncidentEvent | None]] = set()

    def subscribe(self) -> asyncio.Queue[IncidentEvent | None]:
        q: asyncio.Queue[IncidentEvent | None] = asyncio.Queue(WS_QUEUE)
        self._queues.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[IncidentEvent | None]) -> None:
        self._queues.discard(q)

    def publish(self, event: IncidentEvent) -> None:
        for q in list(self._queues):
            try:
                q.put_nowait(event)
            except asyncio.QueueFull:
                self._queues.discard(q)
                with contextlib.suppress(asyncio.QueueFull):
                    q.get_nowait()
                    q.put_nowait(None)  # tells the client's task to close

    def close(self) -> None:
        for q in list(self._queues):
            with contextlib.suppress(asyncio.QueueFull):
                q.put_nowait(None)
        self._queues.clear()

    def __len__(self) -> int:
        return len(self._queues)


class BaselineService:
    """Consumer, detection loop, storage and the state the API reads. Inert until ``start``."""

    def __init__(
        self,
        ctx: ServiceContext,
        *,
        engine: EngineLike | None = None,
        db: Engine | None = None,
        snapshot_interval_s: float = SNAPSHOT_INTERVAL_S,
        clock: Callable[[], dt.datetime] | None = None,
        durable: str = DURABLE,
    ) -> None:
        self.ctx = ctx
        self.tick_seconds = float(ctx.config.ingest.tick_seconds)
        self._engine = engine
        self.db = db or make_engine(ctx.settings.effective_database_url(), application_name="voxguard-baseline")
        self.store = BaselineStore(self.db)
        self.rollup = MinuteRollup()
        self.live = LiveWindow()
        self.hub = EventHub()
        self.lock = asyncio.Lock()  # the engine is used from the loop and from worker threads
        self.snapshot_interval_s = snapshot_interval_s
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.durable = durable
        self._sub: Subscription[TrafficTick] | None = None
        self._task: asyncio.Task[None] | None = None
        self._known_targets: set[str] = set()
        self._new_targets: dict[str, dict[str, Any]] = {}
        self._unpublished: list[tuple[str, Anomaly | IncidentEvent]] = []
        self._last_snapshot = 0.0
        self._last_retention = 0.0
        self._tier_observed: dict[tuple[str, str], float] = {}  # (tier, component target) -> last pps
        self._tier_metrics_at = 0.0
        self.started = False
        self.stats = {"ticks": 0, "steps": 0, "minutes_written": 0, "events": 0, "anomalies": 0, "errors": 0}

    @property
    def engine(self) -> EngineLike:
        if self._engine is None:
            self._engine = default_engine(self.ctx.config)
        return self._engine

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Migrate, load the engine state, start the consumer and the detection loop."""
        await asyncio.to_thread(self.store.migrate)
        saved = await asyncio.to_thread(self.store.load_state)
        if saved is not None:
            try:
                self.engine.import_state(saved[0])
                log.info("engine state loaded (saved %s, %d bytes)", saved[1].isoformat(), len(saved[0]))
            except Exception:
                log.exception("engine state could not be loaded; starting from scratch")
        self._known_targets = {t.id for t in await asyncio.to_thread(self.store.targets)}
        self._last_snapshot = asyncio.get_running_loop().time()
        self._sub = await self.ctx.bus.subscribe_durable(
            STREAM_TRAFFIC, self.durable, "voxguard.traffic.v1.>", TrafficTick, self._on_tick
        )
        self._task = asyncio.create_task(self._run(), name="baseline-detect")
        self.started = True

    async def stop(self) -> None:
        """Stop consuming, run a last step, write every open minute and the engine state."""
        if self._sub is not None:
            await self._sub.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.started:
            for name, work in (("step", self.step(self.clock())), ("flush", self.flush(everything=True)),
                               ("snapshot", self.snapshot())):  # fmt: skip
                try:
                    await work
                except Exception:
                    log.exception("baseline %s at stop failed", name)
        self.hub.close()
        self.started = False

    @contextlib.asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.stop()
            self.db.dispose()

    async def consumer_ready(self) -> bool:
        return self._sub is not None and self._sub.running and self._task is not None and not self._task.done()

    # -- work -----------------------------------------------------------------------------

    async def _on_tick(self, tick: TrafficTick, delivery: Delivery) -> None:
        async with self.lock:
            self.engine.observe([tick])
        self.rollup.add(tick)
        self.live.add(tick)
        metrics.TICKS.labels(tick.tier.value).inc()
        if tick.host is None:  # component targets: the per-tier traffic the NOC charts
            key = (tick.tier.value, tick.target_id)
            self._tier_observed[key] = tick.packets / tick.tick_seconds
        if tick.target_id not in self._known_targets:
            self._new_targets[tick.target_id] = target_meta(tick)
        self.stats["ticks"] += 1

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            next_at += self.tick_seconds
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            if loop.time() - next_at > 5 * self.tick_seconds:
                next_at = loop.time()  # fell far behind (a long step): don't burst to catch up
            try:
                await self.step(self.clock())
                await self.flush()
                if loop.time() - self._last_snapshot >= self.snapshot_interval_s:
                    await self.snapshot()
                if loop.time() - self._last_retention >= RETENTION_EVERY_S:
                    await self.retention()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.stats["errors"] += 1
                log.exception("baseline step failed")

    async def step(self, now: dt.datetime) -> None:
        """One detection step: advance, commit incident events, then publish and fan out."""
        async with self.lock:
            out = await asyncio.to_thread(self.engine.advance, now)
        self.stats["steps"] += 1
        if out.events:
            await asyncio.to_thread(self.store.record_events, out.events)
            self.stats["events"] += len(out.events)
            for ev in out.events:
                self.hub.publish(ev)
        self.stats["anomalies"] += len(out.anomalies)
        await self._update_metrics(out, now)
        self._unpublished.extend((a.subject(), a) for a in out.anomalies)
        self._unpublished.extend((e.subject(), e) for e in out.events)
        await self._publish_pending()

    async def _update_metrics(self, out: Any, now: dt.datetime) -> None:
        """Counters for what was detected, gauges for what is open and for traffic vs baseline."""
        for a in out.anomalies:
            metrics.ANOMALIES.labels(a.tier.value, a.vector).inc()
        for e in out.events:
            metrics.INCIDENT_EVENTS.labels(e.tier.value, e.event).inc()
        open_incidents = getattr(self.engine, "open_incidents", None)
        if open_incidents is None:
            return
        async with self.lock:
            open_now = open_incidents()
        counts: dict[tuple[str, str], int] = {}
        for inc in open_now:
            counts[(inc.tier.value, inc.severity)] = counts.get((inc.tier.value, inc.severity), 0) + 1
        metrics.INCIDENTS_OPEN.clear()
        for (tier, severity), n in counts.items():
            metrics.INCIDENTS_OPEN.labels(tier, severity).set(n)
        if self._tier_observed and now.timestamp() - self._tier_metrics_at >= 10:
            self._tier_metrics_at = now.timestamp()
            observed: dict[str, float] = {}
            expected: dict[str, float] = {}
            for (tier, target_id), pps in self._tier_observed.items():
                observed[tier] = observed.get(tier, 0.0) + pps
                async with self.lock:
                    try:
                        value = self.engine.expected(target_id, "packets", [now])[0]
                    except (AttributeError, KeyError, ValueError, IndexError):
                        value = None
                if value is not None and value == value:  # not NaN
                    expected[tier] = expected.get(tier, 0.0) + float(value)
            for tier, v in observed.items():
                metrics.OBSERVED.labels(tier, "packets").set(v)
            for tier, v in expected.items():
                metrics.EXPECTED.labels(tier, "packets").set(v)

    async def _publish_pending(self) -> None:
        if not self._unpublished:
            return
        batch, self._unpublished = self._unpublished, []
        try:
            await self.ctx.bus.publish_many(batch)
        except Exception as exc:
            # Keep them for the next step; JetStream drops the ones that did get through (msg id).
            log.warning("publishing %d events failed, will retry: %r", len(batch), exc)
            self._unpublished = (batch + self._unpublished)[-10_000:]

    async def flush(self, *, everything: bool = False) -> int:
        """Write closed minutes (all open ones when ``everything``) and newly seen targets."""
        now = self.clock()
        before = None if everything else minute_floor(now - dt.timedelta(seconds=FLUSH_GRACE_S))
        rows = self.rollup.pop_closed(before)
        targets = list(self._new_targets.values())
        self._new_targets = {}
        try:
            if targets:
                await asyncio.to_thread(self.store.upsert_targets, targets, now)
                self._known_targets.update(t["id"] for t in targets)
            if rows:
                await asyncio.to_thread(self.store.add_minutes, rows)
        except Exception:
            self.rollup.restore(rows)
            for t in targets:
                self._new_targets.setdefault(t["id"], t)
            raise
        self.stats["minutes_written"] += len(rows)
        return len(rows)

    async def retention(self) -> int:
        """Drop minutes past the retention period where no TimescaleDB policy does it."""
        self._last_retention = asyncio.get_running_loop().time()
        if self.store.timescale:
            return 0
        cutoff = self.clock() - dt.timedelta(days=RETAIN_DAYS)
        return await asyncio.to_thread(self.store.delete_minutes_before, cutoff)

    async def snapshot(self) -> None:
        """Save the engine's learned state."""
        async with self.lock:
            data = await asyncio.to_thread(self.engine.export_state)
        await asyncio.to_thread(self.store.save_state, data, self.clock())
        self._last_snapshot = asyncio.get_running_loop().time()

    def spec(self) -> ServiceSpec:
        from .api import build_router
        from .review_api import build_review_router

        return ServiceSpec(
            name="baseline",
            routers=[build_router(self), build_review_router(self.store, self.ctx.config)],
            readiness={"db": readiness_check(self.db), "consumer": self.consumer_ready},
            lifespans=[self.lifespan],
            description="Time series, seasonal baselines, detectors and incidents.",
        )


def build(ctx: ServiceContext) -> ServiceSpec:
    """The baseline service's routes, readiness and lifespan."""
    return BaselineService(ctx).spec()
