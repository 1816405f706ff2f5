"""Minute buckets, series queries, targets and engine state on SQLite, PostgreSQL and TimescaleDB."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from sqlalchemy import Engine, text

from voxguard.baseline import timescale
from voxguard.baseline.store import BaselineStore, minute_floor, rate_arrays, rates
from voxguard.shared.db import current_revision

T0 = dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.UTC)  # a Monday


def _row(tid: str, minute: int, packets: float, seconds: float = 60.0) -> dict[str, object]:
    return {
        "target_id": tid,
        "bucket": T0 + dt.timedelta(minutes=minute),
        "ticks": int(seconds),
        "seconds": seconds,
        "packets": packets,
        "bytes": packets * 200,
        "distinct_sources": 10.0 * seconds,
    }


@pytest.fixture
def store(store_engine: Engine) -> BaselineStore:
    s = BaselineStore(store_engine)
    s.migrate()
    return s


def test_migrations_reach_head_and_detect_timescale(store: BaselineStore, store_engine: Engine) -> None:
    assert current_revision(store_engine, "baseline") == "baseline_0003"
    with store_engine.connect() as conn:
        ext = timescale.available(conn)
    assert store.timescale == ext
    assert store.backend in ("sqlite", "postgresql", "timescaledb")
    if store_engine.dialect.name == "sqlite":
        assert store.backend == "sqlite"
    store.migrate()  # idempotent


def test_timescale_objects_created(timescale_db: Engine) -> None:
    store = BaselineStore(timescale_db)
    store.migrate()
    assert store.timescale and store.backend == "timescaledb"
    with timescale_db.connect() as conn:
        views = conn.execute(
            text("SELECT view_name FROM timescaledb_information.continuous_aggregates WHERE view_name = :v"),
            {"v": timescale.HOURLY},
        ).all()
        assert views
        procs = {p for p, _ in timescale.policies(conn)}
        assert {"policy_compression", "policy_retention", "policy_refresh_continuous_aggregate"} <= procs
        comp = conn.scalar(
            text("SELECT compression_enabled FROM timescaledb_information.hypertables WHERE hypertable_name = :t"),
            {"t": timescale.MINUTES},
        )
        assert comp is True


def test_additive_upsert_and_series(store: BaselineStore) -> None:
    rows = [_row("sbc-a", m, 600.0 * (1 + m % 5)) for m in range(120)] + [_row("sbc-b", 0, 1.0)]
    assert store.add_minutes(rows) == 121
    # the same minute again, half-observed: sums add up, coverage too
    store.add_minutes([_row("sbc-a", 0, 300.0, seconds=30.0)])
    raw = store.minute_sums("sbc-a", T0, T0 + dt.timedelta(hours=2))
    assert len(raw["minutes"]) == 120
    assert raw["packets"][0] == 900.0 and raw["seconds"][0] == 90.0
    assert raw["minutes"][1] - raw["minutes"][0] == 60

    pts = store.series("sbc-a", T0, T0 + dt.timedelta(hours=2), 900)
    assert [p.start for p in pts] == [T0 + dt.timedelta(minutes=15 * i) for i in range(8)]
    first = pts[0].values
    assert first["seconds"] == 15 * 60 + 30
    assert first["packets"] == pytest.approx(sum(600.0 * (1 + m % 5) for m in range(15)) + 300.0)
    r = rates(first)
    assert r["packets"] == pytest.approx(first["packets"] / first["seconds"])
    assert r["bytes_per_packet"] == pytest.approx(first["bytes"] / first["packets"])
    assert r["distinct_sources"] == pytest.approx(10.0)

    hourly = store.series("sbc-a", T0, T0 + dt.timedelta(hours=2), 3600)
    assert len(hourly) == 2
    assert hourly[1].values["packets"] == pytest.approx(sum(600.0 * (1 + m % 5) for m in range(60, 120)))
    assert store.series("sbc-a", T0 - dt.timedelta(days=1), T0, 60) == []
    with pytest.raises(ValueError):
        store.series("sbc-a", T0, T0 + dt.timedelta(hours=1), 90)


def test_series_alignment_is_the_same_everywhere(store: BaselineStore) -> None:
    # 09:07 start with hourly steps: buckets start at whole hours (Monday-origin), not at 09:07
    store.add_minutes([_row("x", m, 60.0) for m in range(0, 180, 7)])
    pts = store.series("x", T0 + dt.timedelta(minutes=7), T0 + dt.timedelta(hours=3), 3600)
    assert [p.start.minute for p in pts] == [0, 0, 0]
    assert pts[0].start == T0


def test_rate_arrays_mark_gaps() -> None:
    sums = {
        "seconds": np.array([60.0, 0.0]),
        "ticks": np.array([60.0, 0.0]),
        "packets": np.array([120.0, 0.0]),
        "bytes": np.array([12000.0, 0.0]),
        "distinct_sources": np.array([600.0, 0.0]),
        **{c: np.zeros(2) for c in ("flows", "new_connections", "icmp_packets", "long_lived_flows")},
        **{c: np.zeros(2) for c in ("sip_invite", "sip_register", "sip_options", "sip_bye", "sip_other")},
        **{c: np.zeros(2) for c in ("sip_scanner_packets", "sip_malformed_packets", "odd_size_packets")},
    }
    r = rate_arrays(sums)
    assert r["packets"][0] == 2.0 and np.isnan(r["packets"][1])
    assert r["bytes_per_packet"][0] == 100.0 and np.isnan(r["bytes_per_packet"][1])
    assert r["distinct_sources"][0] == 10.0
    assert rates({"seconds": 0.0, "packets": 5.0}) == {}  # an outage gives no rates, not zeros


def test_targets_registry(store: BaselineStore) -> None:
    t = {"id": "sbc-1", "tier": "sbc", "name": "sbc-eu-1 udp/5060", "component": "sbc-eu-1", "protocol": "udp",
         "ports": "5060", "role": "signalling", "region": "eu-west"}  # fmt: skip
    store.upsert_targets([t], T0)
    store.upsert_targets([t], T0 + dt.timedelta(hours=1))
    store.upsert_targets([t], T0 - dt.timedelta(hours=1))  # late, out of order: last_seen keeps the max
    rows = store.targets()
    assert len(rows) == 1
    assert rows[0].first_seen == T0 and rows[0].last_seen == T0 + dt.timedelta(hours=1)
    assert store.target("sbc-1") is not None and store.target("nope") is None
    assert store.targets(tier="media") == []


def test_targets_registry_in_bulk_keeps_nulls_quotes_and_renames(store: BaselineStore) -> None:
    """Per-host targets arrive 100,000 at a time: the bulk path (more rows than one statement
    batch) must keep NULLs, odd characters and a renamed target as the ORM would."""
    # the WASM TimescaleDB test server aborts on a protocol message over ~64 KB (one statement of
    # ~1,000 targets); real PostgreSQL takes the full size here, TimescaleDB the same SQL smaller
    n = 500 if store.timescale else 12_500
    hosts = [{"id": f"media-h{i:06d}", "tier": "media", "name": f"media-gw-eu host 10.0.{i // 250}.{i % 250}",
              "component": "media-gw-eu", "host": f"10.0.{i // 250}.{i % 250}", "protocol": "udp",
              "ports": None, "role": "media", "region": None} for i in range(n)]  # fmt: skip
    hosts[7]["name"] = 'odd "quoted" \\ name, {with} braces'
    store.upsert_targets(hosts, T0)
    store.upsert_targets([{**hosts[3], "name": "renamed"}], T0 + dt.timedelta(minutes=1))
    rows = {r.id: r for r in store.targets(tier="media")}
    assert len(rows) == n
    assert rows["media-h000007"].name == hosts[7]["name"]
    assert rows["media-h000003"].name == "renamed" and rows["media-h000003"].last_seen == T0 + dt.timedelta(minutes=1)
    assert rows["media-h000003"].first_seen == T0
    last = rows[f"media-h{n - 1:06d}"]
    assert last.host == hosts[-1]["host"] and last.ports is None and last.region is None and last.last_seen == T0


def test_engine_state_roundtrip(store: BaselineStore) -> None:
    assert store.load_state() is None
    store.save_state(b"\x00one", T0)
    store.save_state(b"\x00two" * 1000, T0 + dt.timedelta(minutes=5))
    data, at = store.load_state() or (b"", T0)
    assert data == b"\x00two" * 1000 and at == T0 + dt.timedelta(minutes=5)


def test_minute_floor() -> None:
    t = dt.datetime(2026, 1, 1, 10, 5, 59, 999, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert minute_floor(t) == dt.datetime(2026, 1, 1, 8, 5, tzinfo=dt.UTC)


def test_retention_without_timescale(store: BaselineStore) -> None:
    store.add_minutes([_row("old", m, 1.0) for m in range(10)])
    assert store.delete_minutes_before(T0 + dt.timedelta(minutes=4)) == 4
    assert len(store.minute_sums("old", T0, T0 + dt.timedelta(hours=1))["minutes"]) == 6


def test_ids_with_quotes_and_commas_survive(store: BaselineStore) -> None:
    odd = 'we"ird,id\\x'
    store.add_minutes([_row(odd, 0, 5.0)])
    assert store.minute_sums(odd, T0, T0 + dt.timedelta(minutes=1))["packets"].tolist() == [5.0]
