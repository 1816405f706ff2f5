"""Per-host ticks as columns: the same records as the dict renderer gave, the same ticks after
packing, grouping per tier and partition, hostile text, the API's last ticks, and the tick
manifest on every message of a published burst."""

from __future__ import annotations

import asyncio
import copy
import socket
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import pytest
from prometheus_client import CollectorRegistry

from voxguard.ingest import aggregate
from voxguard.ingest.aggregate import (
    C_BYTES,
    C_PACKETS,
    C_SAMPLED,
    COUNT_ROWS,
    TOP_N,
    TickAggregator,
    _by_target_then_packets,
    _prefixes,
)
from voxguard.ingest.classify import TargetInfo, TargetTable
from voxguard.ingest.closedtick import ClosedTick, tick_dict
from voxguard.ingest.decode.flows import SipFlag, SipMethod, addr_to_halves, empty_flows, halves_to_addr
from voxguard.ingest.encode.netflow import NetflowV9Encoder
from voxguard.ingest.metrics import IngestMetrics
from voxguard.ingest.pipeline import Pipeline
from voxguard.ingest.service import build, encode_traffic
from voxguard.ingest.targetcolumns import TargetColumns
from voxguard.ingest.toptext import top_texts
from voxguard.shared.batches import TrafficColumns, batch_subject, decode_batch
from voxguard.shared.bus import STREAM_TRAFFIC, Bus, Delivery
from voxguard.shared.config import Monitor, Tier, parse_config
from voxguard.shared.messages import SCHEMA_VERSION, TrafficTick
from voxguard.shared.partition import partition_of
from voxguard.shared.runtime import ServiceContext
from voxguard.shared.settings import Settings
from voxguard.shared.tickmanifest import parse_manifest

CFG = {
    "exporters": [{"name": "edge", "address": "127.0.1.1"}, {"name": "core", "address": "127.0.1.3"}],
    "ingest": {"max_host_targets": 1000},
    "tiers": {
        "sbc": {
            "exporters": ["edge", "core"],
            "components": [{"name": "sbc-pool", "addresses": ["203.0.113.0/28", "2001:db8:5::/124"]}],
            "monitors": [
                {"protocol": "udp", "ports": 5060},
                {"protocol": "tcp", "ports": 5061},
                {"protocol": "icmp"},
            ],
        },
        "media": {  # no exporter list: flows from exporters not in the config count too ("unknown")
            "components": [{"name": "gw", "addresses": ["198.51.100.0/24"], "region": "eu-west"}],
            "monitors": [{"protocol": "udp", "ports": "10000-20000"}],
        },
        "registrar": {
            "exporters": ["core"],
            "per_host": False,
            "components": [{"name": "reg", "addresses": ["10.20.0.10/32"]}],
            "monitors": [{"protocol": "udp", "ports": 5060}],
        },
    },
}
EDGE, CORE, UNKNOWN = 0, 1, 2
SOURCES = [f"192.0.2.{i}" for i in range(1, 25)] + [f"198.18.{i % 3}.{i}" for i in range(6)]
SOURCES += [f"2001:db8:aa:{i % 2}::{i + 1}" for i in range(4)]


