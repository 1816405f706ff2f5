"""Collector throughput, side by side with nfcapd: prints figures, asserts nothing.

usage: .venv/bin/python benchmarks/ingest.py [--rate RECORDS_PER_S ...] [--seconds S] [--no-nfcapd]
       .venv/bin/python benchmarks/ingest.py --tick-close [--hosts 10000,100000] [--shards 1]

1. pipeline: decode + classify + aggregate of dense NetFlow v9 datagrams, no sockets (one core).
2. collector: the real thing on loopback - UDP receive thread, decode, classify, aggregate, and
   publish of the ticks to a real NATS server - pinned to CPU 0, while a sender process pinned
   to CPU 1 replays the datagrams at a fixed record rate for a fixed time. Loss is what the
   pipeline did not receive of what was sent (kernel receive-buffer drops included).
3. nfcapd (nfdump 1.7, Debian) on the same port, CPU and replay: records written to its file.
4. tick close (``--tick-close``): the collector's work to close one tick of 10,000 and 100,000
   active per-host targets and encode it for NATS (``Pipeline.flush`` + ``encode_traffic``).

Traffic is addressed to 127.0.0.1 only and every run stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry

from voxguard.ingest.closedtick import ClosedTick
from voxguard.ingest.collector import Collector
from voxguard.ingest.decode.flows import addr_to_halves, empty_flows
from voxguard.ingest.encode.netflow import NetflowV9Encoder
from voxguard.ingest.metrics import IngestMetrics
from voxguard.ingest.pipeline import Pipeline
from voxguard.ingest.service import BATCH_MARGIN, encode_traffic
from voxguard.shared.bus import Bus
from voxguard.shared.config import VoxGuardConfig, example_config_path, load_config
from voxguard.shared.natsserver import NatsServer, port_open

PORT = 22055
SBC_EXPORTER, MEDIA_EXPORTER = "127.0.1.1", "127.0.1.2"


def make_datagrams(n_records: int, seed: int = 1) -> tuple[list[tuple[bytes, str]], int]:
    """Dense v9 datagrams: SIP to the SBCs from edge-sbc-01, RTP to the media pool from edge-media-01."""
    rng = np.random.default_rng(seed)
    out: list[tuple[bytes, str]] = []
    records = 0
    now = int(time.time())
    for exporter, share, dsts, ports in (
        (SBC_EXPORTER, 0.6, ["203.0.113.10", "203.0.113.20"], (5060, 5060)),
        (MEDIA_EXPORTER, 0.4, [f"198.51.100.{i}" for i in range(1, 15)], (10000, 20000)),
    ):
        n = int(n_records * share)
        f = empty_flows(n)
        srcs = rng.integers(0x0B000000, 0xDF000000, size=5000, dtype=np.uint64)  # 5000 sources
        f["src_lo"] = srcs[rng.integers(0, len(srcs), n)] | np.uint64(0xFFFF_0000_0000)
        lo = np.array([addr_to_halves(d)[1] for d in dsts], dtype=np.uint64)
        f["dst_lo"] = lo[rng.integers(0, len(lo), n)]
        f["src_port"] = rng.integers(1024, 65535, n)
        f["dst_port"] = rng.integers(ports[0], ports[1] + 1, n)
        f["proto"] = 17
        f["packets"] = rng.integers(1, 50, n)
        f["bytes"] = f["packets"] * rng.integers(160, 1200, n)
        f["start_ms"] = now * 1000 - 5000
        f["end_ms"] = now * 1000
        enc = NetflowV9Encoder(source_id=1, template_id=300, mtu=1450, template_refresh=50)
        for dg in enc.encode(f, now, 3_600_000):
            out.append((dg, exporter))
        records += n
    order = rng.permutation(len(out))
    return [out[i] for i in order], records


def bench_pipeline(cfg: VoxGuardConfig, datagrams: list[tuple[bytes, str]], records: int) -> float:
    pipe = Pipeline(cfg, metrics=IngestMetrics(CollectorRegistry()))
    batch = 256
    pipe.process(datagrams[:batch], time.time())  # templates learned
    best = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        for i in range(0, len(datagrams), batch):
            pipe.process(datagrams[i : i + batch], time.time())
        dt = time.perf_counter() - t0
        best = max(best, records / dt)
    pipe.flush()
    return best


def rss_mb() -> float:
    """Resident memory of this process in MiB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def bench_memory(n_hosts: int = 100_000, n_templates: int = 100_000) -> None:
    """State stays bounded: 100,000 per-host targets, then a flood of template ids."""
    from voxguard.ingest.decode.flows import v4_to_lo
    from voxguard.shared.config import parse_config

    cfg = parse_config(
        {
            "exporters": [{"name": "e", "address": "127.0.0.1"}],
            "ingest": {"max_host_targets": n_hosts},
            "tiers": {
                "media": {
                    "exporters": ["e"],
                    "components": [{"name": "big", "addresses": ["10.0.0.0/14"]}],
                    "monitors": [{"protocol": "udp", "ports": "10000-20000"}],
                }
            },
        }
    )
    pipe = Pipeline(cfg, metrics=IngestMetrics(CollectorRegistry()))
    before = rss_mb()
    f = empty_flows(n_hosts * 2)
    f["dst_lo"] = v4_to_lo((np.arange(n_hosts * 2, dtype=np.uint64) % np.uint64(n_hosts * 2)) + np.uint64(10 << 24))
    f["src_lo"] = v4_to_lo(np.arange(n_hosts * 2, dtype=np.uint64))
    f["proto"], f["dst_port"], f["packets"], f["bytes"] = 17, 12000, 1, 100
    exp = np.zeros(len(f), dtype=np.int64)
    t0 = time.perf_counter()
    c = pipe.table.classify(f, exp)  # a sweep over 200,000 hosts: the first 100,000 get targets
    pipe.aggregator.add(f, c.rows, c.targets, exp)
    t1 = time.perf_counter()
    ticks = pipe.flush(time.time())
    t2 = time.perf_counter()
    after = rss_mb()
    print(
        f"memory: {pipe.table.host_target_count:,} host targets (cap {n_hosts:,}, "
        f"{pipe.table.host_targets_dropped:,} refused), RSS +{after - before:.0f} MiB "
        f"= {(after - before) * 1024 * 1024 / max(pipe.table.host_target_count, 1):,.0f} bytes per target; "
        f"first sight {t1 - t0:.2f}s, tick flush {t2 - t1:.2f}s for {len(ticks):,} messages "
        f"(host messages capped at {cfg.ingest.max_host_ticks:,}/tick)"
    )
    before = rss_mb()
    dgs = []
    for i in range(n_templates):  # one template set per datagram, every id new
        tid = 256 + (i % 65000)
        body = struct.pack("!HH", tid, 2) + struct.pack("!HHHH", 8, 4, 12, 4)
        fs = struct.pack("!HH", 0, 4 + len(body)) + body
        dgs.append((struct.pack("!HHIIII", 9, 1, 0, 0, i, i % 97) + fs, f"127.0.{(i // 1000) % 255}.{i % 250}"))
    for i in range(0, len(dgs), 256):
        pipe.process(dgs[i : i + 256], time.time())
    cache = pipe.netflow.templates
    held = sum(len(d["templates"]) for d in cache.snapshot())
    print(
        f"template flood: {n_templates:,} template ids from {len(pipe.registry):,} exporter addresses -> "
        f"{held:,} templates kept, RSS +{rss_mb() - before:.0f} MiB"
    )


