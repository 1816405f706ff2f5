"""The sender: real UDP to 127.0.0.1, read back, decoded with the real decoders, compared with the
model's flows; the router flow cache; pacing; the loopback guard."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pytest

from voxguard.ingest.decode.flows import FLOW_DTYPE, SipFlag, SipMethod, empty_flows
from voxguard.ingest.decode.netflow import NetflowDecoder
from voxguard.ingest.decode.sflow import SflowDecoder
from voxguard.ingest.simulate.model import ModelParams, SecondFlows
from voxguard.ingest.simulate.sender import FlowCache, flow_keys, parse_formats, run_simulate, simulate
from voxguard.shared.config import TargetDef, VoxGuardConfig, example_config_path, load_config

T0 = 1_700_438_400 + 10 * 3600  # Monday 10:00 UTC
SMALL = ModelParams(scale=0.2)


@pytest.fixture(scope="module")
def config() -> VoxGuardConfig:
    return load_config(example_config_path())


@dataclass
class Collector:
    """UDP sockets on 127.0.0.1 that keep what arrives (bounded), one per format."""

    socks: dict[str, socket.socket]
    got: dict[str, list[tuple[bytes, str, float]]] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def ports(self) -> dict[str, int]:
        ports = {fmt: s.getsockname()[1] for fmt, s in self.socks.items()}
        return ports | {"netflow5": ports["netflow9"]}

    def run(self, fmt: str) -> None:
        s = self.socks[fmt]
        while not self.stop.is_set() and len(self.got[fmt]) < 200_000:
            try:
                data, addr = s.recvfrom(65535)
            except TimeoutError:
                continue
            self.got[fmt].append((data, addr[0], time.monotonic()))

    def datagrams(self, fmt: str) -> list[tuple[bytes, str]]:
        return [(d, a) for d, a, _ in self.got[fmt]]


@pytest.fixture
def collector() -> Iterator[Collector]:
    socks = {}
    for fmt in ("netflow9", "ipfix", "sflow5"):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
        s.bind(("127.0.0.1", 0))
        s.settimeout(0.1)
        socks[fmt] = s
    c = Collector(socks, {f: [] for f in socks})
    threads = [threading.Thread(target=c.run, args=(f,), daemon=True) for f in socks]
    for t in threads:
        t.start()
    yield c
    c.stop.set()
    for t in threads:
        t.join(timeout=2)
    for s in socks.values():
        s.close()


def _drain(c: Collector, expected: int) -> None:
    deadline = time.monotonic() + 5
    while sum(len(v) for v in c.got.values()) < expected and time.monotonic() < deadline:
        time.sleep(0.02)


def test_sent_datagrams_decode_to_the_simulated_flows(config: VoxGuardConfig, collector: Collector) -> None:
    seconds: list[SecondFlows] = []
    rep = simulate(config, ports=collector.ports, duration_s=25, time_warp=True, start=T0, seed=2, params=SMALL,
                   attacks="sip_flood@5s+15s*8", sampling=16, on_second=seconds.append)  # fmt: skip
    _drain(collector, rep.datagrams)
    got = {f: len(v) for f, v in collector.got.items()}
    by_name = {e.name: e for e in rep.exporters}
    assert got["sflow5"] == by_name["edge-sbc-01"].datagrams + by_name["sw-core-01"].datagrams
    assert got["netflow9"] == by_name["edge-media-01"].datagrams
    assert got["ipfix"] == by_name["edge-api-01"].datagrams + by_name["edge-turn-01"].datagrams
    # each router sends from its own configured address
    senders = {a for fmt in collector.got for _, a, _ in collector.got[fmt]}
    assert senders == {"127.0.1.1", "127.0.1.2", "127.0.1.3", "127.0.1.4", "127.0.1.5"}

    rows = np.concatenate([s.flows for s in seconds])
    tiers = np.array([t.tier.value for t in _targets(config)])[np.concatenate([s.target for s in seconds])]
    nf = NetflowDecoder().decode_batch(collector.datagrams("netflow9") + collector.datagrams("ipfix"))
    assert not [r.error for r in nf.reports if r.error]
    flow_tiers = np.isin(tiers, ["media", "api", "turn"])
    # unsampled NetFlow/IPFIX: the records carry every packet and byte of the flows, on the same 5-tuples
    assert int(nf.flows["packets"].sum()) == int(rows["packets"][flow_tiers].sum())
    assert int(nf.flows["bytes"].sum()) == int(rows["bytes"][flow_tiers].sum())
    assert set(flow_keys(nf.flows).tolist()) == set(flow_keys(rows[flow_tiers]).tolist())
    assert len(nf.flows) < flow_tiers.sum() / 5  # the flow cache aggregates per-second updates

    sf = SflowDecoder().decode_batch(collector.datagrams("sflow5"))
    assert not [r.error for r in sf.reports if r.error]
    samples = sf.flows
    assert len(samples) == by_name["edge-sbc-01"].records + by_name["sw-core-01"].records
    assert set(np.unique(samples["sampling"]).tolist()) == {16}
    sampled_pk = int(samples["packets"].sum()) * 16
    true_pk = int(rows["packets"][np.isin(tiers, ["sbc", "registrar"])].sum())
    assert sampled_pk == pytest.approx(true_pk, rel=0.15)
    assert set(flow_keys(samples).tolist()) <= set(flow_keys(rows).tolist())
    # SIP text made it through: the method mix and the scanners of the flood
    m = samples["sip_method"]
    assert (m == SipMethod.REGISTER).sum() > 0 and (m == SipMethod.INVITE).sum() > 0
    scan = (samples["sip_flags"] & SipFlag.SCANNER_UA) != 0
    assert scan.sum() > 10
    assert set(rep.attacks[0].sources) >= {_addr(lo) for lo in samples["src_lo"][scan]}
    assert not (samples["sip_flags"] & SipFlag.MALFORMED).any()


def test_malformed_sip_reaches_the_decoder_as_malformed(config: VoxGuardConfig, collector: Collector) -> None:
    rep = simulate(config, ports=collector.ports, duration_s=8, time_warp=True, start=T0, params=SMALL,
                   attacks="malformed_sip@0s+8s*6", sampling=4, formats="sflow5")  # fmt: skip
    _drain(collector, rep.datagrams)
    sf = SflowDecoder().decode_batch(collector.datagrams("sflow5"))
    bad = (sf.flows["sip_flags"] & SipFlag.MALFORMED) != 0
    assert bad.sum() > 20
    assert set(rep.attacks[0].sources) >= {_addr(lo) for lo in sf.flows["src_lo"][bad]}


def test_sampled_netflow_announces_its_interval(config: VoxGuardConfig, collector: Collector) -> None:
    rep = simulate(config, ports=collector.ports, duration_s=6, time_warp=True, start=T0, params=SMALL,
                   formats={"media": "ipfix", "edge-api-01": "netflow9"}, netflow_sampling=10)  # fmt: skip
    _drain(collector, rep.datagrams)
    assert {e.name: e.format for e in rep.exporters}["edge-media-01"] == "ipfix"
    nf = NetflowDecoder().decode_batch(collector.datagrams("ipfix") + collector.datagrams("netflow9"))
    media = nf.flows[nf.flows["dst_port"] >= 10000]
    assert len(media) and set(np.unique(media["sampling"]).tolist()) == {10}
    sent = sum(e.packets for e in rep.exporters if e.name in ("edge-media-01", "edge-turn-01", "edge-api-01"))
    assert int((nf.flows["packets"].astype(np.int64) * nf.flows["sampling"]).sum()) == pytest.approx(sent, rel=0.05)


def test_real_time_pacing_spreads_datagrams(config: VoxGuardConfig, collector: Collector) -> None:
    t = time.monotonic()
    rep = simulate(config, ports=collector.ports, duration_s=2, params=SMALL, sampling=8)
    took = time.monotonic() - t
    assert 1.9 <= took < 6
    _drain(collector, rep.datagrams)
    times = sorted(ts for fmt in collector.got for _, _, ts in collector.got[fmt])
    assert len(times) == rep.datagrams > 20
    gaps = np.diff(times)
    assert times[-1] - times[0] > 1.2 and gaps.max() < 0.6  # not one burst per second
    assert abs(rep.start - time.time()) < 10


def test_refuses_non_loopback_destinations(config: VoxGuardConfig) -> None:
    with pytest.raises(ValueError, match="loopback"):
        simulate(config, to_host="192.0.2.1", duration_s=1)
    with pytest.raises(ValueError, match="duration"):
        simulate(config, duration_s=0)
    with pytest.raises(ValueError, match="unknown export format"):
        simulate(config, formats="netflow7", duration_s=1, time_warp=True, params=SMALL)


def test_flow_cache_exports_like_a_router() -> None:
    cache = FlowCache(active_s=60, inactive_s=15)
    t0 = 1_000_000
    rtp = _row(1, 5004, 17)
    sip = _row(2, 5060, 17)
    syn = _row(3, 443, 6)
    out = []
    for i in range(130):
        seg = [rtp]
        if i == 0:
            seg += [sip, syn | {"tcp_flags": 0x1A}]
        if i == 3:
            seg.append(syn | {"tcp_flags": 0x11})
        out.append(cache.update(_rows(seg, t0 + i), t0 + i))
    when = {i: r for i, r in enumerate(out) if len(r)}
    tcp = [(i, r) for i, r in when.items() if (r["proto"] == 6).any()]
    assert [i for i, _ in tcp] == [3]  # FIN: exported at once, with the SYN of its first second
    assert tcp[0][1][tcp[0][1]["proto"] == 6]["tcp_flags"][0] == 0x1B
    udp_sip = [i for i, r in when.items() if (r["dst_port"] == 5060).any()]
    assert udp_sip == [15]  # idle for the inactive timeout
    long = [(i, r[r["dst_port"] == 5004]) for i, r in when.items() if (r["dst_port"] == 5004).any()]
    assert [i for i, _ in long] == [60, 121]
    for _, r in long:
        assert int(r["end_ms"][0] - r["start_ms"][0]) >= 60_000 and int(r["packets"][0]) == 61 * 50
    rest = cache.flush()
    total = sum(int(r["packets"][r["dst_port"] == 5004].sum()) for r in out) + int(rest["packets"].sum())
    assert total == 130 * 50 and len(cache) == 0


def test_flow_cache_spreads_sessions_already_running_at_start() -> None:
    """Calls running when the simulation starts are re-exported at their own phase of the active
    timeout, not all in the same second one timeout after the start (what made a warm-up spike)."""
    cache = FlowCache(active_s=60, inactive_s=15)
    t0 = 2_000_000
    calls = [_row(i, 5004, 17) for i in range(1, 61)]
    ages = np.arange(60, 120, dtype=np.int64)  # each began 60..119 s before the start
    export_at: dict[int, int] = {}
    for i in range(70):
        seg = _rows(calls, t0 + i)
        for r in cache.update(seg, t0 + i, ages + i):
            export_at.setdefault(int(r["src_port"]), i)
    assert len(export_at) == 60
    seconds = sorted(export_at.values())
    assert len(set(seconds)) >= 50  # spread over the minute, not one burst
    assert max(seconds) <= 60
    # without ages (a cache that sees flows from their first second) every call exports together
    cold = FlowCache(active_s=60, inactive_s=15)
    first = [i for i in range(70) if len(cold.update(_rows(calls, t0 + i), t0 + i))]
    assert first == [60]


def test_run_simulate_cli_entry(config: VoxGuardConfig, collector: Collector, monkeypatch: pytest.MonkeyPatch) -> None:
    buf = io.StringIO()
    assert run_simulate(list_scenarios=True, out=buf) == 0
    assert "websocket_exhaustion" in buf.getvalue()
    assert parse_formats("sbc=sflow5, edge-api-01=netflow9") == {"sbc": "sflow5", "edge-api-01": "netflow9"}
    assert parse_formats("ipfix") == "ipfix" and parse_formats(None) is None
    import voxguard.ingest.simulate.sender as sender

    real = sender.simulate
    here = {"ports": collector.ports, "params": SMALL}
    monkeypatch.setattr(sender, "simulate", lambda cfg, **kw: real(cfg, **kw | here))
    buf = io.StringIO()
    assert run_simulate(str(example_config_path()), duration=3, attacks=["tdos@1s+2s*3"], time_warp=True, out=buf) == 0
    text = buf.getvalue()
    assert "edge-sbc-01" in text and "attack tdos on sbc-eu-1" in text


def _targets(config: VoxGuardConfig) -> list[TargetDef]:
    return list(config.iter_targets())


def _addr(lo: int) -> str:
    return f"{(int(lo) >> 24) & 255}.{(int(lo) >> 16) & 255}.{(int(lo) >> 8) & 255}.{int(lo) & 255}"


def _row(src: int, dport: int, proto: int) -> dict[str, int]:
    rtp = dport == 5004
    return {
        "src_lo": 0xFFFF_0A00_0000 + src,
        "dst_lo": 0xFFFF_C633_6401,
        "src_port": 40000 + src,
        "dst_port": dport,
        "proto": proto,
        "packets": 50 if rtp else 2,
        "bytes": 10_000 if rtp else 1200,
    }


def _rows(specs: list[dict[str, int]], t: int) -> np.ndarray:
    out = empty_flows(len(specs))
    for i, spec in enumerate(specs):
        for k, v in spec.items():
            out[k][i] = v
        out["start_ms"][i] = t * 1000
        out["end_ms"][i] = t * 1000 + 999
        out["ip_version"][i] = 4
    assert out.dtype == FLOW_DTYPE
    return out


def test_sampled_distinct_sources_follow_the_sampling() -> None:
    from voxguard.ingest.simulate.sender import sampled_distinct

    # a bot army of 1000 sources with a packet each: about 1000/64 of them are ever sampled
    assert sampled_distinct(np.array([1000.0]), np.array([1000.0]), 64)[0] == pytest.approx(15.5, rel=0.02)
    # ten busy trunks: every one is seen
    assert sampled_distinct(np.array([10.0]), np.array([64_000.0]), 64)[0] == pytest.approx(10.0)
    assert sampled_distinct(np.array([7.0]), np.array([3.0]), 1)[0] == 7.0  # unsampled: all of them
