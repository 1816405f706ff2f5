"""The running collector publishes per-host ticks as batches and component ticks one by one."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import orjson

from voxguard.ingest.decode.flows import addr_to_halves, empty_flows
from voxguard.ingest.encode.netflow import NetflowV9Encoder
from voxguard.ingest.service import build
from voxguard.shared.batches import decode_batch
from voxguard.shared.bus import STREAM_TRAFFIC, Bus, Delivery
from voxguard.shared.config import parse_config
from voxguard.shared.messages import TrafficTick
from voxguard.shared.runtime import ServiceContext
from voxguard.shared.settings import Settings

CFG = {
    "exporters": [{"name": "edge", "address": "127.0.0.1"}],
    "ingest": {"host": "127.0.0.1", "netflow_port": 0, "ipfix_port": 0, "sflow_port": 0, "tick_seconds": 0.2},
    "tiers": {
        "media": {
            "exporters": ["edge"],
            "per_host": True,
            "components": [{"name": "media-a", "addresses": ["198.51.100.0/28"]}],
            "monitors": [{"protocol": "udp", "ports": "10000-20000", "role": "media"}],
        }
    },
}
HOSTS = ["198.51.100.2", "198.51.100.3", "198.51.100.9"]


def rtp_rows() -> Any:
    f = empty_flows(len(HOSTS) * 10)
    for i in range(len(f)):
        f["src_hi"][i], f["src_lo"][i] = addr_to_halves(f"192.0.2.{i % 10 + 1}")
        f["dst_hi"][i], f["dst_lo"][i] = addr_to_halves(HOSTS[i // 10])
    f["proto"], f["src_port"], f["dst_port"], f["packets"], f["bytes"] = 17, 40000, 12000, 50, 50 * 172
    return f


async def test_host_ticks_travel_in_batches(bus: Bus) -> None:
    ctx = ServiceContext(Settings(), parse_config(CFG), bus.url)
    ctx.bus = bus
    _, svc = build(ctx)
    seen: list[tuple[str, Any]] = []

    async def on_msg(msg: Any, d: Delivery) -> None:
        seen.append((d.subject, msg))

    def decode(data: bytes) -> Any:
        doc = orjson.loads(data)
        return decode_batch(doc) if "columns" in doc else TrafficTick.model_validate(doc)

    sub = await bus.subscribe_durable(STREAM_TRAFFIC, "batches", "voxguard.traffic.v1.>", TrafficTick, on_msg,
                                      decoder=decode)  # fmt: skip
    await svc.start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for p in NetflowV9Encoder(source_id=3, template_id=300).encode(rtp_rows(), 1_700_000_000, 60_000):
            sock.sendto(p, ("127.0.0.1", svc.collector.ports()["netflow"]))
        async with asyncio.timeout(15):
            while not any(s.endswith(".h") for s, _ in seen) or not any(
                s == "voxguard.traffic.v1.media" for s, _ in seen
            ):
                await asyncio.sleep(0.05)
    finally:
        sock.close()
        await svc.stop()
        await sub.stop()
    singles = [m for s, m in seen if s == "voxguard.traffic.v1.media"]
    batches = [m for s, m in seen if s == "voxguard.traffic.v1.media.h"]
    assert {s for s, _ in seen} == {"voxguard.traffic.v1.media", "voxguard.traffic.v1.media.h"}
    assert all(isinstance(m, TrafficTick) and m.host is None for m in singles)
    assert sum(m.packets for m in singles) == 50 * 30
    recs = [
        (b.ids[i], b.meta(i)["host"], b.num["packets"][i], b.sources(i).top_sources)
        for b in batches
        for i in range(b.n)
    ]
    assert sorted(h for _, h, _, _ in recs) == HOSTS
    assert sum(p for _, _, p, _ in recs) == 50 * 30
    assert all(len(tops) == 10 and tops[0].source.startswith("192.0.2.") for *_, tops in recs)
    assert svc.published == len(singles) + len(recs) and svc.messages_published == len(singles) + len(batches)