def random_flows(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Flows to every kind of target (media and SBC hosts, IPv4 and IPv6, the registrar
    component), from IPv4 and IPv6 sources, sampled or not, some of them long-lived, SIP with
    methods and flags; and the exporter index of each."""
    f = empty_flows(n)
    exp = np.empty(n, dtype=np.int64)
    for i in range(n):
        kind = int(rng.integers(0, 10))
        if kind < 5:  # media host
            dst, proto, port = f"198.51.100.{rng.integers(1, 41)}", 17, int(rng.integers(10_000, 20_001))
            exp[i] = (EDGE, UNKNOWN)[int(rng.integers(0, 2))]
        elif kind < 9:  # SBC host: SIP, SIP over TLS, ICMP
            host = int(rng.integers(1, 15))
            dst = f"203.0.113.{host}" if kind < 8 else f"2001:db8:5::{host}"
            proto, port = ((17, 5060), (6, 5061), (1, 0))[int(rng.integers(0, 3))]
            exp[i] = int(rng.integers(0, 2))
            if port == 5060:
                f["sip_method"][i] = rng.choice([0, *SipMethod.NAMES])
                f["sip_flags"][i] = rng.choice([0, 0, SipFlag.SCANNER_UA, SipFlag.MALFORMED])
            f["tcp_flags"][i] = rng.choice([0x02, 0x12, 0x13]) if proto == 6 else 0
        else:
            dst, proto, port, exp[i] = "10.20.0.10", 17, 5060, CORE
        f["dst_hi"][i], f["dst_lo"][i] = addr_to_halves(dst)
        f["src_hi"][i], f["src_lo"][i] = addr_to_halves(SOURCES[int(rng.integers(0, len(SOURCES)))])
        f["proto"][i], f["dst_port"][i] = proto, port
        f["packets"][i] = rng.integers(1, 40)
        f["bytes"][i] = f["packets"][i] * rng.integers(60, 1400)
        f["sampling"][i] = rng.choice([1, 1, 1, 100])
        if rng.random() < 0.05:  # a long flow: spread over the ticks it lasted
            f["start_ms"][i], f["end_ms"][i] = 1_000, 1_000 + int(rng.integers(2_000, 90_000))
    return f, exp


def group_tops(rows: list[Any], prefixes: bool = False) -> dict[int, list[dict[str, Any]]]:
    """The dict renderer's top lists: per target, its rows as SourceCount dicts."""
    out: dict[int, list[dict[str, Any]]] = {}
    for t, h, lo, p, b in rows:
        addr = halves_to_addr(h, lo)
        if prefixes:
            addr = f"{addr}/24" if h == 0 and (lo >> 32) == 0xFFFF else f"{addr}/64"
        out.setdefault(t, []).append({"source": addr, "packets": int(p), "bytes": int(b)})
    return out


def top_rows(pairs: np.ndarray) -> list[tuple[Any, ...]]:
    """Each target's TOP_N rows with most packets, ties in the pairs' order (a stable sort)."""
    rows = sorted(pairs.tolist(), key=lambda r: (r[0], -r[3]))
    rank: Counter[int] = Counter()
    out = []
    for r in rows:
        rank[r[0]] += 1
        if rank[r[0]] <= TOP_N:
            out.append(r)
    return out


def reference(
    agg: TickAggregator,
    table: TargetTable,
    tick_start: float,
    exporters: dict[int, list[str]],
    max_host_ticks: int | None = None,
) -> dict[str, dict[str, Any]]:
    """The tick as the dict renderer rendered it, one dict per active target (target id ->
    dict; id and ts left out), from a copy of the aggregator's state. ``exporters``: the
    exporter names each target was reported by, worked out from the flows."""
    a = copy.deepcopy(agg)
    a._apply_spread()
    active = np.flatnonzero(a._active)
    first_host = table.n_config_targets
    hosts = active[active >= first_host]
    if max_host_ticks is not None and len(hosts) > max_host_ticks:
        busiest = hosts[np.argsort(-a._acc[C_PACKETS, hosts], kind="stable")[:max_host_ticks]]
        active = np.sort(np.concatenate([active[active < first_host], busiest]))
    used_hll = a._reduced is not None
    pairs = a._reduce(TOP_N)
    distinct = dict(zip(*(x.tolist() for x in a._hll.estimates()), strict=True)) if used_hll else Counter(
        pairs["t"].tolist())  # fmt: skip
    tops = group_tops(top_rows(pairs))
    pfx = group_tops(top_rows(_prefixes(pairs)), prefixes=True)
    out = {}
    for t in active.tolist():
        exact = a._acc[:, t] + a._carry[:, t]
        whole = np.floor(exact + 1e-6).astype(np.int64).tolist()
        info = table.targets[t]
        d = dict(info.static)
        d.update(
            schema_version=SCHEMA_VERSION,
            tick_start=datetime.fromtimestamp(tick_start, UTC).isoformat(),
            tick_seconds=a.tick_seconds,
            exporters=exporters.get(t, []),
            distinct_sources=int(distinct.get(t, 0)),
            bytes_per_packet=float(np.round(a._acc[C_BYTES, t] / max(a._acc[C_PACKETS, t], 1), 2)),
            size_histogram=a._size[:, t].astype(np.int64).tolist(),
            top_sources=tops.get(t, []),
            top_prefixes=pfx.get(t, []),
            sip_methods={SipMethod.NAMES[m]: int(v) for m, v in enumerate(a._sip[:, t].tolist()) if v and m},
            sampled=whole[C_SAMPLED] > 0,
        )
        d.update({k: whole[row] for k, row in COUNT_ROWS.items()})
        out[info.id] = d
    return out


def records(tick: ClosedTick, table: TargetTable) -> dict[str, dict[str, Any]]:
    """Every record of a closed tick as a dict (target id -> dict; id and ts left out)."""
    hosts = tick.hosts
    dicts = tick.components + [
        tick_dict(table.columns.tier(t), hosts.columns, i, tick.head, hosts.first_record + i)
        for i, t in enumerate(hosts.targets.tolist())
    ]
    return {d["target_id"]: {k: v for k, v in d.items() if k not in ("id", "ts")} for d in dicts}


def published(items: list[tuple[str, bytes, str]]) -> tuple[dict[str, TrafficTick], list[TrafficColumns]]:
    """The ticks in encoded messages (target id -> tick) and the decoded batches."""
    ticks: dict[str, TrafficTick] = {}
    batches = []
    for subject, data, _ in items:
        if "columns" in orjson.loads(data):
            cols = decode_batch(data)
            assert cols.dropped == 0 and subject == batch_subject(cols.tier, cols.batch.partition)
            batches.append(cols)
            ticks.update((cols.ids[i], cols.tick(i)) for i in range(cols.n))
        else:
            tick = TrafficTick.model_validate_json(data)
            assert tick.host is None and subject == f"voxguard.traffic.v1.{tick.tier.value}"
            ticks[tick.target_id] = tick
    return ticks, batches


def same_tick(got: TrafficTick, want: dict[str, Any]) -> bool:
    leave_out = {"id", "ts"}
    return got.model_dump(exclude=leave_out) == TrafficTick.model_validate(want).model_dump(exclude=leave_out)


class Exporters:
    """Which exporters reported each target, worked out from the flows: this tick's, else the
    last tick's (a tick of spread records only keeps them)."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.now: dict[int, set[str]] = {}
        self.last: dict[int, set[str]] = {}

    def add(self, rows: np.ndarray, targets: np.ndarray, exp: np.ndarray) -> None:
        for r, t in zip(rows.tolist(), targets.tolist(), strict=True):
            e = int(exp[r])
            self.now.setdefault(t, set()).add(self.names[e] if e < len(self.names) else "unknown")

    def close(self) -> dict[int, list[str]]:
        out = {t: sorted(self.now.get(t) or self.last.get(t) or ()) for t in {*self.now, *self.last}}
        self.last.update(self.now)
        self.now = {}
        return out


@pytest.mark.parametrize("partial_limit", [aggregate.PARTIAL_LIMIT, 150])  # 150: the HyperLogLog path
@pytest.mark.parametrize("max_host_ticks", [None, 12])
def test_columns_hold_the_records_the_dicts_held(
    monkeypatch: pytest.MonkeyPatch, partial_limit: int, max_host_ticks: int | None
) -> None:
    monkeypatch.setattr(aggregate, "PARTIAL_LIMIT", partial_limit)
    rng = np.random.default_rng(11)
    table = TargetTable(parse_config(CFG))
    agg = TickAggregator()
    seen = Exporters(table.exporter_names)
    covered: Counter[str] = Counter()
    for k in range(4):  # the last tick has no new flows: spread records only
        for _ in range(3 if k < 3 else 0):
            f, exp = random_flows(rng, 300)
            c = table.classify(f, exp)
            agg.add(f, c.rows, c.targets, exp)
            seen.add(c.rows, c.targets, exp)
        start = 1_700_000_000.0 + k
        want = reference(agg, table, start, seen.close(), max_host_ticks)
        tick = agg.flush(start, table.columns, table.exporter_names, max_host_ticks=max_host_ticks)
        assert records(tick, table) == want
        assert len(tick) == len(want) and tick.tick_start == start
        got, batches = published(encode_traffic(tick, 1, 4_000))  # small batches: several per tier
        assert got.keys() == want.keys()
        assert all(same_tick(got[tid], w) for tid, w in want.items())
        assert {b.batch.tier.value for b in batches} == {table.columns.tiers[t] for t in tick.hosts.tier.tolist()}
        assert [b.batch.partition for b in batches] == [None] * len(batches)
        hosts = [w for w in want.values() if w["host"] is not None]
        covered.update(
            hosts=len(hosts),
            v6_hosts=sum(":" in w["host"] for w in hosts),
            sip=sum(bool(w["sip_methods"]) for w in hosts),
            two_exporters=sum(len(w["exporters"]) > 1 for w in hosts),
            unknown_exporter=sum("unknown" in w["exporters"] for w in hosts),
            full_tops=sum(len(w["top_sources"]) == TOP_N for w in hosts),
            v6_prefixes=sum(p["source"].endswith("/64") for w in hosts for p in w["top_prefixes"]),
            no_tops=sum(not w["top_sources"] for w in hosts),
            sampled=sum(w["sampled"] for w in hosts),
            components=len(want) - len(hosts),
            several_batches=len(batches) > 2,
        )
    if max_host_ticks is None:
        assert min(covered.values()) > 0, covered  # every case above was exercised
    else:
        assert agg.host_ticks_suppressed > 0 and covered["hosts"] == 4 * max_host_ticks


@pytest.mark.parametrize("shards", [1, 4])
def test_per_host_batches_per_tier_and_partition(shards: int) -> None:
    rng = np.random.default_rng(5)
    table = TargetTable(parse_config(CFG))
    agg = TickAggregator()
    f, exp = random_flows(rng, 1500)
    c = table.classify(f, exp)
    agg.add(f, c.rows, c.targets, exp)
    tick = agg.flush(1_700_000_000.0, table.columns, table.exporter_names)
    order = tick.hosts.columns["target_id"]
    items = encode_traffic(tick, shards, 3_000)
    _, batches = published(items)
    for b in batches:
        part = b.batch.partition
        assert part == (None if shards == 1 else partition_of(b.ids[0], shards))
        assert {partition_of(t, shards) for t in b.ids} == {partition_of(b.ids[0], shards)}
        assert {b.meta(i)["tier"] for i in range(b.n)} == {b.tier.value}
        assert b.ids == sorted(b.ids, key=order.index)  # the tick's order within a group
    ids = [t for b in batches for t in b.ids]
    assert sorted(ids) == sorted(order) and len(set(ids)) == len(ids)
    groups = {(b.tier.value, b.batch.partition) for b in batches}
    assert len(groups) == (2 if shards == 1 else 8)  # sbc and media hosts, in every partition
    again = encode_traffic(tick, shards, 3_000)  # partitions known this time
    assert [s for s, _, _ in again] == [s for s, _, _ in items]
    assert [b.ids for b in published(again)[1]] == [b.ids for b in batches]


def test_text_with_newlines_survives_packing() -> None:
    """A target id, name or region holding a newline cannot travel as a line of a packed text
    column: the column falls back to a dictionary and the records keep their text."""
    mon = Monitor.model_validate({"protocol": "udp", "ports": "10000-20000"})
    catalog = TargetColumns()
    for i in range(40):
        info = TargetInfo._make(f"media-h{i:04d}", f"gw host {i}", Tier("media"), "gw", f"10.0.0.{i}", mon, "eu")
        catalog.append(info.static)
    evil = TargetInfo._make("media-evil\nid", "gw\nhost evil", Tier("media"), "gw", "10.0.1.1", mon, "eu\nwest")
    evil_ix = catalog.append(evil.static)
    f = empty_flows(41)
    f["src_hi"], f["src_lo"] = addr_to_halves("192.0.2.7")
    f["packets"], f["bytes"], f["proto"] = 5, 500, 17
    rows = np.arange(41)
    agg = TickAggregator()
    agg.add(f, rows, rows, np.zeros(41, dtype=np.int64))
    tick = agg.flush(1_700_000_000.0, catalog, ["edge"])
    items = encode_traffic(tick, 1)
    (data,) = [d for _, d, _ in items]
    packed = orjson.loads(data)["columns"]
    assert "values" in packed["target_id"] and "values" in packed["target"] and "values" in packed["region"]
    cols = decode_batch(data)
    i = cols.ids.index("media-evil\nid")
    assert cols.meta(i)["name"] == "gw\nhost evil" and cols.meta(i)["region"] == "eu\nwest"
    assert cols.meta(i - 1)["name"] == f"gw host {i - 1}" and cols.n == 41
    assert tick.hosts.targets[i] == evil_ix and cols.tick(i).top_sources[0].source == "192.0.2.7"


def test_top_texts_match_python_formatting() -> None:
    rng = np.random.default_rng(3)
    n = 500
    rows = np.empty(n, dtype=aggregate._PAIR_DTYPE)
    rows["t"] = np.sort(rng.integers(0, 60, n))
    addrs = [f"{rng.integers(0, 256)}.{rng.integers(0, 256)}.{rng.integers(0, 256)}.0" for _ in range(n - 40)]
    addrs += [f"2001:db8:{i:x}::" for i in range(40)]
    halves = [addr_to_halves(a) for a in rng.permutation(addrs)]
    rows["h"], rows["l"] = [h for h, _ in halves], [lo for _, lo in halves]
    rows["p"] = rng.choice([0, 1, 9, 10, 99, 100, 12_345, 2**40], n)
    rows["b"] = rows["p"] * rng.integers(0, 1500, n) + rng.random(n)  # fractions are cut, as int() does
    for prefixes in (False, True):
        targets, texts = top_texts(rows, prefixes=prefixes)
        want = group_tops(rows.tolist(), prefixes=prefixes)
        assert targets.tolist() == sorted(want)
        assert texts == [";".join(f"{s['source']} {s['packets']} {s['bytes']}" for s in want[t]) for t in want]
    targets, texts = top_texts(rows[:0])
    assert len(targets) == 0 and texts == []


@pytest.mark.parametrize("packets", [[5.0, 3.0, 5.0, 1.0], [5.5, 5.25, 5.0, 1.0], [2.0**33, 2.0**32, 1.0, 2.0**32]])
def test_top_order_is_lexsorts(packets: list[float]) -> None:
    rows = np.zeros(16, dtype=aggregate._PAIR_DTYPE)
    rows["t"] = [3, 1, 3, 1] * 4
    rows["p"] = packets * 4
    want = np.lexsort((-rows["p"], rows["t"]))
    assert _by_target_then_packets(rows).tolist() == want.tolist()


def test_last_ticks_render_on_demand_and_keep_quiet_hosts() -> None:
    rng = np.random.default_rng(8)
    registry = CollectorRegistry()
    pipe = Pipeline(parse_config(CFG), metrics=IngestMetrics(registry))
    table = pipe.table
    seen = Exporters(table.exporter_names)
    total = 0
    wants = []
    pipe.tick_due(1_700_000_000.0)  # the first tick starts here
    for k in range(2):
        f, exp = random_flows(rng, 400)
        if k:  # the second tick: no flows to the odd media hosts, short flows only
            odd = np.array([h % 2 == 1 for h in (int(lo) & 0xFF for lo in f["dst_lo"].tolist())])
            keep = ~(odd & (f["dst_port"] >= 10_000))
            f, exp = f[keep], exp[keep]
            f["start_ms"] = f["end_ms"] = 0
        c = table.classify(f, exp)
        pipe.aggregator.add(f, c.rows, c.targets, exp)
        seen.add(c.rows, c.targets, exp)
        start = 1_700_000_000.0 + k
        wants.append(reference(pipe.aggregator, table, start, seen.close()))
        tick = pipe.flush(start + 1)
        total += len(tick)
    last = {**wants[0], **wants[1]}
    got = {table.targets[ix].id: d for ix, d in pipe.last_ticks.items()}
    assert {k: {f: v for f, v in d.items() if f not in ("id", "ts")} for k, d in got.items()} == last
    quiet = [tid for tid in wants[0] if tid not in wants[1]]
    assert quiet and all(got[tid]["tick_start"] == wants[0][tid]["tick_start"] for tid in quiet)
    assert len(pipe.last_ticks) == len(last) and pipe.last_ticks.get(len(table.targets) + 5) is None
    assert all(TrafficTick.model_validate(d).target_id == tid for tid, d in got.items())
    assert pipe.stats.ticks_emitted == total
    assert registry.get_sample_value("voxguard_ingest_ticks_total") == total


async def test_every_message_of_a_burst_carries_the_manifest(bus: Bus) -> None:
    cfg = {
        "exporters": [{"name": "edge", "address": "127.0.0.1"}],
        "ingest": {"host": "127.0.0.1", "netflow_port": 0, "ipfix_port": 0, "sflow_port": 0, "tick_seconds": 0.2},
        "tiers": {
            tier: {
                "exporters": ["edge"],
                "components": [{"name": f"{tier}-a", "addresses": [prefix]}],
                "monitors": [{"protocol": "udp", "ports": "5000-20000"}],
            }
            for tier, prefix in (("media", "198.51.100.0/26"), ("sbc", "203.0.113.0/26"))
        },
    }
    ctx = ServiceContext(Settings(baseline_shards=2), parse_config(cfg), bus.url)
    ctx.bus = bus
    _, svc = build(ctx)
    seen: list[tuple[Delivery, float, int]] = []  # delivery, tick start, records

    async def on_msg(msg: Any, d: Delivery) -> None:
        if isinstance(msg, TrafficColumns):
            seen.append((d, msg.tick_start.timestamp(), msg.n))
        else:
            seen.append((d, msg.tick_start.timestamp(), 1))

    def decode(data: bytes) -> Any:
        doc = orjson.loads(data)
        return decode_batch(doc) if "columns" in doc else TrafficTick.model_validate(doc)

    sub = await bus.subscribe_durable(STREAM_TRAFFIC, "manifest", "voxguard.traffic.v1.>", TrafficTick, on_msg,
                                      decoder=decode)  # fmt: skip
    f = empty_flows(120)
    for i in range(len(f)):
        f["src_hi"][i], f["src_lo"][i] = addr_to_halves(f"192.0.2.{i % 7 + 1}")
        dst = f"198.51.100.{i % 40 + 1}" if i % 2 else f"203.0.113.{i % 40 + 1}"
        f["dst_hi"][i], f["dst_lo"][i] = addr_to_halves(dst)
    f["proto"], f["src_port"], f["dst_port"], f["packets"], f["bytes"] = 17, 40000, 12000, 50, 50 * 172
    await svc.start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for p in NetflowV9Encoder(source_id=3, template_id=300).encode(f, 1_700_000_000, 60_000):
            sock.sendto(p, ("127.0.0.1", svc.collector.ports()["netflow"]))
        async with asyncio.timeout(15):
            while svc.pipeline.stats.flow_records < len(f):
                await asyncio.sleep(0.05)
    finally:
        sock.close()
        await svc.stop()
    try:
        async with asyncio.timeout(15):
            while len(seen) < svc.messages_published:
                await asyncio.sleep(0.05)
    finally:
        await sub.stop()
    producer = svc.status()["producer"]
    assert producer and len(seen) == svc.messages_published
    bursts: dict[float, list[tuple[str, Mapping[str, int], int]]] = {}
    for d, start, n in seen:
        m = parse_manifest(d.headers)
        assert m is not None and m.producer == producer
        assert m.tick == start  # the tick's start, as the messages carry it
        bursts.setdefault(m.tick, []).append((d.subject, m.messages, n))
    for burst in bursts.values():
        (messages,) = {tuple(sorted(m.items())) for _, m, _ in burst}  # one manifest per burst
        assert dict(messages) == Counter(s for s, _, _ in burst)
    subjects = {d.subject for d, _, _ in seen}
    assert {"voxguard.traffic.v1.media", "voxguard.traffic.v1.sbc"} <= subjects
    assert {s for s in subjects if s[-1].isdigit()} == {f"voxguard.traffic.v1.{t}.{k}" for t in ("media", "sbc")
                                                       for k in (0, 1)}  # fmt: skip
    assert sum(n for _, _, n in seen) == svc.published
