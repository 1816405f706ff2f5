"""The running collector: HTTP surface, evidence, metrics, and hostile traffic next to good traffic."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import struct
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import dpkt
import httpx
import numpy as np
import pytest

from voxguard.ingest.decode.flows import SipMethod, addr_to_halves, empty_flows
from voxguard.ingest.encode.netflow import NetflowV9Encoder
from voxguard.ingest.encode.sflow import SflowEncoder, sip_request
from voxguard.ingest.service import build
from voxguard.shared.auth import KeyStore
from voxguard.shared.bus import Bus
from voxguard.shared.config import parse_config
from voxguard.shared.db import make_engine
from voxguard.shared.http import create_app
from voxguard.shared.runtime import ServiceContext
from voxguard.shared.settings import Settings

CFG = {
    "exporters": [{"name": "edge", "address": "127.0.0.1"}],
    "ingest": {"host": "127.0.0.1", "netflow_port": 0, "ipfix_port": 0, "sflow_port": 0, "tick_seconds": 0.2},
    "tiers": {
        "sbc": {
            "exporters": ["edge"],
            "per_host": False,
            "components": [{"name": "sbc-a", "addresses": ["203.0.113.10/32"]}],
            "monitors": [{"protocol": "udp", "ports": 5060}],
        }
    },
}
SBC = "203.0.113.10"


def sip_rows(n: int, src_base: str = "198.18.7.") -> np.ndarray:
    f = empty_flows(n)
    for i in range(n):
        f["src_hi"][i], f["src_lo"][i] = addr_to_halves(f"{src_base}{i % 200 + 1}")
    f["dst_hi"], f["dst_lo"] = addr_to_halves(SBC)
    f["proto"], f["src_port"], f["dst_port"], f["packets"], f["bytes"] = 17, 5060, 5060, 1, 600
    return f


class Running:
    def __init__(self, svc: Any, client: httpx.AsyncClient, key: str):
        self.svc, self.client, self.key = svc, client, key
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))

    def send(self, listener: str, payloads: list[bytes]) -> None:
        port = self.svc.collector.ports()[listener]
        for p in payloads:
            self.sock.sendto(p, ("127.0.0.1", port))

    async def get(self, path: str, **kw: Any) -> httpx.Response:
        return await self.client.get(path, headers={"Authorization": f"Bearer {self.key}"}, **kw)

    async def wait_for(self, cond: Any, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not cond():
                await asyncio.sleep(0.05)


@pytest.fixture
async def running(bus: Bus, tmp_path: Path) -> AsyncIterator[Running]:
    ctx = ServiceContext(Settings(), parse_config(CFG), bus.url)
    ctx.bus = bus
    spec, svc = build(ctx)
    keys = KeyStore(make_engine(f"sqlite:///{tmp_path}/keys.db"))
    keys.migrate()
    key = keys.create_key("test", "read")
    app = create_app("ingest", spec.routers, keys=keys)
    await svc.start()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        r = Running(svc, client, key)
        try:
            yield r
        finally:
            r.sock.close()
            await svc.stop()
            keys.engine.dispose()


async def test_exporters_stats_flows_and_auth(running: Running) -> None:
    enc = NetflowV9Encoder(source_id=7, template_id=400)
    flows = sip_rows(300)
    running.send("netflow", enc.encode(flows, 1_700_000_000, 60_000))
    pipe = running.svc.pipeline
    await running.wait_for(lambda: pipe.stats.flow_records >= 300)
    assert (await running.client.get("/v1/exporters")).status_code == 401
    r = await running.get("/v1/exporters")
    assert r.status_code == 200
    (exp,) = r.json()
    for key in (
        "address",
        "formats",
        "templates",
        "sampling_interval",
        "last_seen",
        "datagrams",
        "records",
        "decode_errors",
        "sequence_gaps",
    ):
        assert key in exp
    assert exp["address"] == "127.0.0.1" and exp["name"] == "edge" and exp["formats"] == ["netflow9"]
    assert exp["records"] == 300 and exp["decode_errors"] == 0 and exp["sequence_gaps"] == 0
    assert {t["id"] for t in exp["templates"]} == {400} and exp["templates"][0]["observation_domain"] == 7
    stats = (await running.get("/v1/ingest/stats")).json()
    assert stats["flow_records"] == 300 and stats["classified_records"] == 300 and stats["running"]
    targets = (await running.get("/v1/ingest/targets")).json()
    (t,) = targets
    await running.wait_for(lambda: pipe.stats.ticks_emitted >= 1)
    lines = (await running.get(f"/v1/targets/{t['id']}/flows", params={"limit": 50})).text.splitlines()
    assert len(lines) == 50 and '"destinationIPv4Address":"203.0.113.10"' in lines[0]
    assert (await running.get("/v1/targets/sbc-nope/flows")).status_code == 404
    r = await running.client.get("/metrics")
    assert 'voxguard_ingest_datagrams_total{exporter="edge",format="netflow9"}' in r.text
    assert 'voxguard_ingest_flow_records_total{exporter="edge",format="netflow9"}' in r.text


async def test_evidence_pcap_holds_sampled_sip(running: Running, need_tool: Any, tmp_path: Path) -> None:
    enc = SflowEncoder(agent="127.0.0.1", header_bytes=1024)
    flows = sip_rows(12)
    flows["sampling"] = 512
    payloads = [sip_request("INVITE", user_agent="friendly-scanner", call_id=f"c{i}@x") for i in range(12)]
    flows["bytes"] = [14 + 20 + 8 + len(p) for p in payloads]  # whole frames: nothing cut
    running.send("sflow", enc.flow_datagrams(flows, payloads))
    pipe = running.svc.pipeline
    await running.wait_for(lambda: pipe.stats.flow_records >= 12)
    await running.wait_for(lambda: any(t.get("sip_methods") for t in pipe.last_ticks.values()))
    tick = next(t for t in pipe.last_ticks.values() if t.get("sip_methods"))
    assert tick["sip_methods"] == {SipMethod.NAMES[SipMethod.INVITE]: 12 * 512}
    assert tick["sip_scanner_packets"] == 12 * 512 and tick["sampled"]
    target_id = tick["target_id"]
    r = await running.get(f"/v1/targets/{target_id}/evidence.pcap")
    assert r.status_code == 200 and r.headers["content-type"] == "application/vnd.tcpdump.pcap"
    pcap = tmp_path / "evidence.pcap"
    pcap.write_bytes(r.content)
    pkts = list(dpkt.pcap.Reader(pcap.open("rb")))
    assert len(pkts) == 12
    tshark = need_tool("tshark")
    out = subprocess.run(
        [
            str(tshark),
            "-n",
            "-r",
            str(pcap),
            "-T",
            "fields",
            "-e",
            "ip.dst",
            "-e",
            "sip.Method",
            "-e",
            "sip.User-Agent",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = [line.split("\t") for line in out.splitlines()]
    assert len(rows) == 12 and all(r[0] == SBC and r[1] == "INVITE" and r[2] == "friendly-scanner" for r in rows)


def hostile_datagrams(good: bytes) -> list[bytes]:
    rng = random.Random(3)
    bad = [
        b"",
        b"\x00",
        b"\x00\x09",  # v9 header cut
        good[:25],  # truncated inside the first set
        struct.pack("!HHIIII", 9, 1, 0, 0, 1, 7) + struct.pack("!HH", 0, 0xFFFF),  # set longer than datagram
        struct.pack("!HHIIII", 9, 1, 0, 0, 2, 7) + struct.pack("!HHHH", 0, 12, 300, 1) + struct.pack("!HH", 1, 0),
        struct.pack("!HHIIII", 10, 9000, 0, 0, 0, 7),  # ipfix length lies
        struct.pack("!HH", 7, 1) + bytes(40),  # unknown version
        struct.pack("!IIII", 5, 1, 0x7F000001, 0) + struct.pack("!III", 1, 1, 2**31 - 1),  # sflow absurd count
        bytes(rng.getrandbits(8) for _ in range(1400)),
        b"\xff" * 65000,
    ]
    bad += [bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 300))) for _ in range(50)]
    return bad


async def test_hostile_traffic_costs_nothing_accepted(running: Running) -> None:
    enc = NetflowV9Encoder(source_id=1, template_id=500)
    good = enc.encode(sip_rows(2000), 1_700_000_000, 60_000)
    assert len(good) > 10
    mixed: list[tuple[str, bytes]] = []
    hostile = hostile_datagrams(good[0])
    for i, dg in enumerate(good):
        mixed.append(("netflow", dg))
        mixed.append(("netflow" if i % 2 else "sflow", hostile[i % len(hostile)]))
    mixed += [("ipfix", h) for h in hostile]
    for listener, payload in mixed:
        running.send(listener, [payload])
    pipe = running.svc.pipeline
    await running.wait_for(lambda: pipe.stats.flow_records >= 2000 and pipe.stats.datagrams >= len(mixed))
    await asyncio.sleep(0.3)
    assert running.svc.collector.running and running.svc.collector.failed_batches == 0
    assert pipe.stats.flow_records == 2000  # every good record, nothing invented from garbage
    (exp,) = (await running.get("/v1/exporters")).json()
    assert exp["decode_errors"] >= len(hostile) - 2  # some random bytes happen to be empty-but-valid
    assert exp["records"] >= 2000
    # and it keeps working afterwards
    running.send("netflow", enc.encode(sip_rows(100), 1_700_000_001, 61_000))
    await running.wait_for(lambda: pipe.stats.flow_records >= 2100)


def test_decode_matches_manifest_counts(shared_dir: Path) -> None:
    import json

    from voxguard.cli.decode_cmd import decode_file

    captures = shared_dir / "data" / "captures"
    manifest = json.loads((captures / "manifest.json").read_text())
    for entry in manifest:
        recs, _errors = decode_file(captures / entry["file"])
        want = (
            entry["cflow_flow_records"]
            + entry["cflow_options_records"]
            + entry["sflow_flow_samples"]
            + entry["sflow_counter_samples"]
        )
        assert len(recs) == want, entry["file"]
        for r in recs:
            assert {"exporter", "observationDomainId"} <= r.keys(), entry["file"]
            if "counters" not in r.get("sampleType", ""):
                assert "samplingInterval" in r, entry["file"]
    # and the command itself prints the same records as JSON lines
    cap = captures / "nf9_cisco_asa_nsel.pcap"
    out = subprocess.run(
        [sys.executable, "-m", "voxguard.cli.main", "decode", str(cap)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert lines == json.loads(json.dumps(decode_file(cap)[0], default=str))
    bad = subprocess.run(
        [sys.executable, "-m", "voxguard.cli.main", "decode", __file__], capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 1 and "error" in bad.stderr


def test_replay_cli_sends_every_datagram(shared_dir: Path) -> None:
    cap = shared_dir / "data" / "captures" / "ipfix_cisco_pmacct_401_mpls_bulk.pcap"
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    rx.settimeout(5)
    port = rx.getsockname()[1]
    out = subprocess.run(
        [sys.executable, "-m", "voxguard.cli.main", "replay", str(cap), "--to", f"127.0.0.1:{port}", "--rate", "5000"],
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ,
    )
    assert out.returncode == 0, out.stderr
    assert "sent 596 datagrams" in out.stdout
    got = 0
    try:
        while got < 596:
            rx.recv(65535)
            got += 1
    except TimeoutError:
        pass
    rx.close()
    assert got == 596
    bad = subprocess.run(
        [sys.executable, "-m", "voxguard.cli.main", "replay", __file__, "--to", "127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1 and "error" in bad.stderr
