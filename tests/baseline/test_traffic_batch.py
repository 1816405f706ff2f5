"""Batches of per-host traffic ticks: the message's checks, the baseline consumer taking them in
bulk on a real NATS, and an attack delivered by batch opening an incident with its top sources."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pytest

from voxguard.baseline.engine import DetectionEngine
from voxguard.baseline.profile import NM, PPS
from voxguard.baseline.service import BaselineService
from voxguard.ingest.service import encode_traffic
from voxguard.shared.batches import (
    MAX_BATCH_BYTES,
    MAX_BATCH_RECORDS,
    BatchError,
    batch_subject,
    decode_batch,
    ticks_to_batch,
)
from voxguard.shared.bus import Bus
from voxguard.shared.config import example_config_path, load_config
from voxguard.shared.db import make_engine
from voxguard.shared.messages import IncidentEvent, TrafficTick
from voxguard.shared.partition import partition_of
from voxguard.shared.runtime import ServiceContext
from voxguard.shared.settings import Settings

T0 = dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.UTC)  # a Monday


def host_tick(i: int, packets: int = 100, at: dt.datetime = T0, sources: list[str] | None = None) -> dict[str, Any]:
    """A per-host media tick as the collector renders it (a plain dict)."""
    host = f"198.51.100.{i % 250 + 1}" if i < 250 else f"10.0.{i // 250}.{i % 250}"
    srcs = sources or [f"192.0.2.{i % 200 + 1}"]
    return {
        "schema_version": 1, "id": f"t{i:08x}", "ts": T0.isoformat(), "tier": "media", "target_id": f"media-h{i:06d}",
        "target": f"media-gw-eu host {host}", "component": "media-gw-eu", "host": host, "protocol": "udp",
        "ports": "10000-20000", "role": "media", "region": "eu-west", "tick_start": at.isoformat(),
        "tick_seconds": 1.0, "exporters": ["edge-media-01"], "bytes": packets * 172, "packets": packets,
        "flows": max(1, packets // 10), "new_connections": 0, "icmp_packets": 0, "long_lived_flows": 2,
        "distinct_sources": len(srcs), "bytes_per_packet": 172.0, "size_histogram": [1, packets - 1, 0, 0, 0, 2],
        "top_sources": [{"source": s, "packets": packets // len(srcs), "bytes": 172 * packets // len(srcs)}
                        for s in srcs],
        "top_prefixes": [{"source": "192.0.2.0/24", "packets": packets, "bytes": packets * 172}],
        "sip_methods": {}, "sip_scanner_packets": 0, "sip_malformed_packets": 0, "sip_sampled_packets": 0,
        "flow_records": 3, "sampled": False,
    }  # fmt: skip


def encoded(ticks: list[dict[str, Any]]) -> bytes:
    return orjson.dumps(ticks_to_batch(ticks))


# -- the message -----------------------------------------------------------------------------------


def test_good_batch_round_trips_every_field() -> None:
    ticks = [host_tick(i, packets=50 + i) for i in range(40)]
    ticks[3]["sip_methods"] = {"INVITE": 4}
    cols = decode_batch(encoded(ticks))
    assert cols.n == 40 and cols.dropped == 0 and cols.tier.value == "media"
    for i in (0, 3, 39):
        want = TrafficTick.model_validate(ticks[i])
        got = cols.tick(i)
        assert got.model_dump(exclude={"id", "ts"}) == want.model_dump(exclude={"id", "ts"})
        assert cols.sources(i).top_sources == want.top_sources
        assert cols.meta(i)["host"] == want.host
    assert cols.num["packets"].tolist() == [50 + i for i in range(40)]
    assert cols.num["odd_size_packets"][0] == 3  # size buckets 0 and 5


@pytest.mark.parametrize(
    "mangle, message",
    [
        (lambda b: b[: len(b) // 2], "not JSON"),
        (lambda b: b"[1, 2]", "JSON object"),
        (lambda b: b.replace(b'"columns":', b'"kolumns":'), "no 'columns'"),
        (lambda b: b.replace(b'"schema_version":1', b'"schema_version":9'), "schema_version"),
        (lambda b: b.replace(b'"tier":"media"', b'"tier":"nope"'), "envelope"),
        (lambda b: b.replace(b'"count":5', b'"count":6'), "has 5 values for count 6"),
        (lambda b: b.replace(b'"count":5', b'"count":' + str(MAX_BATCH_RECORDS + 1).encode()), "envelope"),
        (lambda b: b.replace(b'"packets":[', b'"packetz":['), "lacks column 'packets'"),
        (lambda b: b.replace(b'"flows":[', b'"flows":7,"x":['), "is not a list"),
        (lambda b: b + b" " * MAX_BATCH_BYTES, "exceeds"),
    ],
)
def test_broken_batches_are_rejected_with_a_clear_error(mangle: Callable[[bytes], bytes], message: str) -> None:
    good = encoded([host_tick(i) for i in range(5)])
    decode_batch(good)
    with pytest.raises(BatchError, match=message):
        decode_batch(mangle(good))


def test_bad_records_are_dropped_and_counted_the_rest_kept() -> None:
    doc = ticks_to_batch([host_tick(i) for i in range(12)])
    c = doc["columns"]
    c["packets"][1] = "lots"  # wrong type
    c["bytes"][2] = -5  # negative
    c["flows"][3] = 1.5  # not a count
    c["target_id"][4] = 12345  # not a string
    c["target_id"][5] = "x" * 81  # too long
    c["target_id"][6] = c["target_id"][0]  # duplicate target: the first one is kept
    c["size_histogram"][7] = [1, "a"]
    c["sip_methods"][8] = ["INVITE"]
    c["component"][9] = None
    c["top_sources"][10] = "a" * 20_000  # huge
    c["distinct_sources"][11] = 1e300 * 1e300  # orjson writes inf as null
    cols = decode_batch(orjson.dumps(doc))
    assert cols.ids == ["media-h000000"]
    assert cols.bad == {"bad_target_id": 2, "duplicate": 1, "bad_text": 1, "bad_number": 4, "bad_list": 3}
    assert cols.dropped == 11


def test_bad_top_source_entries_are_dropped_when_read() -> None:
    doc = ticks_to_batch([host_tick(0, sources=["192.0.2.1", "192.0.2.2"])])
    doc["columns"]["top_sources"][0] += ";192.0.2.3 many 5;;192.0.2.4 -1 3"
    cols = decode_batch(orjson.dumps(doc))
    assert [s.source for s in cols.sources(0).top_sources] == ["192.0.2.1", "192.0.2.2"]


def test_encode_traffic_batches_hosts_and_keeps_component_ticks_single() -> None:
    comp = host_tick(0) | {"host": None, "target_id": "media-gw-eu-rtp", "target": "media-gw-eu udp/10000-20000"}
    hosts = [host_tick(i) for i in range(3000)]
    limit = 64 * 1024
    items = encode_traffic([comp, *hosts], 1, limit)
    assert items[0][0] == "voxguard.traffic.v1.media"
    assert TrafficTick.model_validate_json(items[0][1]).target_id == "media-gw-eu-rtp"
    batches = items[1:]
    assert len(batches) > 3 and {s for s, _, _ in batches} == {"voxguard.traffic.v1.media.h"}
    assert all(len(d) <= limit for _, d, _ in batches)
    assert len({m for _, _, m in items}) == len(items)  # message ids for JetStream dedup
    ids = [t for _, d, _ in batches for t in decode_batch(d).ids]
    assert ids == [t["target_id"] for t in hosts]
    sharded = encode_traffic([comp, *hosts], 4, limit)
    assert sharded[0][0] == "voxguard.traffic.v1.media"
    for subj, data, _ in sharded[1:]:
        cols = decode_batch(data)
        k = cols.batch.partition
        assert subj == batch_subject("media", k) == f"voxguard.traffic.v1.media.{k}"
        assert {partition_of(t, 4) for t in cols.ids} == {k}
    assert sum(decode_batch(d).n for _, d, _ in sharded[1:]) == 3000


# -- the consumer ----------------------------------------------------------------------------------


async def wait_for(cond: Callable[[], bool], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.05)


def learned_engine(n: int, base_pps: float = 100.0) -> DetectionEngine:
    """The example config's engine with ``n`` per-host media targets that have a learned baseline."""
    e = DetectionEngine(load_config(example_config_path()))
    for i in range(n):
        t = TrafficTick.model_validate(host_tick(i))
        e._row(t.target_id, {"tier": "media", "name": t.target, "component": t.component, "host": t.host,
                             "region": t.region, "role": t.role}, aggregate=False)  # fmt: skip
    rows = np.array([e.index[f"media-h{i:06d}"] for i in range(n)])
    lvl = np.zeros(NM, np.float32)
    lvl[PPS], lvl[1], lvl[2], lvl[4], lvl[6] = base_pps, base_pps * 172, base_pps / 10, 1, 2
    e.bank.level[:, rows, :] = np.log1p(lvl)[None, None, :].astype(np.float16)
    e.bank.learned_s[rows] = 8 * 86_400.0
    e.bank.spread[rows] = 0.2
    e.bank.sx[rows] = 1.0
    e.bank.se[rows] = 1.0
    return e