def host_flows(n_hosts: int, per_host: int = 3, seed: int = 2) -> np.ndarray:
    """RTP to ``n_hosts`` media hosts (10.0.0.0/14), ``per_host`` flows each from a pool of sources."""
    from voxguard.ingest.decode.flows import v4_to_lo

    rng = np.random.default_rng(seed)
    n = n_hosts * per_host
    f = empty_flows(n)
    f["dst_lo"] = v4_to_lo(np.repeat(np.arange(n_hosts, dtype=np.uint64), per_host) + np.uint64(10 << 24))
    f["src_lo"] = v4_to_lo(
        rng.integers(0x0B000000, 0xDF000000, size=20_000, dtype=np.uint64)[rng.integers(0, 20_000, n)]
    )
    f["proto"], f["dst_port"] = 17, rng.integers(10_000, 20_001, n)
    f["packets"] = rng.integers(1, 500, n)
    f["bytes"] = f["packets"] * rng.integers(60, 1400, n)
    f["sampling"] = rng.choice([1, 1, 1, 100], n)
    return f


def tick_close_pipeline(n_hosts: int) -> Pipeline:
    """A collector whose one media component holds ``n_hosts`` per-host targets, all reported."""
    from voxguard.shared.config import parse_config

    cfg = parse_config(
        {
            "exporters": [{"name": "e", "address": "127.0.0.1"}],
            "ingest": {"max_host_targets": n_hosts, "max_host_ticks": n_hosts},
            "tiers": {
                "media": {
                    "exporters": ["e"],
                    "components": [{"name": "big", "addresses": ["10.0.0.0/14"]}],
                    "monitors": [{"protocol": "udp", "ports": "10000-20000"}],
                }
            },
        }
    )
    return Pipeline(cfg, metrics=IngestMetrics(CollectorRegistry()))


