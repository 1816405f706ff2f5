"""A real exporter end to end: softflowd -> UDP collector -> traffic ticks on a real NATS server."""

from __future__ import annotations

import asyncio
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import dpkt
import pytest

from vghelpers import ethernet_frame
from voxguard.ingest.service import IngestService
from voxguard.shared.batches import TrafficColumns, decode_batch
from voxguard.shared.bus import STREAM_TRAFFIC, Bus
from voxguard.shared.config import parse_config
from voxguard.shared.messages import TrafficTick
from voxguard.shared.runtime import ServiceContext
from voxguard.shared.settings import Settings

CFG = {
    "exporters": [{"name": "softflowd", "address": "127.0.0.1"}],
    "ingest": {"host": "127.0.0.1", "netflow_port": 0, "ipfix_port": 0, "sflow_port": 0, "tick_seconds": 0.5},
    "tiers": {
        "sbc": {
            "exporters": ["softflowd"],
            "per_host": False,
            "components": [{"name": "sbc-a", "addresses": ["203.0.113.10/32"]}],
            "monitors": [{"protocol": "udp", "ports": 5060}, {"protocol": "tcp", "ports": 5061}],
        },
        "media": {
            "exporters": ["softflowd"],
            "components": [{"name": "gw", "addresses": ["198.51.100.0/28"]}],
            "monitors": [{"protocol": "udp", "ports": "10000-20000"}],
        },
    },
}


def write_capture(path: Path) -> dict[str, tuple[int, int]]:
    """A pcap with known traffic; returns the expected (packets, bytes) per target name."""
    w = dpkt.pcap.Writer(path.open("wb"))
    t = 1_700_000_000.0
    expected: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for i in range(60):  # SIP from 6 sources
        w.writepkt(ethernet_frame(f"198.18.1.{i % 6 + 1}", "203.0.113.10", 5060, 5060, size=500), t + i * 0.01)
        expected["sbc-a udp/5060"][0] += 1
        expected["sbc-a udp/5060"][1] += 500
    for i in range(45):  # RTP to two gateways
        gw = "198.51.100.5" if i % 3 else "198.51.100.6"
        w.writepkt(ethernet_frame("198.18.2.1", gw, 40000, 12000 + (i % 3), size=200), t + i * 0.02)
        for name in ("gw udp/10000-20000", f"gw {gw} udp/10000-20000"):
            expected[name][0] += 1
            expected[name][1] += 200
    for i in range(5):  # TLS SYNs from 5 clients
        w.writepkt(
            ethernet_frame(f"198.18.3.{i + 1}", "203.0.113.10", 50000 + i, 5061, proto=6, flags=0x02), t + i * 0.1
        )
        expected["sbc-a tcp/5061"][0] += 1
        expected["sbc-a tcp/5061"][1] += 40
    for i in range(10):  # traffic to nobody we protect
        w.writepkt(ethernet_frame("198.18.4.1", "192.0.2.53", 5353, 53, size=80), t + i * 0.01)
    w.close()
    return {k: (v[0], v[1]) for k, v in expected.items()}


@pytest.mark.parametrize("version", [9, 10])
async def test_softflowd_to_nats(tmp_path: Path, need_tool, bus: Bus, version: int) -> None:  # type: ignore[no-untyped-def]
    softflowd = need_tool("softflowd")
    cfg = parse_config(CFG)
    expected = write_capture(tmp_path / "voip.pcap")
    ctx = ServiceContext(Settings(), cfg, bus.url)
    ctx.bus = bus
    svc = IngestService(ctx)
    got: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    ticks: list[TrafficTick] = []

    async def on_tick(tick: TrafficTick, _delivery: object) -> None:
        ticks.append(tick)
        g = got[tick.target]
        g[0] += tick.packets
        g[1] += tick.bytes
        g[2] += tick.new_connections
        g[3] = max(g[3], tick.distinct_sources)

    async def on_traffic(msg: Any, delivery: object) -> None:
        # per-host ticks arrive in batches (TrafficBatch), component ticks one by one
        for tick in [msg.tick(i) for i in range(msg.n)] if isinstance(msg, TrafficColumns) else [msg]:
            await on_tick(tick, delivery)

    def decode(data: bytes) -> Any:
        return decode_batch(data) if b'"columns"' in data else TrafficTick.model_validate_json(data)

    sub = await bus.subscribe_durable(
        STREAM_TRAFFIC, "e2e", "voxguard.traffic.v1.>", TrafficTick, on_traffic, decoder=decode
    )
    await svc.start()
    try:
        port = svc.collector.ports()["netflow" if version == 9 else "ipfix"]
        proc = await asyncio.create_subprocess_exec(
            str(softflowd),
            "-r",
            str(tmp_path / "voip.pcap"),
            "-n",
            f"127.0.0.1:{port}",
            "-v",
            str(version),
            "-D",
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        async with asyncio.timeout(20):
            while {k: (v[0], v[1]) for k, v in got.items()} != expected:
                await asyncio.sleep(0.1)
    finally:
        await svc.stop()
        await sub.stop()
    assert {k: (v[0], v[1]) for k, v in got.items()} == expected
    assert got["sbc-a tcp/5061"][2] == 5  # five SYN-only flows = five new connections
    assert got["sbc-a udp/5060"][3] == 6  # six distinct SIP sources
    sip = [t for t in ticks if t.target == "sbc-a udp/5060"]
    assert all(t.exporters == ["softflowd"] and t.tier.value == "sbc" for t in sip)
    assert {p.source for t in sip for p in t.top_prefixes} == {"198.18.1.0/24"}
    exporters = svc.pipeline.registry.all()
    assert [e.name for e in exporters] == ["softflowd"]
    fmt = "netflow9" if version == 9 else "ipfix"
    assert exporters[0].formats == {fmt} and exporters[0].decode_errors == 0
    assert svc.pipeline.stats.unclassified >= 1  # the DNS flow was decoded but belongs to no target
