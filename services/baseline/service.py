"""The baseline service: traffic ticks in, minute buckets and incidents stored, events out.

One durable consumer feeds every tick to the detection engine (``observe``), to the minute
rollup and to the live window; a loop calls ``advance(now)`` once per tick, stores the incident
events it returns (one commit), then publishes anomalies and events (JetStream dedups on the
message id, so a retry after a failed publish is safe) and pushes them to WebSocket clients.
Closed minutes are written with an additive upsert, the engine state is snapshotted every
``snapshot_interval_s`` and at stop, and loaded at start, so a restart keeps what was learned.

Ticks are acked once they are in the engine and the open minute (in memory); a crash loses at
most the open minute of the rollup and what the engine learned since its last snapshot.

Per-host ticks arrive in batches (``TrafficBatch`` on ``voxguard.traffic.v1.<tier>.h``, or the
partition subject when sharded) and are taken in bulk (``_on_batch``, see ``intake``): decoded
once, one engine lock, ``observe_columns`` for known targets, the rollup and live window updated
with matrices, one ack. Single ``TrafficTick`` messages (component targets) go through
``_on_tick``; one consumer takes both. A batch that cannot be decoded is terminated and counted
(``bad_batches``), a bad record inside one is dropped and counted (``bad_records``).

Sharded (``VOXGUARD_BASELINE_SHARDS`` = P > 1, see ``voxguard.shared.partition``): several
workers split the per-host targets. Each reads every component tick (an ordered consumer on
``voxguard.traffic.v1.*``: the detectors' cross-tier context), holds partition leases
(``shards.ShardLeases``) and, per partition it holds, a durable consumer ``baseline-p<k>of<P>``
on ``voxguard.traffic.v1.*.<k>``. The engine decides (anomalies, incidents) only for targets of
held partitions. A partition's learned rows and open incidents are saved in the shared database
(``baseline_shard_state``): the rows every snapshot interval and on hand-over, the incidents in
the same commit as every incident event. A worker taking a partition loads both before it
decides anything for it, continues open incidents under their ids, and republishes the
partition's recent events (JetStream drops those already stored), so a worker killed between
commit and publish loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np
import orjson
from fastapi import FastAPI
from nats.aio.msg import Msg
from nats.js import api as js_api
from pydantic import ValidationError
from sqlalchemy import Engine

from voxguard.baseline import intake, metrics
from voxguard.baseline.completeness import TickCompleteness
from voxguard.baseline.rollup import LiveWindow, MinuteRollup, target_meta
from voxguard.baseline.shards import ShardLeases, new_worker_id
from voxguard.baseline.store import BaselineStore, minute_floor
from voxguard.shared.batches import MAX_BATCH_BYTES, BatchError, TrafficColumns, decode_batch
from voxguard.shared.bus import MSG_ID_HEADER, STREAM_TRAFFIC, Delivery, Subscription
from voxguard.shared.config import VoxGuardConfig
from voxguard.shared.db import make_engine, readiness_check
from voxguard.shared.http import ServiceSpec
from voxguard.shared.messages import Anomaly, IncidentEvent, IncidentView, TrafficTick
from voxguard.shared.partition import context_filter, partition_filter, partition_of
from voxguard.shared.runtime import ServiceContext

if TYPE_CHECKING:
    from voxguard.baseline.engine import DetectionEngine

log = logging.getLogger("voxguard.baseline")

DURABLE = "baseline"
SNAPSHOT_INTERVAL_S = 60.0
FLUSH_GRACE_S = 5.0  # a minute is written once this long has passed after its end
RETAIN_DAYS = 90  # as timescale.RETAIN_FOR: the longest baseline window a tier may configure
RETENTION_EVERY_S = 3600.0
WS_QUEUE = 256  # events buffered per WebSocket client before it is dropped as too slow
REPUBLISH_S = 100.0  # on taking a partition, its events of this long ago are published again
PARTITION_ACK_WAIT_S = 10.0  # a dead owner's in-flight ticks come back to the next owner this soon
STEP_LAG_S = 0.02  # a step runs this long after a tick time becomes processable
FETCH_BATCH = 32  # messages per pull: batches are up to 1 MiB each, and the client buffers a pull

Traffic = TrafficTick | TrafficColumns


class EngineOutputLike(Protocol):
    anomalies: list[Anomaly]
    events: list[IncidentEvent]


class EngineLike(Protocol):
    """What the service needs of ``voxguard.baseline.engine.DetectionEngine``."""

    def observe(self, ticks: Sequence[TrafficTick]) -> None: ...
    def advance(self, now: dt.datetime, ready_through: float | None = None) -> EngineOutputLike: ...
    def pending_ticks(self) -> list[float]: ...
    def set_turn_sessions(self, relay: str, sessions: int) -> None: ...
    def targets(self) -> list[dict[str, Any]]: ...
    def baseline(self, target_id: str) -> dict[str, Any] | None: ...
    def expected(self, target_id: str, metric: str, at: Sequence[dt.datetime]) -> list[float]: ...
    def open_incidents(self) -> list[IncidentView]: ...
    def export_state(self) -> bytes: ...
    def import_state(self, data: bytes) -> None: ...


def default_engine(config: VoxGuardConfig, grace_ticks: float = 2.0) -> EngineLike:
    """The real detection engine for this config."""
    from voxguard.baseline.engine import DetectionEngine

    engine: EngineLike = DetectionEngine(config, tick_seconds=config.ingest.tick_seconds, grace_ticks=grace_ticks)
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
        shards: int | None = None,
        worker_id: str | None = None,
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
        self.shards = int(shards if shards is not None else ctx.settings.baseline_shards)
        self.worker_id = worker_id or new_worker_id()
        self.leases: ShardLeases | None = None
        self.parts: set[int] = set()  # partitions whose state is loaded and that we decide for
        self._part_subs: dict[int, Subscription[TrafficTick]] = {}
        self._ctx_sub: Any = None
        self._commit = asyncio.Lock()  # engine decisions and shard saves reach the DB in order
        self.started = False
        self.stats = {"ticks": 0, "steps": 0, "early_steps": 0, "minutes_written": 0, "events": 0, "anomalies": 0,
                      "errors": 0, "batches": 0, "bad_batches": 0, "bad_records": 0}  # fmt: skip
        # ticks every producer has delivered in full are decided at once, not after the grace
        self.completeness = TickCompleteness(self.tick_seconds, reads=self._reads_subject)
        self._wake = asyncio.Event()
        self._flush_task: asyncio.Task[None] | None = None
        # one writer at a time: the background flush and the step's event commit (SQLite locks)
        self._db_write = asyncio.Lock()

    @property
    def engine(self) -> EngineLike:
        if self._engine is None:
            self._engine = default_engine(self.ctx.config, self.ctx.settings.baseline_grace_ticks)
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
        if self.sharded:
            await self._start_sharded()
        else:
            self._sub = await self.ctx.bus.subscribe_durable(
                STREAM_TRAFFIC, self.durable, "voxguard.traffic.v1.>", TrafficTick, self._on_traffic,
                decoder=self._decoder, batch=FETCH_BATCH,
            )  # fmt: skip
        self._task = asyncio.create_task(self._run(), name="baseline-detect")
        self.started = True

    async def stop(self) -> None:
        """Stop consuming, run a last step, write every open minute and the engine state (sharded:
        hand every partition back with its state first)."""
        if self._ctx_sub is not None:
            with contextlib.suppress(Exception):
                await self._ctx_sub.unsubscribe()
        if self.leases is not None:
            try:
                await self.leases.stop()
            except Exception:
                log.exception("handing partitions back at stop failed")
        if self._sub is not None:
            await self._sub.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._flush_task is not None:
            with contextlib.suppress(Exception):
                await self._flush_task
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
        loop_ok = self._task is not None and not self._task.done()
        if self.sharded:
            return loop_ok and self._ctx_sub is not None and self.leases is not None and self.leases.running
        return self._sub is not None and self._sub.running and loop_ok

    # -- work -----------------------------------------------------------------------------

    def decode_traffic(self, data: bytes) -> Traffic:
        """A traffic message: a ``TrafficBatch`` (it has ``columns``) or a single ``TrafficTick``.
        Raises ValueError (the bus terminates the message) when it is neither."""
        try:
            doc = orjson.loads(data)
            if isinstance(doc, dict) and "columns" in doc:
                if len(data) > MAX_BATCH_BYTES:
                    raise BatchError(f"traffic batch of {len(data)} bytes exceeds {MAX_BATCH_BYTES}")
                return decode_batch(doc)
        except ValueError:
            self.stats["bad_batches"] += 1
            raise
        return TrafficTick.model_validate_json(data)

    @property
    def _decoder(self) -> Callable[[bytes], TrafficTick]:
        """``decode_traffic`` as the bus types it (its consumers are declared with TrafficTick)."""
        return cast("Callable[[bytes], TrafficTick]", self.decode_traffic)

    async def _on_traffic(self, msg: Traffic, delivery: Delivery | None) -> None:
        if isinstance(msg, TrafficColumns):
            await self._on_batch(msg, delivery)
        else:
            await self._on_tick(msg, delivery)
        if delivery is not None:
            self._delivered(delivery.subject, delivery.headers, delivery.msg_id, msg.tick_start)

    def _delivered(self, subject: str, headers: Mapping[str, str] | None, msg_id: str | None,
                   tick_start: dt.datetime) -> None:  # fmt: skip
        """Count a taken-in message against its tick's manifest; wake the detection loop when a
        tick no longer needs to wait for its grace."""
        ts = (tick_start if tick_start.tzinfo else tick_start.replace(tzinfo=dt.UTC)).timestamp()
        metrics.MANIFESTS.labels(self.completeness.record(subject, headers, msg_id, ts)).inc()
        if self._ready_through(early_only=True) is not None:
            self._wake.set()

    def _reads_subject(self, subject: str) -> bool:
        """Whether this worker receives a traffic subject (sharded: only its partitions' batches)."""
        if not self.sharded:
            return True
        last = subject.rsplit(".", 1)[-1]
        return subject.count(".") <= 3 or not last.isdigit() or int(last) in self.parts

    def _ready_through(self, *, early_only: bool = False) -> float | None:
        """The latest buffered tick the engine may decide now (see ``completeness``); with
        ``early_only``, None unless that includes a tick still inside its grace."""
        pending = getattr(self._engine, "pending_ticks", None)
        if pending is None:
            return None
        due = self.clock().timestamp() - self._grace_s
        ready = self.completeness.ready_through(pending(), due)
        if early_only and (ready is None or ready < due):
            return None
        return ready

    async def _on_batch(self, cols: TrafficColumns, delivery: Delivery | None) -> None:
        """One batch of per-host ticks in bulk: columnar for known targets, objects for the rest."""
        self.stats["batches"] += 1
        if cols.dropped:
            self.stats["bad_records"] += cols.dropped
            log.warning("traffic batch %s: %d bad records dropped (%s)", cols.batch.id, cols.dropped, cols.bad)
        if cols.n == 0:
            return
        engine = self.engine
        columnar = getattr(engine, "observe_columns", None)
        known: dict[str, int] | None = getattr(engine, "index", None) if columnar is not None else None
        register = getattr(engine, "register", None)
        path = intake.split(cols, known, can_register=register is not None)
        new_meta = {i: cols.meta(i) for i in path.new}  # also what the flush registers in the database
        eng_vals, min_vals, live_vals = intake.prepare(cols)
        ticks: list[TrafficTick] = []
        for i in path.objects:
            try:
                ticks.append(cols.tick(i))
            except ValueError:
                self.stats["bad_records"] += 1
        idx = path.columnar
        all_columnar = len(idx) == cols.n
        async with self.lock:
            if new_meta and register is not None:
                register([m["id"] for m in new_meta.values()], list(new_meta.values()))
            if len(idx) and columnar is not None:
                ids = cols.ids if all_columnar else [cols.ids[i] for i in idx.tolist()]
                columnar(
                    cols.tick_start, ids, eng_vals if all_columnar else eng_vals[idx], intake.SourcesView(cols, idx)
                )
            if ticks:
                engine.observe(ticks)
        self.stats["ticks"] += cols.n
        ids = cols.ids
        if self.sharded:
            owned = np.fromiter(map(self.owns_target, ids), bool, cols.n)
            if not owned.all():
                keep = np.flatnonzero(owned)
                ids, min_vals, live_vals = [ids[i] for i in keep.tolist()], min_vals[keep], live_vals[keep]
                rows = keep.tolist()
            else:
                rows = list(range(cols.n))
        else:
            rows = list(range(cols.n))
        if not ids:
            return
        self.rollup.add_columns(cols.tick_start, ids, min_vals)
        self.live.add_columns(cols.tick_start, ids, live_vals)
        metrics.TICKS.labels(cols.tier.value).inc(len(ids))
        hosts = cols.text["host"]
        for j, i in enumerate(rows):
            if hosts[i] is None:  # a component target in a batch: as _on_tick
                self._tier_observed[(cols.tier.value, ids[j])] = float(live_vals[j, 0])
        known_t, new_t = self._known_targets, self._new_targets
        for j, i in enumerate(rows):
            tid = ids[j]
            if tid not in known_t and tid not in new_t:
                new_t[tid] = new_meta.get(i) or cols.meta(i)

    async def _on_tick(self, tick: TrafficTick, delivery: Delivery | None) -> None:
        async with self.lock:
            self.engine.observe([tick])
        self.stats["ticks"] += 1
        if self.sharded and not self.owns_target(tick.target_id):
            return  # context for the detectors; its owner stores it
        self.rollup.add(tick)
        self.live.add(tick)
        metrics.TICKS.labels(tick.tier.value).inc()
        if tick.host is None:  # component targets: the per-tier traffic the NOC charts
            key = (tick.tier.value, tick.target_id)
            self._tier_observed[key] = tick.packets / tick.tick_seconds
        if tick.target_id not in self._known_targets:
            self._new_targets[tick.target_id] = target_meta(tick)

    def _until_next_step(self) -> float:
        """Seconds to the next step: just after a tick time becomes processable (tick boundary plus
        the engine's grace), so a tick is decided as soon as its grace has passed, not up to a whole
        tick later."""
        dt_s = self.tick_seconds
        return (self._grace_s + STEP_LAG_S - time.time()) % dt_s or dt_s

    @property
    def _grace_s(self) -> float:
        """The engine's wait for late ticks, in seconds (0 for an engine without one)."""
        return float(getattr(self._engine, "grace", 0.0) or 0.0) * self.tick_seconds

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._until_next_step())
            self._wake.clear()
            try:
                await self.step(self.clock(), self._ready_through())
                if self._flush_task is None or self._flush_task.done():
                    # in its own task: writing a minute of 100,000 targets must not delay the next step
                    self._flush_task = asyncio.create_task(self._flush_logged(), name="baseline-flush")
                if loop.time() - self._last_snapshot >= self.snapshot_interval_s:
                    await self.snapshot()
                if loop.time() - self._last_retention >= RETENTION_EVERY_S:
                    await self.retention()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.stats["errors"] += 1
                log.exception("baseline step failed")

    async def _flush_logged(self) -> None:
        try:
            await self.flush()
        except Exception:
            self.stats["errors"] += 1
            log.exception("baseline flush failed")

    async def step(self, now: dt.datetime, ready_through: float | None = None) -> None:
        """One detection step: advance (also through ``ready_through``, ticks known complete),
        commit incident events, then publish and fan out."""
        async with self._commit:
            async with self.lock:
                out = await asyncio.to_thread(self.engine.advance, now, ready_through)
                if ready_through is not None:
                    self.completeness.forget_through(ready_through)
                handover = self._shard_incidents(out.events) if self.sharded and out.events else None
            if out.events:
                async with self._db_write:
                    await asyncio.to_thread(self.store.record_events, out.events, handover)
        self.stats["steps"] += 1
        early = ready_through is not None and ready_through >= now.timestamp() - self._grace_s
        self.stats["early_steps"] += early
        metrics.STEPS.labels("complete" if early else "grace").inc()
        if out.events:
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
        blocks = self.rollup.pop_closed(before)
        targets = list(self._new_targets.values())
        self._new_targets = {}
        n = sum(len(b.ids) for b in blocks)
        try:
            async with self._db_write:
                if targets:
                    await asyncio.to_thread(self.store.upsert_targets, targets, now)
                    self._known_targets.update(t["id"] for t in targets)
                if n:
                    ids = [t for b in blocks for t in b.ids]
                    minutes = np.concatenate([np.full(len(b.ids), int(b.bucket.timestamp())) for b in blocks])
                    values = np.concatenate([b.values for b in blocks])
                    await asyncio.to_thread(self.store.add_minute_block, ids, minutes, values)
        except Exception:
            self.rollup.restore(blocks)
            for t in targets:
                self._new_targets.setdefault(t["id"], t)
            raise
        self.stats["minutes_written"] += n
        return n

    async def retention(self) -> int:
        """Drop minutes past the retention period where no TimescaleDB policy does it."""
        self._last_retention = asyncio.get_running_loop().time()
        if self.store.timescale:
            return 0
        cutoff = self.clock() - dt.timedelta(days=RETAIN_DAYS)
        return await asyncio.to_thread(self.store.delete_minutes_before, cutoff)

    async def snapshot(self) -> None:
        """Save the engine's learned state (sharded: each held partition's)."""
        if self.sharded:
            for k in sorted(self.parts):
                await self._save_partition(k)
            self._last_snapshot = asyncio.get_running_loop().time()
            return
        capture = getattr(self.engine, "capture_state", None)
        pack: Callable[[], bytes] = self.engine.export_state
        async with self.lock:  # only the copy holds the lock: packing 100,000 targets takes seconds
            if capture is not None:
                pack = await asyncio.to_thread(capture)
            else:
                data = await asyncio.to_thread(pack)
        if capture is not None:
            data = await asyncio.to_thread(pack)
        await asyncio.to_thread(self.store.save_state, data, self.clock())
        self._last_snapshot = asyncio.get_running_loop().time()

    # -- shards -----------------------------------------------------------------------------

    @property
    def sharded(self) -> bool:
        return self.shards > 1

    def shard_key(self, k: int) -> str:
        return f"{k}/{self.shards}"

    def owns_target(self, target_id: str) -> bool:
        """Whether this worker decides for the target (always, unsharded)."""
        if not self.sharded:
            return True
        k = partition_of(target_id, self.shards)
        return k in self.parts and self.leases is not None and self.leases.holds(k)

    def _detection_engine(self) -> DetectionEngine:
        from voxguard.baseline.engine import DetectionEngine

        eng = self.engine
        if not isinstance(eng, DetectionEngine):
            raise RuntimeError("sharded baseline workers need the detection engine")
        return eng

    def _in_partition(self, k: int) -> Callable[[str], bool]:
        shards = self.shards
        return lambda tid: partition_of(tid, shards) == k

    async def _start_sharded(self) -> None:
        """Context consumer, ownership hook, then the leases (which start partition consumers)."""
        from voxguard.baseline.shardstate import drop_incidents

        eng = self._detection_engine()
        async with self.lock:
            drop_incidents(eng, lambda _tid: True)  # a seed's incidents come back with their partitions
            eng.set_owner(self.owns_target)
        bus = self.ctx.bus

        async def on_context(msg: Msg) -> None:
            try:
                tick = TrafficTick.model_validate_json(msg.data)
            except ValidationError:
                self.stats["errors"] += 1
                return
            await self._on_tick(tick, None)
            headers = msg.headers or {}
            self._delivered(bus.logical_subject(msg.subject), headers, headers.get(MSG_ID_HEADER), tick.tick_start)

        self._ctx_sub = await bus.js.subscribe(
            bus.wire_subject(context_filter()), cb=on_context, ordered_consumer=True,
            deliver_policy=js_api.DeliverPolicy.NEW,
        )  # fmt: skip
        self.leases = ShardLeases(bus, self.shards, self.worker_id, on_gain=self._gain, on_lose=self._lose)
        await self.leases.start()
        log.info("baseline worker %s: %d partitions", self.worker_id, self.shards)

    async def _gain(self, k: int) -> None:
        """Load partition ``k``'s rows and open incidents, then start deciding for and consuming it."""
        from voxguard.baseline.shardstate import adopt_incidents, import_rows

        eng = self._detection_engine()
        saved = await asyncio.to_thread(self.store.load_shard, self.shard_key(k))
        open_now = {v.id: v for v in await asyncio.to_thread(self.store.open_incidents)}
        mine = self._in_partition(k)
        async with self.lock:
            if saved is not None and saved.state:
                try:
                    n = await asyncio.to_thread(import_rows, eng, saved.state)
                    log.info("partition %d: %d learned rows loaded (saved by %s)", k, n, saved.worker)
                except ValueError as exc:
                    log.warning("partition %d: saved rows not loaded: %s", k, exc)
            # the handed-over incidents that are still open, then any other open one of the
            # partition the database knows (e.g. after a change of the number of shards)
            handed = [d for d in (saved.incidents if saved else []) if d.get("id") in open_now]
            ids = {d["id"] for d in handed}
            rest = [v.model_dump(mode="json") for i, v in open_now.items() if i not in ids and mine(v.target_id)]
            adopted = adopt_incidents(eng, handed + rest)
            self.parts.add(k)
        if adopted:
            log.info("partition %d: continuing incidents %s", k, adopted)
        try:
            self._part_subs[k] = await self.ctx.bus.subscribe_durable(
                STREAM_TRAFFIC, f"{self.durable}-p{k}of{self.shards}", partition_filter(k), TrafficTick,
                self._on_traffic, ack_wait_s=PARTITION_ACK_WAIT_S, deliver_policy=js_api.DeliverPolicy.NEW,
                decoder=self._decoder, batch=FETCH_BATCH,
            )  # fmt: skip
        except Exception:
            await self._lose(k, False)  # the lease goes back; whoever takes it loads the same state
            raise
        since = self.clock() - dt.timedelta(seconds=REPUBLISH_S)
        recent = [e for e in await asyncio.to_thread(self.store.events_since, since) if mine(e.incident.target_id)]
        if recent:
            self._unpublished.extend((e.subject(), e) for e in recent)
            await self._publish_pending()

    async def _lose(self, k: int, handover: bool) -> None:
        """Stop consuming and deciding for partition ``k``; on a hand-over, save its state first."""
        from voxguard.baseline.shardstate import drop_incidents

        sub = self._part_subs.pop(k, None)
        if sub is not None:
            await sub.stop()
        if handover and k in self.parts:
            await self._save_partition(k, release=True)
            return
        eng = self._detection_engine()
        async with self.lock:
            self.parts.discard(k)
            drop_incidents(eng, self._in_partition(k))

    async def _save_partition(self, k: int, *, release: bool = False) -> None:
        """Write partition ``k``'s rows and open incidents (and forget them when ``release``)."""
        from voxguard.baseline.shardstate import drop_incidents, export_rows, incidents_of

        eng = self._detection_engine()
        mine = self._in_partition(k)
        async with self._commit:
            async with self.lock:
                data = await asyncio.to_thread(export_rows, eng, mine)
                incidents = incidents_of(eng, mine)
                if release:
                    self.parts.discard(k)
                    drop_incidents(eng, mine)
            await asyncio.to_thread(
                self.store.save_shard, self.shard_key(k), self.worker_id, state=data, incidents=incidents,
                at=self.clock(),
            )  # fmt: skip

    def _shard_incidents(self, events: Sequence[IncidentEvent]) -> dict[str, tuple[str, list[dict[str, Any]]]]:
        """The open incidents of every held partition these events touch (saved with them)."""
        from voxguard.baseline.shardstate import incidents_of

        eng = self._detection_engine()
        touched = {partition_of(e.incident.target_id, self.shards) for e in events} & self.parts
        return {self.shard_key(k): (self.worker_id, incidents_of(eng, self._in_partition(k))) for k in touched}

    def shard_status(self) -> dict[str, Any]:
        """This worker's view of the partitions (``GET /v1/shards``)."""
        leases = self.leases
        return {
            "worker": self.worker_id,
            "shards": self.shards,
            "owned": sorted(k for k in self.parts if leases is None or leases.holds(k)) if self.sharded else [0],
            "leases": {str(k): w for k, w in sorted(leases.view.items())} if leases else {"0": self.worker_id},
            "workers": list(leases.workers) if leases else [self.worker_id],
        }

    def spec(self) -> ServiceSpec:
        from .api import build_router
        from .review_api import build_review_router
        from .shards_api import build_shards_router

        return ServiceSpec(
            name="baseline",
            routers=[build_router(self), build_review_router(self.store, self.ctx.config), build_shards_router(self)],
            readiness={"db": readiness_check(self.db), "consumer": self.consumer_ready},
            lifespans=[self.lifespan],
            description="Time series, seasonal baselines, detectors and incidents.",
        )


def build(ctx: ServiceContext) -> ServiceSpec:
    """The baseline service's routes, readiness and lifespan."""
    return BaselineService(ctx).spec()
