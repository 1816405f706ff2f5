"""The pieces of sharded baseline workers, without processes: partitioning, fair shares, the
engine's ownership hook, moving a partition's rows and incidents between engines, and the shard
rows in the database (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

import pytest
import yaml

from voxguard.baseline.engine import DetectionEngine
from voxguard.baseline.shards import fair_share
from voxguard.baseline.shardstate import adopt_incidents, drop_incidents, export_rows, import_rows, incidents_of
from voxguard.baseline.store import BaselineStore
from voxguard.ingest.service import encode_ticks
from voxguard.shared.config import Tier, VoxGuardConfig, example_config_path, parse_config
from voxguard.shared.db import make_engine
from voxguard.shared.messages import IncidentEvent, TrafficTick
from voxguard.shared.partition import partition_of, traffic_subject

T0 = dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.UTC)  # a Monday


def quick_config() -> VoxGuardConfig:
    """The example platform with a one-minute short-term baseline and quick resolution."""
    doc = yaml.safe_load(example_config_path().read_text())
    for tier in doc["tiers"].values():
        tier["baseline"] = {**tier.get("baseline", {}), "short_term_minutes": 1, "learning_days": 0}
    doc["tiers"]["sbc"]["detection"]["vectors"]["sip_flood"] = {"ratio": 5, "quiet_ticks": 3}
    return parse_config(doc)


def tick(target: str, second: int, packets: int, host: str | None = None) -> TrafficTick:
    return TrafficTick(
        tier=Tier.SBC, target_id=target, target=f"{target} udp/5060", component="sbc-eu-1", host=host,
        protocol="udp", ports="5060", role="signalling", region="eu-west",
        tick_start=T0 + dt.timedelta(seconds=second), tick_seconds=1.0, bytes=packets * 500, packets=packets,
        flows=max(1, packets // 2), distinct_sources=5 if packets < 500 else 300,
    )  # fmt: skip


def play(engine: DetectionEngine, targets: list[str], seconds: range, flood: set[str]) -> list[IncidentEvent]:
    events: list[IncidentEvent] = []
    for s in seconds:
        engine.observe([tick(t, s, 2000 if t in flood and s >= 40 else 100, host=t) for t in targets])
        events += engine.advance(T0 + dt.timedelta(seconds=s + 3)).events
    return events


def test_partitions_are_stable_and_spread() -> None:
    ids = [f"media-{i:012x}" for i in range(4000)]
    counts = Counter(partition_of(t, 8) for t in ids)
    assert set(counts) == set(range(8)) and min(counts.values()) > 400
    assert partition_of("sbc-0123456789ab", 8) == partition_of("sbc-0123456789ab", 8)
    assert all(partition_of(t, 1) == 0 for t in ids[:10])
    assert traffic_subject("media", "media-1", host=None, shards=8) == "voxguard.traffic.v1.media"
    assert traffic_subject("media", "media-1", host="198.51.100.2", shards=1) == "voxguard.traffic.v1.media"
    k = partition_of("media-1", 8)
    assert traffic_subject("media", "media-1", host="198.51.100.2", shards=8) == f"voxguard.traffic.v1.media.{k}"


def test_collector_publishes_host_ticks_on_their_partition() -> None:
    comp = {"tier": "media", "target_id": "media-aaa", "host": None, "id": "1"}
    host = {"tier": "media", "target_id": "media-bbb", "host": "198.51.100.2", "id": "2"}
    assert [s for s, _, _ in encode_ticks([comp, host])] == ["voxguard.traffic.v1.media"] * 2
    subjects = [s for s, _, _ in encode_ticks([comp, host], 4)]
    assert subjects == ["voxguard.traffic.v1.media", f"voxguard.traffic.v1.media.{partition_of('media-bbb', 4)}"]


@pytest.mark.parametrize("shards,workers", [(4, 2), (4, 3), (16, 5), (3, 4), (1, 1)])
def test_fair_share_covers_every_partition_once(shards: int, workers: int) -> None:
    names = [f"w{i}" for i in range(workers)]
    quotas = [fair_share(shards, names, w) for w in names]
    assert sum(quotas) == shards and max(quotas) - min(quotas) <= 1


def test_only_owned_targets_get_incidents() -> None:
    cfg = quick_config()
    targets = ["sbc-h1", "sbc-h2"]
    everyone, only_h2 = DetectionEngine(cfg), DetectionEngine(cfg)
    only_h2.set_owner(lambda tid: tid == "sbc-h2")
    flood = set(targets)
    opened_all = {e.incident.target_id for e in play(everyone, targets, range(60), flood) if e.event == "opened"}
    opened_h2 = {e.incident.target_id for e in play(only_h2, targets, range(60), flood) if e.event == "opened"}
    assert opened_all == {"sbc-h1", "sbc-h2"}
    assert opened_h2 == {"sbc-h2"}
    # the other target is still learned: the owner hook changes decisions, not learning
    b1, b2 = everyone.baseline("sbc-h1"), only_h2.baseline("sbc-h1")
    assert b1 is not None and b2 is not None and b1["learned_seconds"] == b2["learned_seconds"] > 0


def test_a_partition_moves_with_its_rows_and_open_incident() -> None:
    cfg = quick_config()
    targets = [f"sbc-h{i}" for i in range(12)]
    shards = 3
    k = partition_of("sbc-h0", shards)
    mine = [t for t in targets if partition_of(t, shards) == k]
    old = DetectionEngine(cfg)
    events = play(old, targets, range(50), {"sbc-h0"})
    inc = next(e.incident for e in events if e.event == "opened")
    assert inc.target_id == "sbc-h0"

    def in_k(tid: str) -> bool:
        return partition_of(tid, shards) == k

    data = export_rows(old, in_k)
    handed = incidents_of(old, in_k)
    assert [d["id"] for d in handed] == [inc.id]

    new = DetectionEngine(cfg)
    new.set_owner(in_k)
    assert import_rows(new, data) == len(mine) + sum(1 for td in cfg.iter_targets() if in_k(td.id))
    assert adopt_incidents(new, handed) == [inc.id]
    for t in mine:
        assert new.baseline(t) == old.baseline(t)
    assert not {t for t in targets if t not in mine} & {r["id"] for r in new.targets()}
    # the new owner continues the incident: updates and resolution under the same id, no second one
    later = play(new, targets, range(50, 80), {"sbc-h0"})
    later += play(new, targets, range(80, 125), set())  # the vectors found resolve after 30 quiet ticks
    mine_events = [e for e in later if e.incident.target_id == "sbc-h0"]
    assert mine_events and {e.incident.id for e in mine_events} == {inc.id}
    assert "opened" not in [e.event for e in mine_events] and mine_events[-1].event == "resolved"
    # a row the new owner learned more recently is kept over an older hand-over
    other = next(t for t in mine if t != "sbc-h0")
    before = new.baseline(other)
    assert before is not None and before != old.baseline(other)
    import_rows(new, data)
    assert new.baseline(other) == before
    # giving the partition up forgets its open incidents
    play(old, targets, range(50, 52), {"sbc-h0"})
    assert drop_incidents(old, in_k) == [inc.id] and old.open_incidents() == []


def test_import_rows_refuses_other_bytes() -> None:
    engine = DetectionEngine(quick_config())
    with pytest.raises(ValueError, match="not a shard rows export"):
        import_rows(engine, b"not a zip")
    with pytest.raises(ValueError, match="not a shard rows export"):
        import_rows(engine, engine.export_state())


def test_shard_rows_in_the_database(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        store = BaselineStore(engine)
        store.migrate()
        assert store.load_shard("0/4") is None
        cfg = quick_config()
        eng = DetectionEngine(cfg)
        events = play(eng, ["sbc-h0", "sbc-h1"], range(50), {"sbc-h0"})
        opened = [e for e in events if e.event == "opened"]
        assert opened
        open_now: list[dict[str, Any]] = incidents_of(eng, lambda _t: True)
        store.record_events(opened, {"0/4": ("worker-a", open_now)})
        saved = store.load_shard("0/4")
        assert saved is not None and saved.worker == "worker-a" and saved.state is None
        assert [d["id"] for d in saved.incidents] == [e.incident.id for e in opened]
        store.save_shard("0/4", "worker-b", state=export_rows(eng, lambda _t: True), incidents=[], at=T0)
        saved = store.load_shard("0/4")
        assert saved is not None and saved.worker == "worker-b" and saved.incidents == []
        assert saved.state is not None and import_rows(DetectionEngine(cfg), saved.state) >= 2
        assert [v.id for v in store.open_incidents()] == [e.incident.id for e in opened]
        recent = store.events_since(opened[0].ts - dt.timedelta(seconds=1))
        assert [(e.id, e.event, e.incident.id) for e in recent] == [(e.id, e.event, e.incident.id) for e in opened]
        assert store.events_since(opened[-1].ts + dt.timedelta(seconds=1)) == []
    finally:
        engine.dispose()
