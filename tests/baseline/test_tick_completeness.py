"""Deciding a tick as soon as every producer has delivered it (tick manifests), not after the grace."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import orjson
from test_traffic_batch import T0, collect_incidents, host_tick, hosts_tick, learned_engine, make_service, wait_for

from voxguard.baseline.completeness import ACTIVE_TICKS, TickCompleteness
from voxguard.shared.batches import batch_subject, ticks_to_batch
from voxguard.shared.bus import Bus
from voxguard.shared.messages import IncidentEvent
from voxguard.shared.tickmanifest import manifest_headers, parse_manifest

H = batch_subject("media")
C = "voxguard.traffic.v1.sbc"
T = T0.timestamp()


def burst(
    tracker: TickCompleteness, producer: str, tick: float, subjects: list[str], deliver: int | None = None
) -> None:
    headers = manifest_headers(producer, tick, subjects)
    for k, subject in enumerate(subjects[:deliver]):
        tracker.record(subject, headers, f"{producer}-{tick}-{k}", tick)


def test_a_tick_is_complete_when_every_recent_producer_delivered_every_message() -> None:
    tr = TickCompleteness(1.0)
    burst(tr, "a", T, [H, H, C])
    assert tr.complete(T)
    burst(tr, "b", T, [H, H], deliver=1)  # a second collector, one batch still in flight
    assert not tr.complete(T)
    headers = manifest_headers("b", T, [H, H])
    tr.record(H, headers, f"b-{T}-0", T)  # a redelivery of the same message does not count twice
    assert not tr.complete(T)
    tr.record(H, headers, f"b-{T}-1", T)
    assert tr.complete(T)
    # the next tick: b has sent nothing yet, so the tick waits for it
    burst(tr, "a", T + 1, [H, C])
    assert not tr.complete(T + 1)
    assert tr.ready_through([T, T + 1], due=T - 10) == T


def test_a_silent_producer_is_waited_for_only_a_few_ticks() -> None:
    tr = TickCompleteness(1.0)
    burst(tr, "a", T, [H])
    burst(tr, "b", T, [H])
    later = T + ACTIVE_TICKS + 1
    burst(tr, "a", later - 1, [H])
    assert not tr.complete(later - 1)  # b was heard within the window: its part may still come
    burst(tr, "a", later, [H])
    assert tr.complete(later)  # b last sent more than ACTIVE_TICKS ago: gone, not waited for


def test_messages_without_manifest_keep_the_grace() -> None:
    tr = TickCompleteness(1.0)
    burst(tr, "a", T, [H])
    tr.record(H, {}, "x", T)  # another producer, no manifest: nobody knows how many will come
    assert not tr.complete(T)
    assert tr.ready_through([T], due=T - 5) is None
    assert tr.ready_through([T], due=T + 5) == T  # past its grace it is decided anyway
    assert tr.stats["unmanifested"] == 1


def test_a_sharded_worker_counts_only_the_subjects_it_reads() -> None:
    held = {1}
    tr = TickCompleteness(1.0, reads=lambda s: s.count(".") <= 3 or int(s.rsplit(".", 1)[1]) in held)
    p0, p1 = batch_subject("media", 0), batch_subject("media", 1)
    headers = manifest_headers("a", T, [C, p0, p0, p1])
    tr.record(C, headers, "c", T)
    assert not tr.complete(T)
    tr.record(p1, headers, "p1", T)
    assert tr.complete(T)  # partition 0 is another worker's
    held.add(0)
    assert not tr.complete(T)  # taken over: now its two batches are expected here too


def test_hostile_manifests_are_ignored() -> None:
    good = manifest_headers("a", T, [H])
    assert parse_manifest(good) is not None
    for bad in (
        None,
        {},
        {**good, "Voxguard-Tick": "soon"},
        {**good, "Voxguard-Tick": "nan"},
        {**good, "Voxguard-Tick-Messages": "x=1,y"},
        {**good, "Voxguard-Tick-Messages": "x=-1"},
        {**good, "Voxguard-Tick-Messages": "x=1" + ",y=2" * 5000},
        {**good, "Voxguard-Producer": "p" * 500},
    ):
        assert parse_manifest(bad) is None
    tr = TickCompleteness(1.0)
    # a manifest naming another tick than the message's
    assert tr.record(H, manifest_headers("a", T + 30, [H]), "m", T) == "bad_manifests"
    assert not tr.complete(T) and tr.stats["bad_manifests"] == 1
    assert tr.record(H, manifest_headers("a", T, [H]), "n", T) == "manifested"
    assert not tr.complete(T)  # the tick holds a message whose manifest was not trusted


async def publish_tick(bus: Bus, ticks: list[dict[str, Any]], manifest: bool, producer: str = "edge") -> None:
    docs = [ticks_to_batch(ticks[i : i + 50], packed=True) for i in range(0, len(ticks), 50)]
    tick_start = dt.datetime.fromisoformat(ticks[0]["tick_start"]).timestamp()
    headers = manifest_headers(producer, tick_start, [H] * len(docs)) if manifest else None
    await bus.publish_raw_many([(H, orjson.dumps(d), d["id"]) for d in docs], headers=headers)


async def test_a_complete_tick_is_decided_at_once_and_an_incomplete_one_waits(bus: Bus, tmp_path: Any) -> None:
    """Grace of 30 ticks: without the manifests no tick of this test could be decided in time.
    With them each tick is decided as soon as its last batch is in, and the flood opens its
    incident within a few seconds of wall time."""
    n = 200
    eng = learned_engine(n)
    eng.grace = 30.0
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(seconds=5)
    svc = make_service(bus, tmp_path, eng, lambda: dt.datetime.now(dt.UTC))
    got: list[IncidentEvent] = []
    sub = await collect_incidents(bus, got)
    await svc.start()
    try:
        for s in range(8):
            at = start + dt.timedelta(seconds=s)
            await publish_tick(bus, hosts_tick(n, at, flooded=s >= 2), manifest=True)
            await wait_for(lambda: eng.watermark is not None and eng.watermark >= at.timestamp(), 10)  # noqa: B023
        await wait_for(lambda: any(e.event == "opened" for e in got), 10)
        assert svc.stats["early_steps"] >= 6
        assert [e.incident.target_id for e in got if e.event == "opened"] == ["media-h000017"]
        # a tick without manifests: taken in, but left for the grace
        at = start + dt.timedelta(seconds=8)
        await publish_tick(bus, [host_tick(i, at=at) for i in range(n)], manifest=False)
        await wait_for(lambda: svc.stats["ticks"] >= 9 * n)
        await asyncio.sleep(1.5)
        assert eng.pending_ticks() == [at.timestamp()]
        assert svc.completeness.stats["unmanifested"] >= 4
    finally:
        await sub.unsubscribe()
        await svc.stop()
        svc.db.dispose()
