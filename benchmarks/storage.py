"""Storage benchmark: sustained minute-bucket writes for 100,000 targets on PostgreSQL.

Every minute the baseline service writes one row per active target (additive upsert). This
writes ``--minutes`` consecutive minute batches of ``--targets`` rows into a scratch schema,
then once more over the same minutes (the upsert path a restart or late ticks take), and prints
rows/s and seconds per minute-batch, plus the in-memory cost per target of the rollup and the
live window (tracemalloc) and, when the engine is importable, of its state.

    .venv/bin/python benchmarks/storage.py [--url postgresql://postgres@127.0.0.1:5432/test]
        [--targets 100000] [--minutes 10]
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import time
import tracemalloc
import uuid
from typing import Any

import numpy as np

from voxguard.baseline.models import MINUTE_VALUES
from voxguard.baseline.rollup import LiveWindow, MinuteRollup
from voxguard.baseline.store import BaselineStore
from voxguard.shared.config import Tier
from voxguard.shared.db import make_engine
from voxguard.shared.messages import TrafficTick

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def minute_values(n: int, rng: np.random.Generator) -> np.ndarray:
    v = rng.gamma(2.0, 50.0, size=(n, len(MINUTE_VALUES)))
    v[:, 0] = 60
    v[:, 1] = 60.0
    return v


def write_benchmark(url: str, targets: int, minutes: int) -> dict[str, Any]:
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = make_engine(url)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in url else "?"
    engine = make_engine(f"{url}{sep}options=-csearch_path%3D{schema},public")
    try:
        store = BaselineStore(engine)
        store.migrate()
        rng = np.random.default_rng(1)
        tids = [f"bench-{i:07d}" for i in range(targets)]
        t0 = int(dt.datetime(2026, 11, 23, tzinfo=dt.UTC).timestamp())
        per_batch: list[float] = []
        upsert: list[float] = []
        for rnd, times in ((0, per_batch), (1, upsert)):
            for m in range(minutes):
                vals = minute_values(targets, rng)
                mins = np.full(targets, t0 + 60 * m, dtype=np.int64)
                started = time.perf_counter()
                store.add_minute_block(tids, mins, vals)
                times.append(time.perf_counter() - started)
                print(f"  {'insert' if rnd == 0 else 'upsert'} minute {m + 1}/{minutes}: {times[-1]:.2f} s", flush=True)
        with engine.connect() as conn:
            size = conn.exec_driver_sql("SELECT pg_total_relation_size('baseline_minutes')").scalar()
            rows = conn.exec_driver_sql("SELECT count(*) FROM baseline_minutes").scalar()
        return {
            "backend": store.backend,
            "rows": int(rows or 0),
            "insert_s_per_minute": statistics.median(per_batch),
            "upsert_s_per_minute": statistics.median(upsert),
            "insert_rows_per_s": targets / statistics.median(per_batch),
            "upsert_rows_per_s": targets / statistics.median(upsert),
            "bytes_per_row": int(size or 0) / max(1, int(rows or 0)),
        }
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


def memory_benchmark(targets: int) -> dict[str, float]:
    """Bytes per target of one open minute in the rollup and of a full live window ring."""
    base = dt.datetime(2026, 11, 23, tzinfo=dt.UTC)
    tick = TrafficTick(tier=Tier.SBC, target_id="x", target="x", component="c", protocol="udp", role="signalling",
                       tick_start=base, tick_seconds=1.0, bytes=1000, packets=10, flows=2)  # fmt: skip
    ticks = [tick.model_copy(update={"target_id": f"bench-{i:07d}"}) for i in range(targets)]
    tracemalloc.start()
    rollup = MinuteRollup()
    before = tracemalloc.get_traced_memory()[0]
    for t in ticks:
        rollup.add(t)
    rollup_bytes = (tracemalloc.get_traced_memory()[0] - before) / targets
    n_live = min(targets, 200)  # the ring is preallocated: a few targets give the per-target cost
    live = LiveWindow(seconds=900, max_targets=n_live)
    before = tracemalloc.get_traced_memory()[0]
    for i in range(n_live):
        live.add(ticks[i])
    live_bytes = (tracemalloc.get_traced_memory()[0] - before) / n_live
    tracemalloc.stop()
    out = {"rollup_bytes_per_target": rollup_bytes, "live_window_bytes_per_target": live_bytes}
    try:
        from voxguard.baseline.engine import DetectionEngine
        from voxguard.shared.config import example_config_path, load_config

        out["engine_bytes_per_target"] = float(DetectionEngine(load_config(example_config_path())).memory_per_target())
    except Exception as exc:  # the engine is another module's; report without it
        print(f"  (engine memory not measured: {exc!r})")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default=DEFAULT_URL)
    ap.add_argument("--targets", type=int, default=100_000)
    ap.add_argument("--minutes", type=int, default=10)
    ap.add_argument("--memory-targets", type=int, default=100_000)
    args = ap.parse_args()
    print(f"minute-bucket writes: {args.targets} targets x {args.minutes} minutes on {args.url}")
    w = write_benchmark(args.url, args.targets, args.minutes)
    print(
        f"{w['backend']}: insert {w['insert_s_per_minute']:.2f} s per minute-batch "
        f"({w['insert_rows_per_s']:,.0f} rows/s); "
        f"upsert {w['upsert_s_per_minute']:.2f} s ({w['upsert_rows_per_s']:,.0f} rows/s); "
        f"{w['rows']} rows, {w['bytes_per_row']:.0f} B/row on disk"
    )
    budget = 60.0 / max(w["insert_s_per_minute"], w["upsert_s_per_minute"])
    print(f"headroom: the write of one minute takes 1/{budget:.0f} of the minute")
    m = memory_benchmark(args.memory_targets)
    parts = ", ".join(f"{k.replace('_', ' ')}: {v:,.0f}" for k, v in m.items())
    print(f"memory per target: {parts}")


if __name__ == "__main__":
    main()
