"""The baseline service end to end on a real NATS and a real database (SQLite and PostgreSQL):
ticks in through the durable consumer, minute buckets and incidents stored, events published,
engine state saved at stop and loaded at the next start."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine

from voxguard.baseline.service import BaselineService
from voxguard.shared.bus import STREAM_EVENTS, Bus, Delivery
from voxguard.shared.config import Tier, load_config
from voxguard.shared.db import make_engine
from voxguard.shared.messages import IncidentEvent, SourceCount, TrafficTick
from voxguard.shared.runtime import ServiceContext
from voxguard.shared.settings import Settings

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
T0 = (NOW - dt.timedelta(minutes=10)).replace(second=0)


def make_tick(target: str, second: int, packets: int, tier: Tier = Tier.SBC) -> TrafficTick:
    return TrafficTick(
        tier=tier,
        target_id=target,
        target=f"{target} udp/5060",
        component="sbc-eu-1",
        protocol="udp",
        ports="5060",
        role="signalling",
        region="eu-west",
        tick_start=T0 + dt.timedelta(seconds=second),
        tick_seconds=1.0,
        bytes=packets * 500,
        packets=packets,
        flows=packets // 2,
        distinct_sources=7,
        sip_methods={"INVITE": 3, "REGISTER": 2, "NOTIFY": 1},
        size_histogram=[1, 0, 5, 0, 0, 2],
        top_sources=[SourceCount(source="192.0.2.9", packets=packets, bytes=packets * 500)],
    )


def make_ctx(bus: Bus, tmp_path: Any) -> ServiceContext:
    from voxguard.shared.config import example_config_path

    ctx = ServiceContext(Settings(), load_config(example_config_path()), bus.url)
    ctx.bus = bus
    return ctx


async def wait_for(cond: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


@pytest.fixture
def db(db_url: str) -> Any:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


async def test_ticks_to_minutes_incidents_and_events(bus: Bus, db: Engine, tmp_path: Any, fake_engine: Any) -> None:
    ctx = make_ctx(bus, tmp_path)
    fake = fake_engine(threshold=1000)
    svc = BaselineService(ctx, engine=fake, db=db, clock=lambda: NOW)
    published: list[IncidentEvent] = []

    async def on_event(ev: IncidentEvent, d: Delivery) -> None:
        published.append(ev)

    watcher = await bus.subscribe_durable(STREAM_EVENTS, "watch", "voxguard.incident.v1.>", IncidentEvent, on_event)
    await svc.start()
    try:
        assert await svc.consumer_ready()
        # 2 minutes of one target, a flood in seconds 70-72, a second target in minute 0 only
        ticks = [make_tick("sbc-a", s, 5000 if 70 <= s <= 72 else 100) for s in range(120)]
        ticks += [make_tick("sbc-b", s, 10) for s in range(30)]
        await bus.publish_many([(t.subject(), t) for t in ticks])
        await wait_for(lambda: svc.stats["ticks"] == len(ticks))
        await wait_for(lambda: len(published) >= 4 and svc.stats["minutes_written"] >= 3)
    finally:
        await svc.stop()
        await watcher.stop()

    kinds = [e.event for e in published]
    assert kinds == ["opened", "updated", "updated", "resolved"]
    assert {e.id for e in published} == {e.id for e in published}  # ids survive the bus
    raw = svc.store.minute_sums("sbc-a", T0, T0 + dt.timedelta(minutes=2))
    assert raw["ticks"].tolist() == [60, 60]
    assert raw["packets"].tolist() == [6000.0, 57 * 100 + 3 * 5000.0]
    assert raw["sip_invite"].tolist() == [180.0, 180.0] and raw["sip_other"].tolist() == [60.0, 60.0]
    assert raw["odd_size_packets"].tolist() == [180.0, 180.0]
    assert svc.store.minute_sums("sbc-b", T0, T0 + dt.timedelta(minutes=2))["seconds"].tolist() == [30.0]
    assert {t.id for t in svc.store.targets()} == {"sbc-a", "sbc-b"}

    items, total = svc.store.incidents()
    assert total == 1 and items[0].state == "resolved" and items[0].peak_ratio == 50.0
    found = svc.store.incident(items[0].id)
    assert found is not None
    assert [e["event"] for e in found[1]] == kinds
    assert svc.live.points("sbc-a")[-1]["packets"] == 100.0

    # restart: the state saved at stop is loaded, learning is not reset
    fresh = fake_engine()
    svc2 = BaselineService(ctx, engine=fresh, db=db, clock=lambda: NOW)
    await svc2.start()
    try:
        assert fresh.learned == {"sbc-a": 120, "sbc-b": 30}
    finally:
        await svc2.stop()


async def test_partial_minute_is_completed_after_restart(bus: Bus, db: Engine, tmp_path: Any, fake_engine: Any) -> None:
    """The open minute is written at stop and added to (not overwritten) after a restart."""
    ctx = make_ctx(bus, tmp_path)
    clock = [T0 + dt.timedelta(seconds=30)]
    svc = BaselineService(ctx, engine=fake_engine(), db=db, clock=lambda: clock[0])
    await svc.start()
    try:
        await bus.publish_many([(t.subject(), t) for t in (make_tick("sbc-a", s, 10) for s in range(30))])
        await wait_for(lambda: svc.stats["ticks"] == 30)
        assert svc.stats["minutes_written"] == 0  # the minute is still open
    finally:
        await svc.stop()
    assert svc.store.minute_sums("sbc-a", T0, T0 + dt.timedelta(minutes=1))["ticks"].tolist() == [30]

    clock[0] = NOW
    svc2 = BaselineService(ctx, engine=fake_engine(), db=db, clock=lambda: clock[0])
    await svc2.start()
    try:
        await bus.publish_many([(t.subject(), t) for t in (make_tick("sbc-a", s, 10) for s in range(30, 60))])
        await wait_for(lambda: svc2.stats["minutes_written"] >= 1)
    finally:
        await svc2.stop()
    raw = svc2.store.minute_sums("sbc-a", T0, T0 + dt.timedelta(minutes=1))
    assert raw["ticks"].tolist() == [60] and raw["packets"].tolist() == [600.0]


async def test_invalid_messages_do_not_stop_the_consumer(bus: Bus, db: Engine, tmp_path: Any, fake_engine: Any) -> None:
    ctx = make_ctx(bus, tmp_path)
    svc = BaselineService(ctx, engine=fake_engine(), db=db, clock=lambda: NOW)
    await svc.start()
    try:
        await bus.js.publish(bus.wire_subject("voxguard.traffic.v1.sbc"), b'{"tier": "sbc", "packets": -1}')
        await bus.js.publish(bus.wire_subject("voxguard.traffic.v1.sbc"), b"not json")
        t = make_tick("sbc-a", 0, 10)
        await bus.publish(t.subject(), t)
        await wait_for(lambda: svc.stats["ticks"] == 1)
        assert await svc.consumer_ready()
    finally:
        await svc.stop()


async def test_build_with_the_real_engine(bus: Bus, db: Engine, tmp_path: Any) -> None:
    """``build(ctx)`` as the stack calls it, and the real DetectionEngine behind the service."""
    from voxguard.baseline.service import build

    ctx = make_ctx(bus, tmp_path)
    spec = build(ctx)
    assert spec.name == "baseline" and set(spec.readiness) == {"db", "consumer"} and spec.routers

    svc = BaselineService(ctx, db=db)  # default engine: voxguard.baseline.engine.DetectionEngine
    await svc.start()
    try:
        ticks = [make_tick("sbc-live", s, 100) for s in range(90)]
        await bus.publish_many([(t.subject(), t) for t in ticks])
        await wait_for(lambda: svc.stats["ticks"] == len(ticks) and svc.stats["minutes_written"] >= 1)
        await svc.step(NOW)
        ids = {t["id"] for t in svc.engine.targets()}
        assert "sbc-live" in ids
    finally:
        await svc.stop()
    saved = svc.store.load_state()
    assert saved is not None
    again = BaselineService(ctx, db=db)
    await again.start()
    try:
        assert "sbc-live" in {t["id"] for t in again.engine.targets()}  # restored, not relearned
    finally:
        await again.stop()
