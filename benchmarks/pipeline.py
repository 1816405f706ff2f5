"""The path from a published traffic tick to an incident event, at 10,000 and 100,000 host targets.

A real nats-server (from the wheel) and the real ``BaselineService`` (SQLite storage) run in this
process; a publisher process plays the collector: each tick it encodes N per-host media ticks from
columns with the collector's encoder (``batches.encode_batches``: packed ``TrafficBatch``
messages under the max payload) and publishes them as one burst with the tick manifest headers
(``shared.tickmanifest``), as the ingest service does. Every target has a learned baseline (set
as ``benchmarks/detect.py`` does); after a few normal ticks 0.1 % of the targets (at least 5)
are flooded (20x packets and bytes, many sources).

Per size it prints, per tick: encode and publish time (publisher), how long after the publish
started the consumer had observed every record of the tick, the detection step (``advance``)
time, and for the attack: the latency from the publish of the tick that opened each incident
(its ``opened_at``) to the ``opened`` event received on ``voxguard.incident.v1.>``, and from
the first attack tick. CPU seconds of the baseline process, the publisher and nats-server.

    .venv/bin/python benchmarks/pipeline.py [--sizes 10000,100000] [--normal 6] [--attack 6] [--grace 2]
                                            [--no-manifest]

A tick is decided as soon as the manifests say it is complete; ``--grace`` (in ticks, default 2
as in the service) is the engine's wait for ticks that are not (``--no-manifest``: every tick),
and then bounds the latency from below.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import resource
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

T_ATTACKERS = [f"203.0.113.{i}" for i in range(1, 11)]


def _metas(n: int) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        host = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
        out.append({"tier": "media", "target_id": f"media-h{i:07d}", "target": f"media-gw-eu host {host}",
                    "component": "media-gw-eu", "host": host, "protocol": "udp", "ports": "10000-20000",
                    "role": "media", "region": "eu-west"})  # fmt: skip
    return out


def _base(n: int) -> np.ndarray:
    """Per-target normal packets/s (bytes = 172 x packets)."""
    return np.random.default_rng(7).lognormal(4.0, 1.0, size=n)


# -- the publisher process -------------------------------------------------------------------------


def _tick_dicts(
    metas: list[dict[str, Any]], pk: list[int], k: int, ts: str, attacked: set[int]
) -> list[dict[str, Any]]:
    """One tick of ``TrafficTick``-shaped dicts, as ``TickAggregator.flush`` renders them."""
    now = datetime.now(UTC).isoformat()
    out = []
    for i, m in enumerate(metas):
        p = pk[i]
        srcs = [{"source": f"198.51.{j}.{i & 255}", "packets": p // 4, "bytes": p * 43} for j in range(3)]
        if i in attacked:
            srcs = [{"source": a, "packets": p // 10, "bytes": p * 17} for a in T_ATTACKERS]
        d = dict(m)
        d.update(schema_version=1, id=f"{k:04d}{i:08x}", ts=now, tick_start=ts, tick_seconds=1.0,
                 exporters=["edge-media-01"], bytes=p * 172, packets=p, flows=max(1, p // 50), new_connections=0,
                 icmp_packets=0, long_lived_flows=3, distinct_sources=len(srcs), bytes_per_packet=172.0,
                 size_histogram=[0, p, 0, 0, 0, 0], top_sources=srcs, top_prefixes=[], sip_methods={},
                 sip_scanner_packets=0, sip_malformed_packets=0, sip_sampled_packets=0, flow_records=p // 50,
                 sampled=False)  # fmt: skip
        out.append(d)
    return out


def publisher(url: str, ns: str, n: int, ticks: int, attack_from: int, start_at: float, manifest: bool, out: Any
              ) -> None:  # fmt: skip
    """Publish ``ticks`` ticks of ``n`` host targets from ``start_at`` on; report timings on ``out``.

    Per tick the per-host columns (numbers as numpy arrays, text built once) are encoded with the
    collector's encoder (``batches.encode_batches``: packed batches under the max payload) and
    published as one burst carrying the tick manifest (``--no-manifest``: without it, so the
    consumer waits for its grace)."""
    from voxguard.shared.batches import batch_subject, encode_batches, ticks_to_columns
    from voxguard.shared.bus import Bus
    from voxguard.shared.tickmanifest import manifest_headers

    metas = _metas(n)
    base = _base(n)
    attacked_ix = attacked_targets(n)
    attacked = np.array(sorted(attacked_ix))
    rng = np.random.default_rng(1)
    producer = f"bench-{os.getpid()}"

    async def run() -> None:
        bus = Bus(url, name="bench-publisher", namespace=ns)
        await bus.connect()
        limit = int(min(bus.nc.max_payload, 1024 * 1024) * 0.85)
        pk0 = np.maximum(1, base).astype(np.int64).tolist()
        cols: dict[str, Any] = ticks_to_columns(_tick_dicts(metas, pk0, 0, "", set()))
        normal_src = list(cols["top_sources"])
        attack_src = ";".join(f"{a} 1000 17000" for a in T_ATTACKERS)
        subject = batch_subject("media")
        for k in range(ticks):
            tick_start = start_at + k
            await asyncio.sleep(max(0.0, tick_start + 1.0 - time.time()))  # the tick closes, then publish
            t0 = time.time()
            pk = np.maximum(1, base * rng.normal(1.0, 0.05, n)).astype(np.int64)
            attack = k >= attack_from
            distinct = np.full(n, 3, np.int64)
            tops = normal_src
            if attack:
                pk[attacked] *= 20
                distinct[attacked] = len(T_ATTACKERS)
                tops = list(normal_src)
                for i in attacked_ix:
                    tops[i] = attack_src
            hist = np.zeros((n, 6), np.int64)
            hist[:, 1] = pk
            cols.update(packets=pk, bytes=pk * 172, flows=np.maximum(1, pk // 50), flow_records=pk // 50,
                        distinct_sources=distinct, size_histogram=hist, top_sources=tops)  # fmt: skip
            ts = datetime.fromtimestamp(tick_start, UTC).isoformat()
            encoded = encode_batches("media", ts, 1.0, cols, n, max_bytes=limit)
            payloads = [(subject, data, mid) for data, mid in encoded]
            headers = manifest_headers(producer, tick_start, [subject] * len(payloads)) if manifest else None
            t2 = time.time()
            await bus.publish_raw_many(payloads, timeout_s=30, headers=headers)
            t3 = time.time()
            out.put(("tick", tick_start, t0, t2, t2, t3, len(payloads), sum(len(d) for _, d, _ in payloads)))
        await bus.close()

    asyncio.run(run())
    ru = resource.getrusage(resource.RUSAGE_SELF)
    out.put(("cpu", ru.ru_utime + ru.ru_stime))


def attacked_targets(n: int) -> set[int]:
    """0.1 % of the targets, at least 5."""
    k = max(5, n // 1000)
    return set(range(0, n, n // k))


# -- the baseline side ------------------------------------------------------------------------------


def build_engine(n: int, grace: float) -> Any:
    from voxguard.baseline.engine import DetectionEngine
    from voxguard.baseline.profile import NM, PPS
    from voxguard.shared.config import example_config_path, load_config

    e = DetectionEngine(load_config(example_config_path()), grace_ticks=grace)
    for m in _metas(n):
        e._row(m["target_id"], {k: m[k] for k in ("tier", "component", "host", "region", "role")} | {
            "name": m["target"]}, aggregate=False)  # fmt: skip
    rows = np.array([e.index[m["target_id"]] for m in _metas(n)])
    base = _base(n)
    lvl = np.zeros((n, NM), np.float32)
    lvl[:, PPS] = base
    lvl[:, 1] = base * 172
    lvl[:, 2] = np.maximum(1, base // 50)
    lvl[:, 4] = 3
    lvl[:, 6] = 3
    b = e.bank
    b.level[:, rows, :] = np.log1p(lvl)[None, :, :].astype(np.float16)
    b.learned_s[rows] = 8 * 86_400.0
    b.spread[rows] = 0.2
    b.sx[rows] = 1.0
    b.se[rows] = 1.0
    return e


def cpu_of(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


async def bench(n: int, normal: int, attack: int, grace: float, manifest: bool, url: str, tmp: Path,
                server_pid: int | None) -> None:  # fmt: skip
    from voxguard.baseline.service import BaselineService
    from voxguard.shared.bus import default_streams
    from voxguard.shared.config import example_config_path, load_config
    from voxguard.shared.db import make_engine
    from voxguard.shared.runtime import ServiceContext
    from voxguard.shared.settings import Settings

    ns = f"bench{n}"
    settings = Settings(nats_namespace=ns, baseline_shards=1)
    ctx = ServiceContext(settings, load_config(example_config_path()), url)
    await ctx.bus.connect()
    await ctx.bus.delete_streams()
    await ctx.bus.ensure_streams(default_streams(traffic_max_age_s=120, traffic_max_bytes=1024**3))
    t = time.perf_counter()
    eng = build_engine(n, grace)
    print(
        f"\n== {n:,} host targets per tick (engine ready in {time.perf_counter() - t:.1f} s, grace {grace:g} ticks, "
        f"tick manifests {'on' if manifest else 'off'}) =="
    )
    db = make_engine(f"sqlite:///{tmp}/baseline-{n}.db")
    svc = BaselineService(ctx, engine=eng, db=db, snapshot_interval_s=1e9)
    # as after a restart: the engine has learned the targets and the service's database lists them
    svc.store.migrate()
    svc.store.upsert_targets([{"id": m["target_id"], "name": m["target"]} | m for m in _metas(n)], datetime.now(UTC))

    observed: dict[float, list[float]] = {}  # tick_start -> [records, time all seen]
    orig_batch = svc._on_batch

    async def on_batch(cols: Any, delivery: Any) -> None:
        await orig_batch(cols, delivery)
        o = observed.setdefault(cols.tick_start.timestamp(), [0, 0.0])
        o[0] += cols.n
        o[1] = time.time()

    setattr(svc, "_on_batch", on_batch)  # noqa: B010  (timing hook)
    steps: list[tuple[float, float, list[float]]] = []  # (wall end, seconds, tick times processed)
    orig_advance = eng.advance

    def advance(now: datetime, ready_through: float | None = None) -> Any:
        cut = now.timestamp() - eng.grace * eng.dt
        pending = [k for k in eng.pending_ticks() if k < cut or (ready_through is not None and k <= ready_through)]
        t0 = time.perf_counter()
        out = orig_advance(now, ready_through)
        steps.append((time.time(), time.perf_counter() - t0, pending))
        return out

    setattr(eng, "advance", advance)  # noqa: B010  (timing hook)
    events: list[tuple[float, Any]] = []

    async def on_event(msg: Any) -> None:
        import orjson

        events.append((time.time(), orjson.loads(msg.data)))

    ev_sub = await ctx.bus.nc.subscribe(ctx.bus.wire_subject("voxguard.incident.v1.>"), cb=on_event)
    await svc.start()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    srv0 = cpu_of(server_pid) if server_pid else 0.0
    start_at = float(int(time.time()) + 2)
    ticks = normal + attack
    q: Any = mp.get_context("spawn").Queue()
    proc = mp.get_context("spawn").Process(target=publisher, args=(url, ns, n, ticks, normal, start_at, manifest, q))
    proc.start()
    pubs: dict[float, tuple[float, ...]] = {}
    pub_cpu = 0.0
    deadline = time.time() + ticks + 60
    while time.time() < deadline:
        try:
            item = await asyncio.to_thread(q.get, True, 1.0)
        except Exception:
            if not proc.is_alive():
                break
            continue
        if item[0] == "tick":
            pubs[item[1]] = item[2:]
        else:
            pub_cpu = item[1]
            break
    await asyncio.sleep(4 * grace + 2)  # the last ticks' steps
    proc.join(10)
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    srv1 = cpu_of(server_pid) if server_pid else 0.0
    await ev_sub.unsubscribe()
    await svc.stop()
    db.dispose()
    print("tick  fill+encode ms  -  publish ms  msgs   MiB   observed after publish start ms   step ms")
    step_of: dict[float, float] = {}
    step_end: dict[float, float] = {}
    for end, secs, pend in steps:
        for tk in pend:
            step_of[tk] = secs
            step_end[tk] = end
    for k, tk in enumerate(sorted(pubs)):
        t0, t1, t2, t3, msgs, size = pubs[tk]
        o = observed.get(tk, [0, float("nan")])
        seen = f"{1e3 * (o[1] - t2):8.0f}" if o[0] >= n else f"only {o[0]:,}"
        mark = " attack" if k >= normal else ""
        print(f"{k:4d}  {1e3 * (t1 - t0):8.0f}  {1e3 * (t2 - t1):9.0f}  {1e3 * (t3 - t2):10.0f}  {msgs:4d}  "
              f"{size / 2**20:5.1f}   {seen:>30}   {1e3 * step_of.get(tk, float('nan')):7.0f}{mark}")  # fmt: skip
    opened = [(t, e) for t, e in events if e.get("event") == "opened"]
    first_attack = sorted(pubs)[normal] if len(pubs) > normal else None
    lat, lat_first = [], []
    for t, e in opened:
        ot = datetime.fromisoformat(e["incident"]["opened_at"]).timestamp()
        if ot in pubs:
            lat.append(t - pubs[ot][2])
        if first_attack is not None:
            lat_first.append(t - pubs[first_attack][2])
    n_att = len(attacked_targets(n))
    tops = sum(1 for _, e in opened if {s["source"] for s in e["incident"]["top_sources"]} & set(T_ATTACKERS))
    print(f"incidents opened: {len(opened)} for {n_att} attacked targets; with the attackers as top sources: {tops}")
    if lat:
        med, mx = 1e3 * statistics.median(lat), 1e3 * max(lat)
        print(f"opened event after the publish of the tick that opened it: median {med:.0f} ms, max {mx:.0f} ms")
        med, mx = 1e3 * statistics.median(lat_first), 1e3 * max(lat_first)
        print(f"opened event after the publish of the first attack tick:   median {med:.0f} ms, max {mx:.0f} ms")
    steady = [s for _, s, p in steps if p]
    if steady:
        print(
            f"detection step (advance): median {1e3 * statistics.median(steady):.0f} ms, max {1e3 * max(steady):.0f} ms"
        )
    wall = ticks + 4 * grace + 2
    base_cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    print(f"CPU seconds over {ticks} ticks (~{wall:.0f} s wall): baseline process {base_cpu:.1f}, "
          f"publisher {pub_cpu:.1f}, nats-server {srv1 - srv0:.1f}")  # fmt: skip
    print(f"service stats: {svc.stats}; engine malformed {eng.stats.malformed}, late {eng.stats.late}")
    await ctx.bus.delete_streams()
    await ctx.bus.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--normal", type=int, default=6, help="normal ticks before the attack")
    ap.add_argument("--attack", type=int, default=6, help="attack ticks")
    ap.add_argument("--grace", type=float, default=2.0, help="engine grace in ticks (service default 2)")
    ap.add_argument("--no-manifest", action="store_true", help="publish without tick manifests (decide after grace)")
    a = ap.parse_args()
    from voxguard.shared.natsserver import NatsServer

    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}, load {os.getloadavg()[0]:.1f}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="vg-pipeline-") as d:
        tmp = Path(d)
        with NatsServer(tmp / "nats") as server:
            for n in (int(s) for s in a.sizes.split(",") if s):
                asyncio.run(bench(n, a.normal, a.attack, a.grace, not a.no_manifest, server.url, tmp, server.pid))


if __name__ == "__main__":
    main()