def make_service(bus: Bus, tmp_path: Any, engine: DetectionEngine, clock: Callable[[], dt.datetime]) -> BaselineService:
    ctx = ServiceContext(Settings(), load_config(example_config_path()), bus.url)
    ctx.bus = bus
    return BaselineService(ctx, engine=engine, db=make_engine(f"sqlite:///{tmp_path}/b.db"), clock=clock)


async def publish_batch(bus: Bus, data: bytes) -> None:
    await bus.js.publish(bus.wire_subject("voxguard.traffic.v1.media.h"), data)


ATTACKERS = [f"203.0.113.{i}" for i in range(1, 6)]


def hosts_tick(n: int, at: dt.datetime, *, flooded: bool) -> list[dict[str, Any]]:
    """One tick of ``n`` per-host media targets; ``flooded``: host 17 floods from ``ATTACKERS``."""
    ticks = [host_tick(i, at=at) for i in range(n)]
    if flooded:
        ticks[17] = host_tick(17, packets=4000, at=at, sources=ATTACKERS)
    return ticks


async def collect_incidents(bus: Bus, got: list[IncidentEvent]) -> Any:
    """Subscribe to every incident event, appending each to ``got``; returns the subscription."""

    async def on_event(msg: Any) -> None:
        got.append(IncidentEvent.model_validate_json(msg.data))

    return await bus.nc.subscribe(bus.wire_subject("voxguard.incident.v1.>"), cb=on_event)


