"""Encode the model's flows as each router would export them and send them to the collector.

Per exporter of the config: NetFlow v9 / IPFIX (/ v5) exporters pass the per-second flows
through a router-like flow cache (active timeout 60 s, inactive 15 s, FIN/RST ends a flow) and
optionally 1-in-N packet sampling announced in an options template; sFlow exporters sample
1-in-N packets and send the raw headers, with SIP text for SIP flows (scanner User-Agents,
unparseable payloads for malformed SIP). Each exporter sends from its own configured address
(127.0.1.x in the example config: Linux accepts any 127/8 address), datagrams spread evenly
over each second, only to loopback unless told otherwise, and stops after ``duration_s``.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from voxguard.ingest.decode.flows import SipFlag, SipMethod, empty_flows, halves_to_addr
from voxguard.ingest.encode.netflow import IpfixEncoder, NetflowV5Encoder, NetflowV9Encoder
from voxguard.ingest.encode.sflow import InterfaceCounters, SflowEncoder, sip_request, sip_response
from voxguard.ingest.simulate.attacks import (
    AttackTruth,
    Scenario,
    add_attacks,
    describe_scenarios,
    parse_attack_specs,
)
from voxguard.ingest.simulate.model import FIN, RST, ModelParams, SecondFlows, TrafficModel, mix64
from voxguard.shared.config import Tier, VoxGuardConfig, load_config

__all__ = [
    "DEFAULT_FORMATS",
    "FORMATS",
    "ExporterStats",
    "FlowCache",
    "SimulationReport",
    "parse_formats",
    "run_simulate",
    "simulate",
    "sip_payload",
]

FORMATS = ("netflow9", "ipfix", "sflow5", "netflow5")
# sFlow where SIP must be seen (method mix, scanners, malformed), flow exports elsewhere
DEFAULT_FORMATS: dict[Tier, str] = {
    Tier.SBC: "sflow5",
    Tier.REGISTRAR: "sflow5",
    Tier.MEDIA: "netflow9",
    Tier.API: "ipfix",
    Tier.TURN: "ipfix",
}
DEFAULT_SFLOW_SAMPLING = 64  # simulate's default sFlow 1-in-N


def sampled_distinct(distinct: np.ndarray, packets: np.ndarray, n: int) -> np.ndarray:
    """Expected distinct sources among 1-in-``n`` packet samples, for ``distinct`` sources sending
    ``packets`` in all (evenly): each is seen with probability ``1 - exp(-k / n)``."""
    d = np.asarray(distinct, dtype=np.float64)
    if n <= 1:
        return d
    per = np.asarray(packets, dtype=np.float64) / np.maximum(d, 1e-9)
    return d * -np.expm1(-per / n)


_PORT_FIELD = {"netflow9": "netflow_port", "netflow5": "netflow_port", "ipfix": "ipfix_port", "sflow5": "sflow_port"}
MAX_SECONDS = 7 * 86_400


# ---------------------------------------------------------------------------------------------
# the router's flow cache


def flow_keys(f: np.ndarray) -> np.ndarray:
    """A 64-bit key per row from its 5-tuple (and ICMP type/code)."""
    h = mix64(f["src_hi"])
    for col in ("src_lo", "dst_hi", "dst_lo"):
        h = mix64(h ^ f[col])
    tail = (
        (f["src_port"].astype(np.uint64) << np.uint64(40))
        | (f["dst_port"].astype(np.uint64) << np.uint64(24))
        | (f["proto"].astype(np.uint64) << np.uint64(16))
        | (f["icmp_type"].astype(np.uint64) << np.uint64(8))
        | f["icmp_code"].astype(np.uint64)
    )
    return mix64(h ^ tail)


class FlowCache:
    """A router's flow cache: per-second flow updates in, export records out when a flow has run
    ``active_s`` (its record then spans that long), has been idle ``inactive_s``, or saw FIN/RST."""

    def __init__(self, active_s: int = 60, inactive_s: int = 15):
        self.active_ms = active_s * 1000
        self.inactive_s = inactive_s
        self._rows = empty_flows()
        self._key = np.zeros(0, dtype=np.uint64)
        self._last = np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._rows)

    def update(self, seg: np.ndarray, t: int, age: np.ndarray | None = None) -> np.ndarray:
        """Add second ``t``'s rows; return the records the cache exports at the end of ``t``.

        ``age`` (seconds since each row's session began) places sessions that were already running
        when the cache first sees them (the simulation's first seconds) at their own phase of the
        active timeout, as in a router that has been up for a while: otherwise every long call and
        WebSocket would be re-exported in the same second, one active timeout after the start.
        """
        seg_keys = flow_keys(seg)
        if age is not None and len(seg):
            running = (np.asarray(age) > 0) & ~np.isin(seg_keys, self._key)
            if running.any():
                seg = seg.copy()
                phase = (np.asarray(age, dtype=np.int64)[running] % (self.active_ms // 1000)) * 1000
                seg["start_ms"][running] = np.maximum(seg["start_ms"][running].astype(np.int64) - phase, 0).astype(
                    seg["start_ms"].dtype
                )
        rows = np.concatenate([self._rows, seg])
        keys = np.concatenate([self._key, seg_keys])
        last = np.concatenate([self._last, np.full(len(seg), t, dtype=np.int64)])
        if len(rows) == 0:
            return rows
        uniq, first, inv = np.unique(keys, return_index=True, return_inverse=True)
        g = rows[first].copy()
        if len(uniq) < len(rows):
            inv = inv.reshape(-1)
            g["packets"] = np.bincount(inv, weights=rows["packets"].astype(np.float64)).astype(np.uint64)
            g["bytes"] = np.bincount(inv, weights=rows["bytes"].astype(np.float64)).astype(np.uint64)
            lo = np.full(len(uniq), np.iinfo(np.uint64).max, dtype=np.uint64)
            np.minimum.at(lo, inv, rows["start_ms"])
            hi = np.zeros(len(uniq), dtype=np.uint64)
            np.maximum.at(hi, inv, rows["end_ms"])
            fl = np.zeros(len(uniq), dtype=np.uint8)
            np.bitwise_or.at(fl, inv, rows["tcp_flags"])
            seen = np.zeros(len(uniq), dtype=np.int64)
            np.maximum.at(seen, inv, last)
            g["start_ms"], g["end_ms"], g["tcp_flags"] = lo, hi, fl
        else:
            seen = last[first]
        done = (
            ((g["end_ms"] - g["start_ms"]) >= np.uint64(self.active_ms))
            | ((g["tcp_flags"] & (FIN | RST)) != 0)
            | (t - seen >= self.inactive_s)
        )
        self._rows, self._key, self._last = g[~done], uniq[~done], seen[~done]
        out = g[done]
        out["sip_method"] = 0
        out["sip_flags"] = 0
        return out

    def flush(self) -> np.ndarray:
        """Export everything still cached (the simulation ends)."""
        out = self._rows
        self._rows = empty_flows()
        self._key = np.zeros(0, dtype=np.uint64)
        self._last = np.zeros(0, dtype=np.int64)
        out["sip_method"] = 0
        out["sip_flags"] = 0
        return out


# ---------------------------------------------------------------------------------------------
# SIP payloads for sampled packets

_UAS = (
    "Yealink SIP-T46S 66.86.0.15",
    "Polycom/5.9.5.0614 PolycomVVX-VVX_411-UA/5.9.5.0614",
    "Grandstream GXP2170 1.0.11.23",
    "Zoiper rv2.10.18.2",
    "Linphone/5.2.0 (belle-sip/5.2.0)",
    "Cisco-CP8845/14.2.1",
    "MicroSIP/3.21.3",
    "Asterisk PBX 20.5.0",
)
_SCANNER_UAS = ("friendly-scanner", "sipvicious", "sipcli/v1.8", "VaxSIPUserAgent/3.1", "sundayddr")
_RESPONSES = ((100, "Trying"), (180, "Ringing"), (200, "OK"), (486, "Busy Here"), (503, "Service Unavailable"))


def sip_payload(row: np.void, salt: int) -> bytes | None:
    """The SIP text of one sampled packet of ``row`` (None when the row carries no SIP)."""
    method, flags = int(row["sip_method"]), int(row["sip_flags"])
    h = int(mix64(np.array([int(row["src_lo"]) ^ salt], dtype=np.uint64))[0])
    if flags & SipFlag.MALFORMED:
        return _garbage(h)
    if method == SipMethod.NONE:
        return None
    src = halves_to_addr(row["src_hi"], row["src_lo"])
    dst = halves_to_addr(row["dst_hi"], row["dst_lo"])
    call_id = f"{h & 0xFFFFFFFFFFFF:012x}@{src}"
    if method == SipMethod.RESPONSE:
        status, reason = _RESPONSES[(h >> 8) % 3]
        return sip_response(status, reason, call_id=call_id, server=_UAS[(h >> 20) % len(_UAS)])
    name = SipMethod.NAMES.get(method, "INFO")
    if name == "OTHER":
        name = "INFO"
    ua = _SCANNER_UAS[(h >> 12) % len(_SCANNER_UAS)] if flags & SipFlag.SCANNER_UA else _UAS[(h >> 20) % len(_UAS)]
    user = f"+1555{(h >> 24) % 10_000_000:07d}"
    target = "voip.example.net" if name in ("REGISTER", "OPTIONS") else f"+1555{(h >> 32) % 10_000_000:07d}@{dst}"
    return sip_request(
        name,
        user_agent=ua,
        request_uri=f"sip:{target}",
        from_uri=f"sip:{user}@voip.example.net",
        call_id=call_id,
        via_host=f"{src}:{int(row['src_port'])}",
        branch=f"z9hG4bK{h & 0xFFFFFFFF:08x}",
        sdp=name == "INVITE",
    )


def _garbage(h: int) -> bytes:
    """Fuzzer output that is not SIP: binary noise, or a start line with bare LFs and junk."""
    rng = np.random.default_rng(h)
    body = rng.integers(0, 256, int(rng.integers(8, 200)), dtype=np.uint8).tobytes()
    return body if h & 1 else b"INVITE sip:\x00\xff@" + body[:40] + b" SIP/2.0\nVia: \x01\x02\n\n"


# ---------------------------------------------------------------------------------------------
# exporters


@dataclass
class ExporterStats:
    """What one simulated router sent."""

    name: str
    address: str  # configured address
    bound: str  # address the socket actually used
    format: str
    port: int
    tiers: list[str] = field(default_factory=list)
    datagrams: int = 0
    bytes_sent: int = 0
    records: int = 0  # flow records (NetFlow/IPFIX) or flow samples (sFlow)
    flows: int = 0  # model flow rows (per-second updates) this exporter saw
    packets: int = 0  # packets those rows carried (unsampled)
    sip_samples: int = 0
    send_errors: int = 0


class _Exporter:
    """One router: its encoder, sampling, flow cache and socket."""

    def __init__(self, stats: ExporterStats, index: int, *, sampling: int, netflow_sampling: int,
                 header_bytes: int, seed: int, boot: int):  # fmt: skip
        self.stats = stats
        self.rng = np.random.default_rng([seed, index, 0x5E4D])
        self.salt = seed * 1_000_003 + index
        self.boot = boot
        self.cache = FlowCache()
        fmt = stats.format
        self.sampling = sampling if fmt == "sflow5" else netflow_sampling
        interval = self.sampling if self.sampling > 1 else None
        self.sflow: SflowEncoder | None = None
        self.v9: NetflowV9Encoder | None = None
        self.ipfix: IpfixEncoder | None = None
        self.v5: NetflowV5Encoder | None = None
        if fmt == "sflow5":
            self.sflow = SflowEncoder(stats.address, header_bytes=header_bytes, max_datagram=1400)
        elif fmt == "netflow9":
            self.v9 = NetflowV9Encoder(source_id=index, ipv6=None, sampling_interval=interval)
        elif fmt == "ipfix":
            self.ipfix = IpfixEncoder(observation_domain_id=index, ipv6=None, sampling_interval=interval)
        else:
            self.v5 = NetflowV5Encoder(engine_id=index & 0xFF, sampling_interval=self.sampling if interval else 0)
        self.in_octets = 0
        self.in_pkts = 0
        self.sock: socket.socket | None = None

    def encode(self, rows: np.ndarray, t: int, *, final: bool = False, age: np.ndarray | None = None) -> list[bytes]:
        """The datagrams this router sends at the end of second ``t`` for these rows (``age``: see
        ``FlowCache.update``)."""
        self.stats.flows += len(rows)
        self.stats.packets += int(rows["packets"].sum())
        self.in_octets += int(rows["bytes"].sum())
        self.in_pkts += int(rows["packets"].sum())
        if self.sflow is not None:
            return self._sflow(rows, t)
        rows, kept = self._sample_packets(rows)
        records = self.cache.update(rows, t, None if age is None else (age if kept is None else age[kept]))
        if final:
            records = np.concatenate([records, self.cache.flush()])
        if self.v5 is not None:
            records = records[records["ip_version"] != 6]
        self.stats.records += len(records)
        if len(records) == 0:
            return []
        uptime = (t + 1 - self.boot) * 1000
        if self.v9 is not None:
            return self.v9.encode(records, unix_secs=t + 1, uptime_ms=uptime)
        if self.ipfix is not None:
            return self.ipfix.encode(records, export_time=t + 1)
        assert self.v5 is not None
        return self.v5.encode(records, unix_secs=t + 1, uptime_ms=uptime)

    def _sample_packets(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """1-in-N packet sampling before the cache (what a sampled NetFlow router does); the rows
        kept and which of the input they are (None: all)."""
        n = self.sampling
        if n <= 1 or len(rows) == 0:
            return rows, None
        pk = rows["packets"].astype(np.int64)
        kept = self.rng.binomial(pk, 1.0 / n)
        out = rows[kept > 0].copy()
        k = kept[kept > 0]
        out["bytes"] = np.maximum(1, (out["bytes"].astype(np.float64) * k / pk[kept > 0]).round()).astype(np.uint64)
        out["packets"] = k
        out["sampling"] = n
        return out, kept > 0

    def _sflow(self, rows: np.ndarray, t: int) -> list[bytes]:
        assert self.sflow is not None
        pk = rows["packets"].astype(np.int64)
        k = self.rng.binomial(pk, 1.0 / self.sampling) if self.sampling > 1 else pk
        samples = np.repeat(rows, k)
        per = np.repeat(pk, k)
        samples["bytes"] = np.maximum(1, samples["bytes"] // np.maximum(per, 1).astype(np.uint64))
        samples["packets"] = 1
        samples["sampling"] = self.sampling
        self.rng.shuffle(samples)  # interleave flows the way packets interleave on the wire
        payloads: list[bytes | None] = []
        for i, row in enumerate(samples):
            p = sip_payload(row, self.salt + t * 7919 + i) if row["sip_method"] or row["sip_flags"] else None
            payloads.append(p)
            self.stats.sip_samples += p is not None
        self.stats.records += len(samples)
        counters: tuple[InterfaceCounters, ...] = ()
        if t % 20 == 0:  # interface counters every 20 s, as agents poll them
            counters = (InterfaceCounters(if_index=1, in_octets=self.in_octets, in_ucast_pkts=self.in_pkts),)
        uptime = (t + 1 - self.boot) * 1000
        if len(samples) == 0 and not counters:
            return []
        return self.sflow.flow_datagrams(samples, payloads, counters=counters, uptime_ms=uptime)


# ---------------------------------------------------------------------------------------------
# the report


@dataclass
class SimulationReport:
    """What a simulation sent, and what the scenarios really did."""

    start: int
    seconds: int
    to_host: str
    exporters: list[ExporterStats]
    attacks: list[AttackTruth]
    flows: int = 0  # model flow rows over all seconds
    elapsed_s: float = 0.0
    max_lag_s: float = 0.0  # how far behind real time the sender fell (0 with time_warp)

    @property
    def datagrams(self) -> int:
        """All datagrams sent."""
        return sum(e.datagrams for e in self.exporters)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "start": self.start,
            "seconds": self.seconds,
            "to_host": self.to_host,
            "datagrams": self.datagrams,
            "flows": self.flows,
            "elapsed_s": round(self.elapsed_s, 3),
            "max_lag_s": round(self.max_lag_s, 3),
            "exporters": [e.__dict__ for e in self.exporters],
            "attacks": [a.to_dict() for a in self.attacks],
        }

    def text(self) -> str:
        """A short human summary."""
        lines = [
            f"simulated {self.seconds} s from {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(self.start))} UTC "
            f"to {self.to_host}: {self.flows} flow updates, {self.datagrams} datagrams in {self.elapsed_s:.1f} s",
            f"{'exporter':<16} {'from':<15} {'format':<9} {'port':>5} {'datagrams':>9} {'records':>9} "
            f"{'flows':>9} {'packets':>11}",
        ]
        for e in self.exporters:
            lines.append(
                f"{e.name:<16} {e.bound:<15} {e.format:<9} {e.port:>5} {e.datagrams:>9} {e.records:>9} "
                f"{e.flows:>9} {e.packets:>11}"
            )
        for a in self.attacks:
            kind = "legit" if a.legitimate else "attack"
            lines.append(
                f"{kind} {a.vector} on {a.component} [{a.start - self.start}s, {a.end - self.start}s) "
                f"x{a.intensity:g} {a.metric} (baseline {a.baseline:.1f}/s), {len(a.prefixes)} /24s"
                + (" spoofed" if a.spoofed else "")
            )
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# simulate


def _plan(config: VoxGuardConfig, model: TrafficModel, formats: Mapping[str, str] | str | None,
          ports: Mapping[str, int] | None) -> tuple[list[ExporterStats], np.ndarray]:  # fmt: skip
    """Exporters (configured, or one invented per tier without any) and target -> exporter index."""
    stats: list[ExporterStats] = []
    by_name: dict[str, int] = {}
    target_exp = np.zeros(len(model.targets), dtype=np.int64)
    spare = 0
    for i, td in enumerate(model.targets):
        tc = config.tiers[td.tier]
        names = list(tc.exporters)
        if names:
            region = model.component_region.get(td.component)
            pick = next((n for n in names if config.exporter(n).region == region), names[0])
            address = str(config.exporter(pick).address)
        else:  # a tier without a configured exporter gets an invented loopback router
            pick = f"sim-{td.tier.value}"
            if pick in by_name:
                address = stats[by_name[pick]].address
            else:
                address = f"127.0.2.{10 + spare}"
                spare += 1
        if pick not in by_name:
            fmt = _format_for(formats, pick, td.tier)
            port = (ports or {}).get(fmt) or int(getattr(config.ingest, _PORT_FIELD[fmt]))
            by_name[pick] = len(stats)
            stats.append(ExporterStats(pick, address, address, fmt, port))
        e = stats[by_name[pick]]
        if td.tier.value not in e.tiers:
            e.tiers.append(td.tier.value)
        target_exp[i] = by_name[pick]
    return stats, target_exp


def _format_for(formats: Mapping[str, str] | str | None, exporter: str, tier: Tier) -> str:
    if isinstance(formats, str):
        fmt = formats
    else:
        m = formats or {}
        fmt = m.get(exporter) or m.get(tier.value) or DEFAULT_FORMATS.get(tier, "ipfix")
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}")
    return fmt


def _is_loopback(host: str) -> bool:
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(str(i[4][0]).split("%")[0]).is_loopback for i in infos)


def _open_socket(e: ExporterStats, to_host: str, family: int) -> socket.socket:
    """A UDP socket bound to the exporter's address (or an unused loopback alias when it cannot be)."""
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    candidates = [e.address]
    if family == socket.AF_INET and _is_loopback(to_host):
        last = sum(e.name.encode()) % 200 + 20
        candidates.append(f"127.0.3.{last}")
    for addr in candidates:
        try:
            sock.bind((addr, 0))
            e.bound = addr
            return sock
        except OSError:
            continue
    e.bound = "auto"
    return sock


def simulate(
    config: VoxGuardConfig,
    *,
    to_host: str = "127.0.0.1",
    formats: Mapping[str, str] | str | None = None,
    rate_multiplier: float = 1.0,
    duration_s: float = 60.0,
    attacks: Iterable[Scenario | str] | str | None = None,
    seed: int = 0,
    sampling: int = DEFAULT_SFLOW_SAMPLING,
    netflow_sampling: int = 1,
    time_warp: bool = False,
    start: int | None = None,
    params: ModelParams | None = None,
    ports: Mapping[str, int] | None = None,
    sflow_header_bytes: int = 512,
    allow_remote: bool = False,
    max_datagrams: int = 10_000_000,
    on_second: Callable[[SecondFlows], None] | None = None,
) -> SimulationReport:
    """Play ``duration_s`` seconds of the platform's traffic (and ``attacks``) to a collector.

    ``formats``: one format for every exporter, or a mapping from exporter name or tier to one of
    FORMATS (default DEFAULT_FORMATS). ``sampling``: sFlow 1-in-N; ``netflow_sampling``: NetFlow /
    IPFIX packet sampling (1 = unsampled; >1 is announced in an options template). ``time_warp``:
    send as fast as possible with simulated timestamps from ``start`` (default: now) instead of
    real time. ``ports`` overrides the config's collector port per format. Only loopback
    destinations unless ``allow_remote``.
    """
    if not 0 < duration_s <= MAX_SECONDS:
        raise ValueError(f"duration_s must be in (0, {MAX_SECONDS}]")
    if sampling < 1 or netflow_sampling < 1:
        raise ValueError("sampling intervals must be >= 1")
    if not allow_remote and not _is_loopback(to_host):
        raise ValueError(f"refusing to send to {to_host!r}: not a loopback address (pass allow_remote=True)")
    base = params or ModelParams()
    model = TrafficModel(config, seed=seed, params=replace(base, scale=base.scale * rate_multiplier))
    t0 = int(time.time()) if start is None else int(start)
    scenarios = [a if isinstance(a, Scenario) else parse_attack_specs(a)[0] for a in _attack_items(attacks)]
    truths = add_attacks(model, scenarios, t0)
    stats, target_exp = _plan(config, model, formats, ports)
    family = socket.AF_INET6 if ":" in to_host else socket.AF_INET
    exporters = [
        _Exporter(s, i + 1, sampling=sampling, netflow_sampling=netflow_sampling, header_bytes=sflow_header_bytes,
                  seed=seed, boot=t0 - 86_400)
        for i, s in enumerate(stats)
    ]  # fmt: skip
    report = SimulationReport(t0, int(duration_s), to_host, stats, truths)
    wall0 = time.monotonic()
    sent = 0
    try:
        for e in exporters:
            e.sock = _open_socket(e.stats, to_host, family)
        n = int(duration_s)
        for i in range(n):
            t = t0 + i
            sf = model.second(t)
            report.flows += len(sf)
            if on_second is not None:
                on_second(sf)
            ex = target_exp[sf.target] if len(sf) else np.zeros(0, dtype=np.int64)
            batches = [(e, e.encode(sf.flows[ex == j], t, final=i == n - 1, age=sf.age[ex == j]))
                       for j, e in enumerate(exporters)]  # fmt: skip
            sent = _send_second(batches, to_host, wall0 + i + 1, time_warp, max_datagrams - sent, report) + sent
            if sent >= max_datagrams:
                break
    finally:
        for e in exporters:
            if e.sock is not None:
                e.sock.close()
    report.elapsed_s = time.monotonic() - wall0
    return report


def _attack_items(attacks: Iterable[Scenario | str] | str | None) -> list[Scenario | str]:
    if attacks is None:
        return []
    if isinstance(attacks, str):
        return list(parse_attack_specs(attacks))
    out: list[Scenario | str] = []
    for a in attacks:
        out.extend(parse_attack_specs(a) if isinstance(a, str) else [a])
    return out


def _send_second(
    batches: list[tuple[_Exporter, list[bytes]]],
    to_host: str,
    deadline: float,
    time_warp: bool,
    budget: int,
    report: SimulationReport,
) -> int:
    """Send one second's datagrams, each exporter's spread evenly until ``deadline`` (monotonic)."""
    sched: list[tuple[float, int, _Exporter, bytes]] = []
    for e, dgrams in batches:
        k = len(dgrams)
        for j, d in enumerate(dgrams):
            sched.append(((j + 0.5) / k, len(sched), e, d))
    sched.sort(key=lambda x: (x[0], x[1]))
    begin = deadline - 1.0
    now = time.monotonic()
    if not time_warp and now > begin:
        report.max_lag_s = max(report.max_lag_s, now - begin)
    count = 0
    for frac, _, e, d in sched[:budget]:
        if not time_warp:
            delay = begin + frac - time.monotonic()
            if delay > 0.002:
                time.sleep(delay)
        assert e.sock is not None
        try:
            e.sock.sendto(d, (to_host, e.stats.port))
            e.stats.datagrams += 1
            e.stats.bytes_sent += len(d)
        except OSError:
            e.stats.send_errors += 1
        count += 1
    if not time_warp:
        rest = deadline - time.monotonic()
        if rest > 0:
            time.sleep(rest)
    return count


def parse_formats(text: str | None) -> Mapping[str, str] | str | None:
    """``sflow5`` (all exporters) or ``sbc=sflow5,edge-api-01=netflow9`` (by tier or exporter)."""
    if not text:
        return None
    if "=" not in text:
        return text.strip()
    pairs = [p.split("=", 1) for p in text.split(",") if p.strip()]
    return {k.strip(): v.strip() for k, v in pairs}


def run_simulate(
    config: str | Path | None = None,
    *,
    to: str = "127.0.0.1",
    duration: float = 60.0,
    attacks: list[str] | None = None,
    seed: int = 0,
    rate: float = 1.0,
    sampling: int = DEFAULT_SFLOW_SAMPLING,
    netflow_sampling: int = 1,
    formats: str | None = None,
    time_warp: bool = False,
    list_scenarios: bool = False,
    json_output: bool = False,
    out: TextIO | None = None,
) -> int:
    """CLI entry (plain arguments for typer): ``formats`` like ``sflow5`` or
    ``sbc=sflow5,media=ipfix,edge-api-01=netflow9``; returns the exit code."""
    stream = out or sys.stdout
    if list_scenarios:
        print(describe_scenarios(), file=stream)
        return 0
    from voxguard.shared.config import example_config_path

    cfg = load_config(config or example_config_path())
    fmt = parse_formats(formats)
    report = simulate(cfg, to_host=to, formats=fmt, rate_multiplier=rate, duration_s=duration, attacks=attacks,
                      seed=seed, sampling=sampling, netflow_sampling=netflow_sampling, time_warp=time_warp)  # fmt: skip
    print(json.dumps(report.to_dict(), indent=2) if json_output else report.text(), file=stream)
    return 0
