"""Classification of flows to targets and per-tick aggregation, with known answers."""

from __future__ import annotations

import ipaddress
from typing import Any

import numpy as np
import pytest

from voxguard.ingest.aggregate import TickAggregator
from voxguard.ingest.classify import TargetTable
from voxguard.ingest.closedtick import tick_dict
from voxguard.ingest.decode.flows import SipFlag, SipMethod, addr_to_halves, empty_flows
from voxguard.shared.config import parse_config
from voxguard.shared.messages import TrafficTick

CFG = {
    "exporters": [
        {"name": "edge", "address": "127.0.1.1"},
        {"name": "core", "address": "127.0.1.3"},
    ],
    "ingest": {"max_host_targets": 3},
    "tiers": {
        "sbc": {
            "exporters": ["edge"],
            "per_host": False,
            "components": [
                {"name": "sbc-a", "addresses": ["203.0.113.10/32"]},
                {"name": "sbc-v6", "addresses": ["2001:db8::10/128"]},
            ],
            "monitors": [
                {"protocol": "udp", "ports": 5060},
                {"protocol": "tcp", "ports": 5061},
                {"protocol": "icmp"},
            ],
        },
        "media": {
            "exporters": ["edge"],
            "components": [
                {"name": "gw", "addresses": ["198.51.100.0/24"]},
                {"name": "gw-special", "addresses": ["198.51.100.128/25"]},
            ],
            "monitors": [{"protocol": "udp", "ports": "10000-20000"}],
        },
        "registrar": {
            "exporters": ["core"],
            "internal": True,
            "per_host": False,
            "components": [{"name": "reg", "addresses": ["10.20.0.10/32"]}],
            "monitors": [{"protocol": "udp", "ports": 5060}],
        },
    },
}
EDGE, CORE = 0, 1


def flows_of(rows: list[dict]) -> np.ndarray:
    f = empty_flows(len(rows))
    for i, r in enumerate(rows):
        f["src_hi"][i], f["src_lo"][i] = addr_to_halves(r.get("src", "192.0.2.1"))
        f["dst_hi"][i], f["dst_lo"][i] = addr_to_halves(r["dst"])
        f["proto"][i] = r.get("proto", 17)
        f["dst_port"][i] = r.get("port", 5060)
        f["packets"][i] = r.get("packets", 1)
        f["bytes"][i] = r.get("bytes", 500)
        f["sampling"][i] = r.get("sampling", 1)
        f["tcp_flags"][i] = r.get("flags", 0)
        f["start_ms"][i] = r.get("start", 0)
        f["end_ms"][i] = r.get("end", 0)
        f["sip_method"][i] = r.get("sip", 0)
        f["sip_flags"][i] = r.get("sip_flags", 0)
    return f


@pytest.fixture
def table() -> TargetTable:
    return TargetTable(parse_config(CFG))


def flush(agg: TickAggregator, table: TargetTable, tick_start: float) -> list[dict[str, Any]]:
    """Every record of the closed tick as a dict, the per-host ones rendered from their columns."""
    tick = agg.flush(tick_start, table.columns, table.exporter_names)
    hosts = tick.hosts
    return tick.components + [
        tick_dict(table.columns.tier(t), hosts.columns, i, tick.head, hosts.first_record + i)
        for i, t in enumerate(hosts.targets.tolist())
    ]


def names(table: TargetTable, rows: np.ndarray, targets: np.ndarray) -> list[tuple[int, str]]:
    return sorted((int(r), table.targets[int(t)].name) for r, t in zip(rows, targets, strict=True))


def test_component_monitor_and_exporter(table: TargetTable) -> None:
    f = flows_of(
        [
            {"dst": "203.0.113.10"},  # sbc udp/5060
            {"dst": "203.0.113.10", "proto": 6, "port": 5061},  # sbc tls
            {"dst": "203.0.113.10", "proto": 1, "port": 0},  # icmp
            {"dst": "203.0.113.10", "port": 5070},  # no monitor
            {"dst": "203.0.113.11"},  # no component
            {"dst": "2001:db8::10"},  # v6 component
            {"dst": "10.20.0.10"},  # registrar, but exported by edge: not counted
        ]
    )
    exp = np.full(len(f), EDGE)
    c = table.classify(f, exp)
    assert names(table, c.rows, c.targets) == [
        (0, "sbc-a udp/5060"),
        (1, "sbc-a tcp/5061"),
        (2, "sbc-a icmp"),
        (5, "sbc-v6 udp/5060"),
    ]
    c2 = table.classify(f, np.full(len(f), CORE))
    assert names(table, c2.rows, c2.targets) == [(6, "reg udp/5060")]
    c3 = table.classify(f, np.full(len(f), table.unknown_exporter))
    assert len(c3.rows) == 0