async def test_consumer_keeps_good_records_of_a_batch_and_terminates_poison(bus: Bus, tmp_path: Any) -> None:
    eng = learned_engine(20)
    svc = make_service(bus, tmp_path, eng, lambda: T0 + dt.timedelta(seconds=1))
    await svc.start()
    try:
        doc = ticks_to_batch([host_tick(i) for i in range(25)])  # 20 known targets, 5 new ones
        doc["columns"]["packets"][7] = "x"
        await publish_batch(bus, b'{"columns": {}, "tier": "media"}')  # poison: no envelope
        await publish_batch(bus, orjson.dumps(doc))
        await bus.js.publish(
            bus.wire_subject("voxguard.traffic.v1.media"), orjson.dumps(host_tick(99) | {"host": None})
        )
        await wait_for(lambda: svc.stats["ticks"] >= 25)
        assert svc.stats["bad_batches"] == 1 and svc.stats["bad_records"] == 1 and svc.stats["batches"] == 1
        assert svc.stats["ticks"] == 25  # 24 good records of the batch and the single tick
        assert eng.stats.accepted == 25 and eng.stats.malformed == 0
        rows = {r["target_id"]: r for b in svc.rollup.pop_closed() for r in b.rows()}
        assert len(rows) == 25 and "media-h000007" not in rows
        assert rows["media-h000003"]["packets"] == 100 and rows["media-h000003"]["odd_size_packets"] == 3
        assert {"media-h000021", "media-h000024"} <= set(svc._new_targets)  # registered through the object path
        assert svc.live.points("media-h000003")[0]["packets"] == 100.0
    finally:
        await svc.stop()
        svc.db.dispose()


