"""Simulator throughput: prints figures, asserts nothing.

1. totals fast path: 7 days x 86,400 s of per-target per-second totals for the example config
   (what ``voxguard backfill --days 7`` needs), in hour chunks; the target is well under 60 s.
2. flows path: per-second flow rows at a weekday peak (what the sender encodes), seconds/second.
3. sender: encode (router flow cache + NetFlow v9 / IPFIX / sFlow) without sockets, per second.

    .venv/bin/python benchmarks/simulate.py [--days 7] [--scale 1.0] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

from voxguard.ingest.simulate.model import ModelParams, TrafficModel
from voxguard.ingest.simulate.sender import _Exporter, _plan
from voxguard.shared.config import example_config_path, load_config

MONDAY = 1_700_438_400  # 2023-11-20 00:00 UTC


def bench_totals(model: TrafficModel, days: float) -> float:
    seconds = int(days * 86_400)
    t = time.perf_counter()
    packets = 0.0
    targets = 0
    for chunk in model.iter_totals(MONDAY, seconds, chunk=3600):
        targets = len(chunk.targets)
        packets += sum(float(tt.packets.sum()) for tt in chunk.targets if tt.target.host is None)
    took = time.perf_counter() - t
    print(f"totals: {days:g} days x 86,400 s, {targets} targets (with per-host) in {took:.1f} s "
          f"({seconds / took:,.0f} simulated s/s); {packets:,.0f} packets")  # fmt: skip
    return took


def bench_flows(model: TrafficModel, seconds: int) -> None:
    t0 = MONDAY + 9 * 3600 + 1800
    model.second(t0 - 1)  # warm the hour's session tables
    t = time.perf_counter()
    rows = sum(len(sf) for sf in model.seconds(t0, seconds))
    took = time.perf_counter() - t
    print(f"flows: {seconds} s at Monday peak, {rows / seconds:,.0f} flow rows/s, {took / seconds * 1000:.1f} ms "
          f"per simulated second")  # fmt: skip


def bench_encode(model: TrafficModel, seconds: int) -> None:
    stats, target_exp = _plan(model.config, model, None, None)
    exporters = [_Exporter(s, i + 1, sampling=64, netflow_sampling=1, header_bytes=512, seed=0, boot=MONDAY)
                 for i, s in enumerate(stats)]  # fmt: skip
    t0 = MONDAY + 9 * 3600 + 1800
    warm = 75  # past the active timeout, so that the flow caches export in steady state
    secs = [model.second(t0 + i) for i in range(warm + seconds)]
    dgrams = 0
    t = 0.0
    for i, sf in enumerate(secs):
        if i == warm:
            t, dgrams = time.perf_counter(), 0
        ex = target_exp[sf.target]
        for j, e in enumerate(exporters):
            dgrams += len(e.encode(sf.flows[ex == j], t0 + i))
    took = time.perf_counter() - t
    print(f"encode: {dgrams / seconds:,.0f} datagrams/s, {took / seconds * 1000:.1f} ms per simulated second "
          f"({', '.join(f'{s.name}={s.format}' for s in stats)})")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--days", type=float, default=7.0)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--seconds", type=int, default=20, help="seconds for the flows and encode figures")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    config = load_config(example_config_path())
    model = TrafficModel(config, seed=1, params=ModelParams(scale=args.scale))
    prof = cProfile.Profile() if args.profile else None
    if prof:
        prof.enable()
    took = bench_totals(model, args.days)
    if prof:
        prof.disable()
        pstats.Stats(prof).sort_stats("cumulative").print_stats(15)
    print(f"totals target: 7 days < 60 s -> {'OK' if took * 7 / args.days < 60 else 'TOO SLOW'}")
    bench_flows(model, args.seconds)
    bench_encode(model, args.seconds)


if __name__ == "__main__":
    main()