def test_most_specific_prefix_and_host_targets(table: TargetTable) -> None:
    f = flows_of(
        [
            {"dst": "198.51.100.5", "port": 10000},
            {"dst": "198.51.100.200", "port": 20000},
            {"dst": "198.51.100.5", "port": 15000},
            {"dst": "198.51.100.6", "port": 20001},  # outside the range
        ]
    )
    c = table.classify(f, np.full(len(f), EDGE))
    got = names(table, c.rows, c.targets)
    assert got == [
        (0, "gw 198.51.100.5 udp/10000-20000"),
        (0, "gw udp/10000-20000"),
        (1, "gw-special 198.51.100.200 udp/10000-20000"),
        (1, "gw-special udp/10000-20000"),
        (2, "gw 198.51.100.5 udp/10000-20000"),
        (2, "gw udp/10000-20000"),
    ]
    assert table.host_target_count == 2
    # host ids are stable and distinct from the component's
    ids = {table.targets[int(t)].id for t in c.targets}
    assert len(ids) == 4


def test_host_target_cap(table: TargetTable) -> None:
    hosts = [f"198.51.100.{i}" for i in range(1, 8)]
    f = flows_of([{"dst": h, "port": 12000} for h in hosts])
    c = table.classify(f, np.full(len(f), EDGE))
    assert table.host_target_count == 3  # the cap
    assert table.host_targets_dropped == 4
    # every flow still counts for the aggregate component target
    comp = [t for t in c.targets if table.targets[int(t)].host is None]
    assert len(comp) == 7


def test_aggregation_known_answers(table: TargetTable) -> None:
    base = {"dst": "203.0.113.10"}
    rows = [
        {**base, "src": "192.0.2.1", "packets": 10, "bytes": 5000, "sampling": 100},
        {**base, "src": "192.0.2.2", "packets": 1, "bytes": 100, "sampling": 100},
        {
            **base,
            "src": "198.18.0.1",
            "packets": 2,
            "bytes": 1000,
            "sip": SipMethod.INVITE,
            "sip_flags": SipFlag.SCANNER_UA,
        },
        {**base, "src": "198.18.0.1", "packets": 1, "bytes": 300, "sip": SipMethod.REGISTER},
        {**base, "src": "198.18.0.2", "packets": 1, "bytes": 80, "sip_flags": SipFlag.MALFORMED},
        # TLS: SYN only (new), SYN+ACK single packet (not new), full connection SYN|ACK|FIN (new)
        {**base, "proto": 6, "port": 5061, "flags": 0x02, "packets": 1, "bytes": 60},
        {**base, "proto": 6, "port": 5061, "flags": 0x12, "packets": 1, "bytes": 60},
        {
            **base,
            "proto": 6,
            "port": 5061,
            "flags": 0x13,
            "packets": 20,
            "bytes": 4000,
            "start": 1_000,
            "end": 91_000,
        },
        {**base, "proto": 1, "port": 0, "packets": 7, "bytes": 700},
    ]
    f = flows_of(rows)
    exp = np.full(len(f), EDGE)
    agg = TickAggregator()
    c = table.classify(f, exp)
    agg.add(f, c.rows, c.targets, exp)
    agg.add(f, c.rows, c.targets, exp)  # two batches in one tick add up
    ticks = {t["target"]: TrafficTick.model_validate(t) for t in flush(agg, table, 1_700_000_000.0)}
    sip = ticks["sbc-a udp/5060"]
    assert sip.packets == 2 * (1000 + 100 + 2 + 1 + 1)
    assert sip.bytes == 2 * (500_000 + 10_000 + 1000 + 300 + 80)
    assert sip.flows == 2 * (100 + 100 + 1 + 1 + 1)
    assert sip.flow_records == 10
    assert sip.sampled
    assert sip.sip_methods == {"INVITE": 2, "REGISTER": 2}
    assert sip.sip_scanner_packets == 2 and sip.sip_malformed_packets == 2
    assert sip.top_sources[0].source == "192.0.2.1" and sip.top_sources[0].packets == 2000
    assert sip.top_prefixes[0].source == "192.0.2.0/24" and sip.top_prefixes[0].packets == 2200
    assert [p.source for p in sip.top_prefixes] == ["192.0.2.0/24", "198.18.0.0/24"]
    assert sip.distinct_sources == 4
    assert sip.exporters == ["edge"]
    assert sum(sip.size_histogram) == sip.packets
    assert sip.bytes_per_packet == pytest.approx(sip.bytes / sip.packets, rel=1e-3)
    tls = ticks["sbc-a tcp/5061"]
    assert tls.new_connections == 4  # SYN-only and the full connection, twice
    assert tls.long_lived_flows == 2
    icmp = ticks["sbc-a icmp"]
    assert icmp.icmp_packets == 14
    # the 90 s TLS connection is spread over its 90 ticks; everything else was reset
    (after,) = flush(agg, table, 1_700_000_001.0)
    assert after["target"] == "sbc-a tcp/5061" and after["flow_records"] == 0
    assert after["packets"] == int(2 * 20 / 90) and after["long_lived_flows"] == 2