def bench_tick_close(n_hosts: int, shards: int, repeats: int = 3) -> None:
    """Flush + encode of one tick with ``n_hosts`` per-host targets active (best of ``repeats``)."""
    pipe = tick_close_pipeline(n_hosts)
    flows = host_flows(n_hosts)
    exp = np.zeros(len(flows), dtype=np.int64)
    limit = int(1024 * 1024 * BATCH_MARGIN)
    start = float(int(time.time()))
    best = (float("inf"), 0.0, 0.0, 0, 0, 0)
    for k in range(repeats + 1):
        c = pipe.table.classify(flows, exp)
        pipe.aggregator.add(flows, c.rows, c.targets, exp)
        t0 = time.perf_counter()
        ticks = pipe.flush(start + k)
        t1 = time.perf_counter()
        items = encode_traffic(ticks, shards, limit)
        t2 = time.perf_counter()
        if k and t2 - t0 < best[0]:  # tick 0 is the targets' first sight
            best = (t2 - t0, t1 - t0, t2 - t1, len(ticks), len(items), sum(len(d) for _, d, _ in items))
    total, flush_s, enc_s, records, messages, size = best
    print(
        f"tick close, {n_hosts:,} active host targets (shards {shards}): flush {1e3 * flush_s:.0f} ms + "
        f"encode {1e3 * enc_s:.0f} ms = {1e3 * total:.0f} ms; {records:,} records in {messages} messages, "
        f"{size / 1e6:.1f} MB"
    )


def sender_main(args: argparse.Namespace) -> None:
    """Child process: replay the datagram pool at a record rate for a duration, then report."""
    os.sched_setaffinity(0, {1})
    datagrams, records = make_datagrams(args.pool)
    per_dg = records / len(datagrams)
    socks = {a: socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for a in (SBC_EXPORTER, MEDIA_EXPORTER)}
    for addr, s in socks.items():
        s.bind((addr, 0))
    dest = ("127.0.0.1", args.port)
    dg_rate = args.rate / per_dg
    total = int(dg_rate * args.seconds)
    sent = sent_records = 0
    start = time.perf_counter()
    i = 0
    while sent < total:
        due = int((time.perf_counter() - start) * dg_rate)
        due = min(due, total)
        while sent < due:
            payload, exp = datagrams[i]
            socks[exp].sendto(payload, dest)
            sent += 1
            sent_records += payload_records(payload)
            i = (i + 1) % len(datagrams)
        time.sleep(0.0005)
    elapsed = time.perf_counter() - start
    print(f"SENT {sent} {sent_records} {elapsed:.3f}", flush=True)


def payload_records(payload: bytes) -> int:
    """Data records in a v9 datagram of the benchmark (header count minus template records)."""
    count = int.from_bytes(payload[2:4], "big")
    # template flowsets (id 0/1) hold one template record each in our encoder
    off, templates = 20, 0
    while off + 4 <= len(payload):
        set_id = int.from_bytes(payload[off : off + 2], "big")
        length = int.from_bytes(payload[off + 2 : off + 4], "big")
        if set_id < 256:
            templates += 1
        if length < 4:
            break
        off += length
    return count - templates


def run_sender(rate: float, seconds: float, port: int) -> tuple[int, int, float]:
    cmd = [
        sys.executable,
        __file__,
        "--send",
        "--rate",
        str(rate),
        "--seconds",
        str(seconds),
        "--port",
        str(port),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120, check=True).stdout
    m = re.search(r"SENT (\d+) (\d+) ([\d.]+)", out)
    assert m, out
    return int(m[1]), int(m[2]), float(m[3])


async def bench_collector(cfg: VoxGuardConfig, rate: float, seconds: float, nats_url: str) -> dict[str, float]:
    os.sched_setaffinity(0, {0})
    bus = Bus(nats_url, namespace=f"bench{os.getpid()}")
    await bus.connect()
    await bus.ensure_streams()
    loop = asyncio.get_running_loop()
    published = 0

    async def publish(ticks: ClosedTick) -> None:
        nonlocal published
        published += await bus.publish_raw_many(encode_traffic(ticks))

    pending: set[asyncio.Future[None]] = set()

    def sink(ticks: ClosedTick) -> None:
        fut = asyncio.run_coroutine_threadsafe(publish(ticks), loop)
        pending.add(fut)  # type: ignore[arg-type]

    pipe = Pipeline(cfg, metrics=IngestMetrics(CollectorRegistry()))
    col = Collector(cfg, sink, pipeline=pipe, host="127.0.0.1")
    col.start()
    try:
        sent, sent_records, elapsed = await asyncio.to_thread(run_sender, rate, seconds, PORT)
        deadline = time.monotonic() + 10
        while pipe.stats.datagrams < sent and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.5)  # let the last tick close and publish
    finally:
        drops = sum(col.kernel_drops().values())
        await asyncio.to_thread(col.stop)
        for fut in list(pending):
            await asyncio.wrap_future(fut)
        await bus.delete_streams()
        await bus.close()
    got = pipe.stats.flow_records
    return {
        "sent_records": sent_records,
        "sent_datagrams": sent,
        "send_seconds": elapsed,
        "received_records": got,
        "kernel_drops": drops,
        "ticks_published": published,
        "loss_pct": 100.0 * (1 - got / sent_records) if sent_records else 0.0,
        "busy_seconds": pipe.stats.busy_seconds,
    }