def test_bulk_registration_matches_one_by_one() -> None:
    """``register`` (a batch of new hosts at once) gives the rows ``_row`` gives one at a time."""
    cfg = load_config(example_config_path())
    metas: list[dict[str, Any]] = [
        {"tier": "media", "name": "media-gw-eu host 10.0.0.1", "component": "media-gw-eu", "host": "10.0.0.1",
         "region": "eu-west", "role": "media"},
        {"tier": "turn", "name": "turn-eu host 10.9.0.1", "component": "turn-eu", "host": "10.9.0.1",
         "region": "eu-west", "role": "relay"},
        {"tier": "nope", "name": "x", "component": "x", "host": "10.0.0.9", "region": None, "role": "media"},
        {"tier": "sbc", "name": "sbc host 10.1.0.1", "component": "sbc-eu-1", "host": "10.1.0.1", "region": "us",
         "role": "signalling"},
    ]  # fmt: skip
    ids = ["h-media", "h-turn", "h-bad", "h-sbc"]
    one, bulk = DetectionEngine(cfg), DetectionEngine(cfg)
    for e in (one, bulk):
        e.set_turn_sessions("turn-eu", 40)
    for tid, m in zip(ids, metas, strict=True):
        if m["tier"] != "nope":
            one._row(tid, m, aggregate=False)
    assert bulk.register([*ids, "h-media"], [*metas, metas[0]]) == 3
    assert bulk.register(ids[:1], metas[:1]) == 0  # known already
    assert bulk.ids == one.ids and bulk.meta == one.meta and bulk.index == one.index
    n = one.n
    for name in ("tier_code", "role_code", "region_code", "aggregate", "learn_need", "sessions"):
        assert np.array_equal(getattr(bulk, name)[:n], getattr(one, name)[:n], equal_nan=True), name
    for name in ("fold_w", "short_s"):
        assert np.array_equal(getattr(bulk.bank, name)[:n], getattr(one.bank, name)[:n]), name
    assert bulk.sessions[bulk.index["h-turn"]] == 40


async def test_attack_by_batch_opens_an_incident_with_its_top_sources(bus: Bus, tmp_path: Any) -> None:
    n = 200
    eng = learned_engine(n)
    now = [T0]
    svc = make_service(bus, tmp_path, eng, lambda: now[0])
    got: list[IncidentEvent] = []
    sub = await collect_incidents(bus, got)
    await svc.start()
    try:
        for s in range(12):
            at = T0 + dt.timedelta(seconds=s)
            for _, data, _ in encode_traffic(hosts_tick(n, at, flooded=s >= 4), 1, 16 * 1024):
                await publish_batch(bus, data)
            want = n * (s + 1)
            await wait_for(lambda: svc.stats["ticks"] >= want)  # noqa: B023
            now[0] = at + dt.timedelta(seconds=3)
            await svc.step(now[0])
        await wait_for(lambda: any(e.event == "opened" for e in got), 10)
    finally:
        await sub.unsubscribe()
        await svc.stop()
        svc.db.dispose()
    opened = [e for e in got if e.event == "opened"]
    assert [e.incident.target_id for e in opened] == ["media-h000017"]
    inc = opened[0].incident
    assert inc.host == "198.51.100.18" and inc.tier.value == "media"
    assert {s.source for s in inc.top_sources} == set(ATTACKERS)
    assert inc.top_prefixes[0].source == "192.0.2.0/24"
    assert eng.stats.malformed == 0 and svc.stats["batches"] >= 12