def test_long_flow_records_are_spread_over_their_duration(table: TargetTable) -> None:
    """A record exported at a 60 s active timeout counts 1/60 per tick for 60 ticks, not 60x once."""
    rtp = {
        "dst": "198.51.100.5",
        "port": 12000,
        "packets": 3000,
        "bytes": 3000 * 200,
        "start": 1_000_000,
        "end": 1_060_000,
    }
    short = {"dst": "198.51.100.5", "port": 12001, "packets": 10, "bytes": 2000}
    f = flows_of([rtp, short])
    exp = np.zeros(len(f), dtype=np.int64)
    agg = TickAggregator()
    c = table.classify(f, exp)
    agg.add(f, c.rows, c.targets, exp)
    series = []
    for t in range(70):
        ticks = {m["target"]: m for m in flush(agg, table, float(t))}
        series.append(ticks.get("gw udp/10000-20000", {}).get("packets", 0))
    assert series[0] == 50 + 10  # one tick's share of the long record, plus the short one
    assert series[1:60] == [50] * 59
    assert series[60:] == [0] * 10  # the span is over: nothing is counted twice
    assert sum(series) == 3000 + 10


def test_distinct_sources_estimate_at_scale(table: TargetTable) -> None:
    rng = np.random.default_rng(7)
    n = 50_000
    f = empty_flows(n)
    f["dst_hi"], f["dst_lo"] = addr_to_halves("203.0.113.10")
    f["proto"], f["dst_port"], f["packets"], f["bytes"] = 17, 5060, 1, 400
    srcs = rng.choice(2**32, size=20_000, replace=False).astype(np.uint64)
    f["src_lo"] = srcs[rng.integers(0, len(srcs), n)] | np.uint64(0xFFFF_0000_0000)
    truth = len(np.unique(f["src_lo"]))
    agg = TickAggregator()
    exp = np.zeros(n, dtype=np.int64)
    c = table.classify(f, exp)
    agg.add(f, c.rows, c.targets, exp)
    (raw,) = flush(agg, table, 0.0)
    tick = TrafficTick.model_validate(raw)
    assert abs(tick.distinct_sources - truth) / truth < 0.15
    assert len(tick.top_sources) == 10
    assert all(a.packets >= b.packets for a, b in zip(tick.top_sources, tick.top_sources[1:], strict=False))


def test_ipv6_prefixes_in_top_lists(table: TargetTable) -> None:
    f = flows_of(
        [
            {"dst": "2001:db8::10", "src": "2001:db8:aaaa:1::5", "packets": 3},
            {"dst": "2001:db8::10", "src": "2001:db8:aaaa:1::6", "packets": 4},
        ]
    )
    exp = np.zeros(len(f), dtype=np.int64)
    agg = TickAggregator()
    c = table.classify(f, exp)
    agg.add(f, c.rows, c.targets, exp)
    (raw,) = flush(agg, table, 0.0)
    tick = TrafficTick.model_validate(raw)
    assert tick.top_prefixes[0].source == "2001:db8:aaaa:1::/64"
    assert tick.top_prefixes[0].packets == 7
    assert ipaddress.ip_address(tick.top_sources[0].source) == ipaddress.ip_address("2001:db8:aaaa:1::6")