def bench_nfcapd(rate: float, seconds: float) -> dict[str, float] | None:
    nfcapd, nfdump = shutil.which("nfcapd"), shutil.which("nfdump")
    if not nfcapd or not nfdump:
        return None
    with tempfile.TemporaryDirectory() as d:
        proc = subprocess.Popen(
            [
                "taskset",
                "-c",
                "0",
                nfcapd,
                "-w",
                d,
                "-p",
                str(PORT),
                "-b",
                "127.0.0.1",
                "-t",
                "3600",
                "-B",
                str(32 * 1024 * 1024),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1.0)
        try:
            _sent, sent_records, elapsed = run_sender(rate, seconds, PORT)
            time.sleep(2.0)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        files = [p for p in Path(d).rglob("nfcapd.*") if p.is_file()]
        got = 0
        for f in files:
            out = subprocess.run([nfdump, "-r", str(f), "-I"], capture_output=True, text=True).stdout
            m = re.search(r"^Flows:\s+(\d+)", out, re.M)
            got += int(m[1]) if m else 0
    return {
        "sent_records": sent_records,
        "received_records": got,
        "send_seconds": elapsed,
        "loss_pct": 100.0 * (1 - got / sent_records) if sent_records else 0.0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, nargs="*", default=[500_000.0], help="records/s to replay")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--no-nfcapd", action="store_true")
    ap.add_argument("--memory", action="store_true", help="only the memory figures")
    ap.add_argument("--tick-close", action="store_true", help="only the tick close (flush + encode) figures")
    ap.add_argument("--hosts", default="10000,100000", help="active host targets for --tick-close")
    ap.add_argument("--shards", type=int, default=1, help="baseline partitions for --tick-close")
    ap.add_argument("--send", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=PORT, help=argparse.SUPPRESS)
    ap.add_argument("--pool", type=int, default=200_000, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.send:
        args.rate = args.rate[0]
        sender_main(args)
        return
    if args.memory:
        bench_memory()
        return
    if args.tick_close:
        for n in args.hosts.split(","):
            bench_tick_close(int(n), args.shards)
        return
    cfg = load_config(example_config_path())
    cfg = cfg.model_copy(
        update={"ingest": cfg.ingest.model_copy(update={"netflow_port": PORT, "ipfix_port": 0, "sflow_port": 0})}
    )
    datagrams, records = make_datagrams(args.pool)
    print(
        f"datagram pool: {len(datagrams)} NetFlow v9 datagrams, {records} records "
        f"({records / len(datagrams):.1f} per datagram)"
    )
    rps = bench_pipeline(cfg, datagrams, records)
    print(f"pipeline (decode+classify+aggregate, no sockets, one core): {rps:,.0f} records/s")
    nats_url = os.environ.get("NATS_URL") or ("nats://127.0.0.1:4222" if port_open("127.0.0.1", 4222) else "")
    server = None
    if not nats_url:
        server = NatsServer(tempfile.mkdtemp(prefix="bench-nats-"))
        nats_url = server.start()
    try:
        print(f"{'rate (rec/s)':>14} {'who':>10} {'sent':>12} {'received':>12} {'loss %':>8} {'kernel drops':>13}")
        for rate in args.rate:
            r = asyncio.run(bench_collector(cfg, rate, args.seconds, nats_url))
            print(
                f"{rate:>14,.0f} {'voxguard':>10} {r['sent_records']:>12,.0f} {r['received_records']:>12,.0f} "
                f"{r['loss_pct']:>8.3f} {r['kernel_drops']:>13,.0f}   (sent in {r['send_seconds']:.2f}s, "
                f"busy {r['busy_seconds']:.2f}s, {r['ticks_published']:.0f} ticks published)"
            )
            if not args.no_nfcapd:
                n = bench_nfcapd(rate, args.seconds)
                if n is None:
                    print(f"{rate:>14,.0f} {'nfcapd':>10} not installed")
                else:
                    print(
                        f"{rate:>14,.0f} {'nfcapd':>10} {n['sent_records']:>12,.0f} "
                        f"{n['received_records']:>12,.0f} {n['loss_pct']:>8.3f} {'':>13}   "
                        f"(sent in {n['send_seconds']:.2f}s)"
                    )
    finally:
        if server:
            server.stop()


if __name__ == "__main__":
    main()
