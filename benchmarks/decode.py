"""Decode throughput of the NetFlow v9 / IPFIX hot path (flow records per second on one core).

Dense ~1400-byte datagrams from the project's encoders (fixed-length templates: addresses, ports,
protocol, TCP flags, ICMP type/code, 8-byte octet/packet counters, start/end times), decoded in
batches into FLOW columns with ``want_records=False``, as the collector does. Datagrams are
distinct (no cache-friendly repetition of one payload), templates are learned before timing.

    .venv/bin/python benchmarks/decode.py                 # all cases, batches of 64 and 256
    .venv/bin/python benchmarks/decode.py --profile v9-ipv4 --batch 256
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import time
from collections.abc import Callable

import numpy as np

from voxguard.ingest.decode.flows import V4_MAPPED_LO_PREFIX, empty_flows
from voxguard.ingest.decode.netflow import NetflowDecoder
from voxguard.ingest.encode import IpfixEncoder, NetflowV9Encoder

EXPORT_S = 1_700_000_000
TARGET = 2_000_000


def make_flows(n: int, ipv6: bool, rng: np.random.Generator) -> np.ndarray:
    f = empty_flows(n)
    if ipv6:
        for side in ("src", "dst"):
            f[f"{side}_hi"] = rng.integers(1 << 60, 1 << 62, n, dtype=np.uint64)
            f[f"{side}_lo"] = rng.integers(0, 1 << 63, n, dtype=np.uint64)
        f["ip_version"] = 6
    else:
        for side in ("src", "dst"):
            f[f"{side}_lo"] = rng.integers(0, 1 << 32, n, dtype=np.uint64) | V4_MAPPED_LO_PREFIX
        f["ip_version"] = 4
    f["src_port"] = rng.integers(1024, 65536, n)
    f["dst_port"] = rng.choice([5060, 5061, 443, 3478, 16384], n)
    f["proto"] = rng.choice([6, 17], n)
    f["tcp_flags"] = rng.integers(0, 64, n)
    f["packets"] = rng.integers(1, 1000, n)
    f["bytes"] = f["packets"] * rng.integers(40, 1500, n).astype(np.uint64)
    f["start_ms"] = EXPORT_S * 1000 - rng.integers(0, 60_000, n)
    f["end_ms"] = f["start_ms"] + rng.integers(0, 30_000, n)
    return f


def _encoder(fmt: str, domain: int, ipv6: bool) -> Callable[[np.ndarray], list[bytes]]:
    if fmt == "v9":
        v9 = NetflowV9Encoder(domain, 256, ipv6=ipv6, template_refresh=10**9)
        return lambda f: v9.encode(f, EXPORT_S, 3_600_000)
    ipfix = IpfixEncoder(domain, 256, ipv6=ipv6, template_refresh=10**9)
    return lambda f: ipfix.encode(f, EXPORT_S)


def build(case: str, exporters: int, count: int, rng: np.random.Generator) -> tuple[list[tuple[bytes, str]], int]:
    """``count`` data datagrams (round-robin over exporters) and how many template datagrams lead."""
    fmt, fam = case.split("-")
    ipv6 = fam == "ipv6"
    out: list[tuple[bytes, str]] = []
    lead: list[tuple[bytes, str]] = []
    per_exporter = -(-count // exporters)
    streams = []
    for e in range(exporters):
        addr = f"192.0.2.{e + 1}"
        encode = _encoder(fmt, e, ipv6)
        lead.extend((p, addr) for p in encode(make_flows(1, ipv6, rng)))  # the template datagram
        data = encode(make_flows(per_exporter * 60, ipv6, rng))[:per_exporter]
        streams.append([(p, addr) for p in data])
    for i in range(per_exporter):
        out.extend(s[i] for s in streams if i < len(s))
    return lead + out[:count], len(lead)


def measure(case: str, batch: int, seconds: float, exporters: int, profile: bool) -> dict[str, float]:
    rng = np.random.default_rng(1)
    datagrams, lead = build(case, exporters, batch * 16, rng)
    dec = NetflowDecoder()
    dec.decode_batch(datagrams[:lead], now=0.0)
    data = datagrams[lead:]
    batches = [data[i : i + batch] for i in range(0, len(data), batch)]
    for b in batches[:2]:
        dec.decode_batch(b, now=0.0)  # warm-up: layout plans, allocator
    prof = cProfile.Profile() if profile else None
    records = dgrams = 0
    nbytes = 0
    start = time.perf_counter()
    deadline = start + seconds
    if prof:
        prof.enable()
    while True:
        for b in batches:
            out = dec.decode_batch(b, now=0.0)
            records += len(out.flows)
            dgrams += len(b)
            nbytes += sum(len(p) for p, _ in b)
        if time.perf_counter() >= deadline:
            break
    elapsed = time.perf_counter() - start
    if prof:
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(14)
    return {
        "records_per_s": records / elapsed,
        "datagrams_per_s": dgrams / elapsed,
        "us_per_datagram": elapsed / dgrams * 1e6,
        "records_per_datagram": records / dgrams,
        "bytes_per_datagram": nbytes / dgrams,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cases", nargs="*", default=["v9-ipv4", "v9-ipv6", "ipfix-ipv4", "ipfix-ipv6"])
    ap.add_argument("--batch", type=int, action="append", help="datagrams per decode_batch (repeatable)")
    ap.add_argument("--seconds", type=float, default=2.0, help="time per case")
    ap.add_argument("--exporters", type=int, default=1, help="exporters interleaved in each batch")
    ap.add_argument("--cpu", type=int, default=None, help="pin to this CPU (default: the first allowed)")
    ap.add_argument("--profile", action="store_true", help="print a cProfile summary per case")
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        cpu = args.cpu if args.cpu is not None else min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        print(f"pinned to CPU {cpu}; numpy {np.__version__}")
    cols = ("batch", 5), ("exp", 4), ("rec/dgram", 9), ("B/dgram", 8), ("us/dgram", 9), ("dgram/s", 10)
    print(f"{'case':<12} " + " ".join(f"{c:>{w}}" for c, w in cols) + f" {'records/s':>11}")
    worst = float("inf")
    for case in args.cases:
        for batch in args.batch or [64, 256]:
            r = measure(case, batch, args.seconds, args.exporters, args.profile)
            worst = min(worst, r["records_per_s"])
            print(
                f"{case:<12} {batch:>5} {args.exporters:>4} {r['records_per_datagram']:>9.1f} "
                f"{r['bytes_per_datagram']:>8.0f} {r['us_per_datagram']:>9.2f} "
                f"{r['datagrams_per_s']:>10,.0f} {r['records_per_s']:>11,.0f}"
            )
    verdict = "meets" if worst >= TARGET else "MISSES"
    print(f"slowest case: {worst:,.0f} records/s -> {verdict} the {TARGET:,} records/s target")


if __name__ == "__main__":
    main()
