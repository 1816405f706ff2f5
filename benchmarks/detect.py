"""Detection speed and memory of the baseline engine at 100,000 and 1,000,000 active targets.

Targets are synthetic (spread over the five tiers and their roles) with learned profiles; each
tick every target reports (the worst case: all active), 0.1 % of them under attack. Prints, per
size: time to register the targets, time per tick of ``observe_columns`` (the columnar input path)
and of ``advance`` (detectors over all targets, incidents, learning), the same for ``observe`` of
TrafficTick objects at the smaller size, and memory per target (numpy state and process RSS).
Single-threaded numpy: run with OMP/OPENBLAS threads at 1 for one-core figures.

    .venv/bin/python benchmarks/detect.py [--sizes 100000,1000000] [--ticks 5]
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from datetime import UTC, datetime

import numpy as np

from voxguard.baseline.engine import DetectionEngine
from voxguard.baseline.profile import NM, PPS, WEEK
from voxguard.shared.config import example_config_path, load_config
from voxguard.shared.messages import TrafficTick

KINDS = (("sbc", "signalling"), ("sbc", "tls"), ("sbc", "icmp"), ("registrar", "signalling"), ("media", "media"),
         ("turn", "relay"), ("api", "api"))  # fmt: skip
T0 = 1_700_438_400 + WEEK + 10 * 3600  # a Monday 10:00 UTC


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def build(n: int, rng: np.random.Generator) -> tuple[DetectionEngine, list[str], np.ndarray]:
    e = DetectionEngine(load_config(example_config_path()))
    ids = [f"bench-{i}" for i in range(n)]
    metas = [{"tier": KINDS[i % len(KINDS)][0], "name": tid, "component": f"c{i % 50}", "host": None,
              "region": "eu-west", "role": KINDS[i % len(KINDS)][1]} for i, tid in enumerate(ids)]  # fmt: skip
    e.register(ids, metas)  # as the baseline service registers a batch's new targets
    rows = np.array([e.index[t] for t in ids])
    base = rng.lognormal(3.0, 1.5, size=(n, NM)).astype(np.float32)
    b = e.bank
    b.level[:, rows, :] = np.log1p(base)[None, :, :].astype(np.float16)
    b.learned_s[rows] = 8 * 86_400.0
    b.spread[rows] = 0.2
    b.sx[rows] = 1.0
    b.se[rows] = 1.0
    return e, ids, base


def bench(n: int, ticks: int, with_objects: bool) -> None:
    rng = np.random.default_rng(7)
    r0 = rss_mb()
    t = time.perf_counter()
    e, ids, base = build(n, rng)
    t_build = time.perf_counter() - t
    r1 = rss_mb()
    obs_t: list[float] = []
    adv_t: list[float] = []
    events = 0
    attacked = rng.choice(n, max(1, n // 1000), replace=False)
    for k in range(ticks):
        vals = base * rng.normal(1.0, 0.05, size=base.shape).astype(np.float32)
        vals = np.maximum(vals, 0.0)
        if k >= 1:
            vals[attacked] *= 20.0
        when = datetime.fromtimestamp(T0 + k, UTC)
        t = time.perf_counter()
        e.observe_columns(when, ids, vals)
        obs_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        out = e.advance(datetime.fromtimestamp(T0 + k + 3, UTC))
        adv_t.append(time.perf_counter() - t)
        events += len(out.events)
    per = e.memory_per_target()
    print(f"\n== {n:,} active targets ==")
    print(f"register targets + profiles: {t_build:.1f} s (bulk register, as a batch of new hosts)")
    print(f"observe_columns per tick:    {1e3 * float(np.median(obs_t)):.0f} ms")
    print(f"advance (detect) per tick:   {1e3 * float(np.median(adv_t)):.0f} ms  (first {1e3 * adv_t[0]:.0f} ms)")
    print(f"incident events:             {events} for {len(attacked)} attacked targets")
    print(f"numpy state per target:      {per:,} B  ({per * n / 2**20:,.0f} MiB)")
    print(f"process RSS growth:          {(r1 - r0) * 2**20 / n:,.0f} B per target (incl. Python target table)")
    if with_objects:
        when = datetime.fromtimestamp(T0 + ticks, UTC)
        objs = [
            TrafficTick.model_construct(
                tier="media", target_id=tid, target=tid, component="c", host=None, protocol="udp", ports=None,
                role="media", region="eu-west", tick_start=when, tick_seconds=1.0, bytes=int(v[1]), packets=int(v[PPS]),
                flows=int(v[2]), new_connections=0, icmp_packets=0, long_lived_flows=0, distinct_sources=5,
                bytes_per_packet=0.0, size_histogram=[], top_sources=[], top_prefixes=[], sip_methods={},
                sip_scanner_packets=0, sip_malformed_packets=0, sip_sampled_packets=0, flow_records=0, sampled=False,
                exporters=[], id="x", ts=when, schema_version=1,
            )
            for tid, v in zip(ids, base, strict=True)
        ]  # fmt: skip
        t = time.perf_counter()
        e.observe(objs)
        t_obj = time.perf_counter() - t
        t = time.perf_counter()
        e.advance(datetime.fromtimestamp(T0 + ticks + 3, UTC))
        t_adv = time.perf_counter() - t
        print(f"observe(TrafficTick x {n:,}): {1e3 * t_obj:.0f} ms; its advance {1e3 * t_adv:.0f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--ticks", type=int, default=5)
    a = ap.parse_args()
    print(f"numpy {np.__version__}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    sizes = [int(s) for s in a.sizes.split(",") if s]
    for i, n in enumerate(sizes):
        bench(n, a.ticks, with_objects=i == 0 and n <= 200_000)


if __name__ == "__main__":
    main()
