"""The attack catalogue (design.md section 2) as traffic scenarios on top of the baseline model.

Each scenario adds streams whose shape follows the physics of the real attack and whose size is
``intensity`` times the baseline of the metric its catalogue row names, measured on the baseline
over the attack window (so the target shows about ``intensity`` x its usual value there). Each
also says what really happened (``AttackTruth``: window, targets, attacker sources/prefixes), for
tests and scenario reports.

Spec grammar (``parse_attack_spec``), e.g. ``sip_flood@30s+60s*8`` or ``tdos:sbc-us-1@2m+5m*4``::

    spec      := vector [":" component] ["@" start] ["+" duration] ["*" intensity ["x"]]
    start     := number [unit]        offset from the simulation start, default 0
    duration  := number [unit]        default 60s
    unit      := "s" | "m" | "h"      a bare number is seconds; decimals allowed (1.5m)
    intensity := number               multiple of the baseline, default per scenario

Several specs are separated by commas or given as a list.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from voxguard.ingest.decode.flows import SipFlag, SipMethod
from voxguard.ingest.simulate.model import (
    ICMP,
    TCP,
    UDP,
    CallStream,
    Kind,
    Mirror,
    Population,
    Rate,
    RowSpec,
    SpecStream,
    Stream,
    Table,
    TrafficModel,
    make_table,
    salt_of,
)
from voxguard.shared.config import VECTORS, Tier

__all__ = [
    "SCENARIOS",
    "AttackTruth",
    "Scenario",
    "ScenarioInfo",
    "add_attacks",
    "describe_scenarios",
    "parse_attack_spec",
    "parse_attack_specs",
]

RST_ACK = 0x14


@dataclass(frozen=True)
class Scenario:
    """One attack (or flash crowd) to play: when, how long, how hard, where."""

    vector: str
    start_s: float = 0.0  # offset from the simulation start
    duration_s: float = 60.0
    intensity: float | None = None  # multiple of the baseline; None = the scenario's default
    component: str | None = None  # default: the tier's first component

    def __post_init__(self) -> None:
        if self.vector not in SCENARIOS:
            raise ValueError(f"unknown scenario {self.vector!r}; known: {', '.join(SCENARIOS)}")
        if self.duration_s <= 0 or self.start_s < 0:
            raise ValueError(f"{self.vector}: start must be >= 0 and duration > 0")
        if self.intensity is not None and not 0 < self.intensity <= 10_000:
            raise ValueError(f"{self.vector}: intensity must be in (0, 10000]")

    @property
    def factor(self) -> float:
        """The intensity, defaulted."""
        return SCENARIOS[self.vector].intensity if self.intensity is None else self.intensity

    def spec(self) -> str:
        """This scenario in the spec grammar."""
        comp = f":{self.component}" if self.component else ""
        return f"{self.vector}{comp}@{self.start_s:g}s+{self.duration_s:g}s*{self.factor:g}"


@dataclass
class AttackTruth:
    """What a scenario really did, for tests and reports."""

    vector: str
    legitimate: bool
    tier: str
    component: str
    start: int  # epoch seconds, inclusive
    end: int  # epoch seconds, exclusive
    intensity: float
    metric: str  # the TargetTotals metric the intensity multiplies ("sip:INVITE" for a method)
    baseline: float  # that metric's baseline mean over the window, per second
    target_ids: list[str] = field(default_factory=list)  # targets where the metric rises
    targets: list[str] = field(default_factory=list)  # their names
    sources: list[str] = field(default_factory=list)  # attacker addresses (empty when spoofed)
    prefixes: list[str] = field(default_factory=list)  # attacker /24s
    spoofed: bool = False
    notes: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (sources cut to 50)."""
        d = asdict(self)
        d["source_count"] = len(self.sources)
        d["sources"] = self.sources[:50]
        return d


@dataclass
class _Ctx:
    """What a scenario builder works with."""

    m: TrafficModel
    sc: Scenario
    index: int
    a: int  # window start (epoch s)
    e: int  # window end (exclusive)
    component: str

    @property
    def name(self) -> str:
        return f"attack{self.index}:{self.sc.vector}"

    @property
    def k(self) -> float:
        """Extra load in baseline units: intensity - 1 (never negative)."""
        return max(0.0, self.sc.factor - 1.0)

    def base(self, tier: Tier, metric: str, label: str | None, component: str | None = None) -> float:
        return self.m.expected(tier, metric, self.a, self.e, component or self.component, label)

    def envelope(self, level: float, ramp: float | None = None) -> Rate:
        """``level`` inside the window after a short linear ramp, 0 outside."""
        a, e = self.a, self.e
        r = ramp if ramp is not None else min(5.0, (e - a) / 10)
        r = max(1.0, r)

        def rate(t: np.ndarray) -> np.ndarray:
            inside = (t >= a) & (t < e)
            return np.asarray(np.where(inside, level * np.clip((t - a + 1) / r, 0.0, 1.0), 0.0))

        return rate

    def arrivals(self, count: float, over: float) -> Rate:
        """``count`` session arrivals spread evenly over the first ``over`` s of the window."""
        a = self.a
        span = max(1.0, min(over, self.e - a))
        return lambda t: np.asarray(np.where((t >= a) & (t < a + span), count / span, 0.0))

    def pop(self, n_prefixes: int, n_ips: int, sigma: float = 0.5) -> Population:
        return self.m.population(f"{self.name}:sources", n_prefixes, n_ips, sigma)

    def target_of(self, kind: Kind | None) -> tuple[list[str], list[str]]:
        if kind is None:
            return [], []
        td = self.m.targets[kind.target]
        return [td.id], [td.name]

    def truth(self, metric: str, baseline: float, kinds: Sequence[Kind | None], pop: Population | None,
              tier: Tier, **kw: Any) -> AttackTruth:  # fmt: skip
        ids: list[str] = []
        names: list[str] = []
        for kd in kinds:
            i, n = self.target_of(kd)
            for x, y in zip(i, n, strict=True):
                if x not in ids:
                    ids.append(x)
                    names.append(y)
        comps = [self.m.targets[kd.target].component for kd in kinds if kd is not None]
        return AttackTruth(
            vector=self.sc.vector,
            legitimate=SCENARIOS[self.sc.vector].legitimate,
            tier=tier.value,
            component=comps[0] if comps else self.component,
            start=self.a,
            end=self.e,
            intensity=self.sc.factor,
            metric=metric,
            baseline=baseline,
            target_ids=ids,
            targets=names,
            sources=[] if pop is None else pop.addresses(),
            prefixes=[] if pop is None else pop.prefixes(),
            spoofed=bool(pop is not None and pop.spoofed),
            **kw,
        )

    def fwd_kind(self, sbc: str, proto: str = "udp") -> Kind | None:
        """The standing SBC->registrar flow kind of the baseline (shares its source population)."""
        for kd in self.m.kinds:
            if kd.name == f"{sbc}:fwd-{proto}":
                return kd
        return None


Builder = Callable[[_Ctx], tuple[list[Stream], AttackTruth]]


@dataclass(frozen=True)
class ScenarioInfo:
    """Catalogue entry: where a scenario lands by default and what it raises."""

    tier: Tier
    metric: str
    intensity: float
    description: str
    build: Builder
    legitimate: bool = False


# ---------------------------------------------------------------------------------------------
# shapes


def _sip_rows(methods: Sequence[tuple[int, float, int, int]], p_lo: int, p_hi: int, flags: int) -> Callable[
    [np.random.Generator, np.ndarray], Table
]:  # fmt: skip
    """One-second SIP flows: (method, share, min bytes, max bytes) per packet, p_lo..p_hi packets."""
    codes = np.array([m[0] for m in methods])
    shares = np.array([m[1] for m in methods], dtype=np.float64)
    lo = np.array([m[2] for m in methods])
    hi = np.array([m[3] for m in methods])

    def shape(rng: np.random.Generator, s: np.ndarray) -> Table:
        n = len(s)
        which = rng.choice(len(codes), n, p=shares / shares.sum())
        p = rng.integers(p_lo, p_hi + 1, n)
        size = rng.integers(lo[which], hi[which] + 1)
        return make_table(s, p0=p, b0=p * size, method=codes[which], flags=flags)

    return shape


def _malformed(rng: np.random.Generator, s: np.ndarray) -> Table:
    """Fuzzer output: tiny runts, random sizes and near-MTU blobs that do not parse as SIP."""
    n = len(s)
    p = rng.integers(1, 5, n)
    mode = rng.random(n)
    size = np.where(
        mode < 0.3,
        rng.integers(29, 120, n),
        np.where(mode < 0.7, rng.integers(120, 1473, n), rng.integers(1400, 1501, n)),
    )
    return make_table(s, p0=p, b0=p * size, flags=SipFlag.MALFORMED)


def _until_end(e: int, lo: int = 1) -> Callable[[np.ndarray], np.ndarray]:
    return lambda s: np.maximum(e - s, lo)


def _long(e: int, pm: Callable[[np.random.Generator, int], np.ndarray], size: tuple[int, int],
          first: tuple[int, int] = (1, 1), first_bytes: tuple[int, int] | None = None) -> Callable[
    [np.random.Generator, np.ndarray], Table
]:  # fmt: skip
    """Sessions lasting to the window's end, ``pm`` packets each sending second of ``size`` bytes."""

    def shape(rng: np.random.Generator, s: np.ndarray) -> Table:
        n = len(s)
        per = pm(rng, n)
        sz = rng.integers(size[0], size[1] + 1, n)
        p0 = rng.integers(first[0], first[1] + 1, n) if first != (1, 1) else np.maximum(per // 2, 1)
        b0 = rng.integers(*first_bytes, n) if first_bytes else p0 * sz
        return make_table(s, dur=_until_end(int(e))(s), p0=p0, b0=b0, pm=per, bm=per * sz, pe=1, be=sz)

    return shape


# ---------------------------------------------------------------------------------------------
# scenario builders


def _sip_flood(c: _Ctx) -> tuple[list[Stream], AttackTruth]:
    """INVITE/OPTIONS floods from a few dozen /24s running SIPVicious-like tools (scanner UA)."""
    pop = c.pop(30, 70)
    kd = c.m.kind(f"{c.name}:flood", c.component, UDP, (5060, 5060), pop)
    base = c.base(Tier.SBC, "packets", "udp/5060")
    shape = _sip_rows([(SipMethod.INVITE, 0.6, 560, 900), (SipMethod.OPTIONS, 0.4, 420, 520)], 1, 3,
                      SipFlag.SCANNER_UA)  # fmt: skip
    streams = _spec_streams(c, [(kd, c.envelope(c.k * base / 2.0), shape, ())])
    return streams, c.truth("packets", base, [kd], pop, Tier.SBC)


def _malformed_sip(c: _Ctx) -> tuple[list[Stream], AttackTruth]:
    """Fuzzed datagrams to 5060: odd sizes, payloads that do not parse."""
    pop = c.pop(8, 20)
    kd = c.m.kind(f"{c.name}:fuzz", c.component, UDP, (5060, 5060), pop)
    base = c.base(Tier.SBC, "packets", "udp/5060")
    streams = _spec_streams(c, [(kd, c.envelope(c.k * base / 2.5), _malformed, ())])
    return streams, c.truth("packets", base, [kd], pop, Tier.SBC)


def _tls_exhaustion(c: _Ctx) -> tuple[list[Stream], AttackTruth]:
    """Connections to 5061 that stop after SYN or a partial ClientHello, then reset."""
    pop = c.pop(250, 600)
    kd = c.m.kind(f"{c.name}:handshakes", c.component, TCP, (5061, 5061), pop, max_dur=3, tcp_end=RST_ACK)
    base = c.base(Tier.SBC, "new_connections", "tcp/5061")

    def shape(rng: np.random.Generator, s: np.ndarray) -> Table:
        n = len(s)
        p0 = rng.integers(1, 4, n)
        b0 = 52 * p0 + np.where(rng.random(n) < 0.5, rng.integers(200, 520, n), 0)
        return make_table(s, dur=rng.integers(1, 4, n), p0=p0, b0=b0, pm=0, bm=0, pe=1, be=40)

    streams = _spec_streams(c, [(kd, c.envelope(c.k * base), shape, ())])
    return streams, c.truth("new_connections", base, [kd], pop, Tier.SBC)


def _icmp_flood(c: _Ctx) -> tuple[list[Stream], AttackTruth]:
    """Echo requests from a botnet, each host a standing high-rate ICMP flow."""
    pop = c.pop(40, 80)
    hosts = 80
    kd = c.m.kind(f"{c.name}:echo", c.component, ICMP, None, pop, icmp=(8, 0), max_dur=c.e - c.a + 1)
    base = c.base(Tier.SBC, "packets", "icmp")
    per = max(1, round(c.k * base / hosts))
    shape = _long(c.e, lambda r, n: r.integers(per - per // 2, per + per // 2 + 1, n), (84, 1500))
    streams = _spec_streams(c, [(kd, c.arrivals(hosts, 5), shape, ())])
    return streams, c.truth("packets", base, [kd], pop, Tier.SBC)


def _register_storm(c: _Ctx) -> tuple[list[Stream], AttackTruth]:
    """The SBC hammers the registrar with REGISTERs (a re-registration avalanche it does not absorb)."""
    sbc = c.component
    fwd = c.fwd_kind(sbc)
    reg = fwd and c.m.targets[fwd.target].component
    base = c.base(Tier.REGISTRAR, "packets", "udp/5060", reg) if reg else 0.0
    shape = _sip_rows([(SipMethod.REGISTER, 1.0, 560, 900)], 1, 3, 0)
    streams = _spec_streams(c, [(fwd, c.envelope(c.k * base / 2.0), shape, ())])
    return streams, c.truth("packets", base, [fwd], fwd.pop if fwd else None, Tier.REGISTRAR,
                            notes="sources are the SBC's own addresses (internal segment)")  # fmt: skip


def _sbc_not_filtering(c: _Ctx) -> tuple[list[Stream], AttackTruth]:
    """A SIP flood the SBC passes on: external SIP up and the same surge inside to the registrar."""
    pop = c.pop(30, 70)
    ext = c.m.kind(f"{c.name}:flood", c.component, UDP, (5060, 5060), pop)
    fwd = c.fwd_kind(c.component)
    reg = fwd and c.m.targets[fwd.target].component
    base_ext = c.base(Tier.SBC, "packets", "udp/5060")
    base_int = c.base(Tier.REGISTRAR, "packets", "udp/5060", reg) if reg else 0.0
    methods = [(SipMethod.INVITE, 0.6, 560, 900), (SipMethod.OPTIONS, 0.4, 420, 520)]
    specs = [
        (ext, c.envelope(c.k * base_ext / 2.0), _sip_rows(methods, 1, 3, SipFlag.SCANNER_UA), ()),
        (fwd, c.envelope(c.k * base_int / 2.0), _sip_rows([(m, s, lo + 90, hi + 90) for m, s, lo, hi in methods],
                                                           1, 3, 0), ()),
    ]  # fmt: skip
    truth = c.truth("packets", base_int, [fwd, ext], pop, Tier.REGISTRAR,
                    notes=f"external udp/5060 baseline {base_ext:.1f} pkt/s also x intensity")  # fmt: skip
    return _spec_streams(c, specs), truth


def _call_routing_exhaustion(c: _Ctx) -> tuple[list[Stream], AttackTruth]:
    """Valid-looking INVITEs to expensive or unroutable numbers: the registrar's routing logic is the
    victim; the SBC passes them on, nothing is answered (no media)."""
    pop = c.pop(120, 300, sigma=1.0)
    ext = c.m.kind(f"{c.name}:invites", c.component, UDP, (5060, 5060), pop, stable_src_port=True)
    fwd = c.fwd_kind(c.component)
    reg = fwd and c.m.targets[fwd.target].component
    base = c.base(Tier.REGISTRAR, "sip:INVITE", "udp/5060", reg) if reg else 0.0
    rows = c.k * base / 2.0
    inv = [(SipMethod.INVITE, 1.0, 800, 1250)]
    specs = [
        (ext, c.envelope(rows), _sip_rows(inv, 2, 2, SipFlag.SDP), ()),
        (fwd, c.envelope(rows), _sip_rows([(SipMethod.INVITE, 1.0, 890, 1340)], 2, 2, 0), ()),
    ]
    return _spec_streams(c, specs), c.truth("sip:INVITE", base, [fwd], pop, Tier.REGISTRAR)


def _rtp_flood(c: _Ctx) -> tuple[list[Stream], AttackTruth]:
    """Spoofed UDP at random ports of the RTP range, 60-1400 byte packets."""
    pop = Population(f"{c.name}:spoofed", np.zeros(0, np.uint32), spoofed=True)
    lo, hi = c.m.port_range(c.component, "media", (10000, 20000))
    kd = c.m.kind(f"{c.name}:udp", c.component, UDP, (lo, hi), pop)
    base = c.base(Tier.MEDIA, "packets", None)

    def shape(rng: np.random.Generator, s: np.ndarray) -> Table:
        n = len(s)
        p = rng.integers(1, 41, n)
        return make_table(s, p0=p, b0=p * rng.integers(60, 1401, n))

    streams = _spec_streams(c, [(kd, c.envelope(c.k * base / 20.5), shape, ())])
    return streams, c.truth("packets", base, [kd], pop, Tier.MEDIA)


def _codec_exhaustion(c: _Ctx) -> tuple[list[Stream], AttackTruth]:
    """Calls that force big-packet codecs or transcoding: many streams of 900-1300 byte packets."""
    pop = c.pop(40, 90)
    lo, hi = c.m.port_range(c.component, "media", (10000, 20000))
    party = salt_of(c.m.seed, c.name, "party")
    kd = c.m.kind(f"{c.name}:rtp", c.component, UDP, (lo, hi), pop, party=party, src_ports=(10000, 59999),
                  even_ports=True, max_dur=c.e - c.a + 1)  # fmt: skip
    base = c.base(Tier.MEDIA, "bytes", None)
    streams_n = c.k * base / (50 * 1100)
    ramp = min(30.0, (c.e - c.a) / 5)
    specs = [(kd, c.arrivals(streams_n, ramp), _long(c.e, lambda r, n: np.full(n, 50), (900, 1300)), ())]
    sbc = c.m.pick_component(Tier.SBC, c.m.component_region.get(c.component))
    if sbc is not None:
        inv = c.m.kind(f"{c.name}:invites", sbc, UDP, (5060, 5060), pop, party=party, stable_src_port=True)
        specs.append((inv, c.arrivals(streams_n, ramp), _sip_rows([(SipMethod.INVITE, 1.0, 900, 1300)], 2, 2,
                                                                   SipFlag.SDP), ()))  # fmt: skip
    return _spec_streams(c, specs), c.truth("bytes", base, [kd], pop, Tier.MEDIA)


def _turn_abuse(c: _Ctx) -> tuple[list[Stream], AttackTruth]:
    """A handful of allocations relaying far more than a call: the relay used as a traffic pump."""
    pop = c.pop(5, 8)
    peers = c.m.population(f"{c.name}:peers", 3, 6)
    allocs = 8
    ctrl = c.m.kind(f"{c.name}:relay", c.component, UDP, (3478, 3478), pop, max_dur=c.e - c.a + 1)
    lo, hi = c.m.port_range(c.component, "media", (49152, 65535))
    peer = c.m.kind(f"{c.name}:peers", c.component, UDP, (lo, hi), peers, max_dur=c.e - c.a + 1)
    base = c.base(Tier.TURN, "packets", "udp/3478")
    base_peer = c.base(Tier.TURN, "packets", f"udp/{lo}-{hi}") if peer else 0.0
    per = max(1, round(c.k * base / allocs))
    per_peer = max(1, round(c.k * base_peer / allocs / 2))
    specs = [
        (ctrl, c.arrivals(allocs, 5), _long(c.e, lambda r, n: r.integers(per * 9 // 10, per * 11 // 10 + 2, n),
                                            (1100, 1304)), ()),
        (peer, c.arrivals(allocs, 5), _long(c.e, lambda r, n: np.full(n, per_peer), (200, 1300)), ()),
    ]  # fmt: skip
    truth = c.truth("packets", base, [ctrl], pop, Tier.TURN, notes=f"{allocs} allocations carry it")
    return _spec_streams(c, specs), truth


def _api_flood(c: _Ctx) -> tuple[list[Stream], AttackTruth]:
    """Credential stuffing / HTTP flood: short TLS connections (hello, POST /login, close) from a botnet."""
    pop = c.pop(400, 1200, sigma=0.3)
    kd = c.m.kind(f"{c.name}:https", c.component, TCP, (443, 443), pop, max_dur=3)
    base = c.base(Tier.API, "new_connections", "tcp/443")

    def shape(rng: np.random.Generator, s: np.ndarray) -> Table:
        n = len(s)
        p0 = rng.integers(6, 11, n)
        return make_table(s, dur=rng.integers(1, 4, n), p0=p0, b0=p0 * 52 + rng.integers(600, 2400, n), pm=2,
                          bm=rng.integers(200, 800, n), pe=2, be=104)  # fmt: skip

    streams = _spec_streams(c, [(kd, c.envelope(c.k * base), shape, ())])
    return streams, c.truth("new_connections", base, [kd], pop, Tier.API)


def _websocket_exhaustion(c: _Ctx) -> tuple[list[Stream], AttackTruth]:
    """WebSockets opened at a steady pace and held idle: the long-lived count grows all along."""
    pop = c.pop(60, 150)
    kd = c.m.kind(f"{c.name}:ws", c.component, TCP, (8443, 8443), pop, period=5, max_dur=c.e - c.a + 1,
                  tcp_end=RST_ACK)  # fmt: skip
    base = c.base(Tier.API, "sessions", "tcp/8443")
    dur = c.e - c.a
    shape = _long(c.e, lambda r, n: np.ones(n, np.int64), (52, 80), first=(8, 12), first_bytes=(1800, 2600))
    streams = _spec_streams(c, [(kd, c.arrivals(c.k * base, dur), shape, ())])
    return streams, c.truth("sessions", base, [kd], pop, Tier.API,
                            notes="grows linearly: intensity x baseline at the window's end")  # fmt: skip


def _tdos(c: _Ctx) -> tuple[list[Stream], AttackTruth]:
    """Automated call flood: INVITEs from thousands of bots across many /24s with spoofed caller ids;
    calls are routed (registrar sees them) but never answered, so media does not grow."""
    pop = c.pop(700, 1500, sigma=0.2)
    kd = c.m.kind(f"{c.name}:calls", c.component, UDP, (5060, 5060), pop, stable_src_port=True)
    base = c.base(Tier.SBC, "flows", "udp/5060")
    fwd = c.fwd_kind(c.component)
    mirrors = (Mirror(fwd, extra_bytes=90),) if fwd else ()
    shape = _sip_rows([(SipMethod.INVITE, 1.0, 700, 1150)], 2, 2, SipFlag.SDP)
    streams = _spec_streams(c, [(kd, c.envelope(c.k * base), shape, mirrors)])
    return streams, c.truth("flows", base, [kd], pop, Tier.SBC)


def _flash_crowd(c: _Ctx) -> tuple[list[Stream], AttackTruth]:
    """Legitimate surge (a TV vote, an outage elsewhere): known endpoints call more, calls are answered,
    signalling AND media grow together."""
    sbc = c.component
    base = c.base(Tier.SBC, "sip:INVITE", "udp/5060")
    ep = c.m.pops.get(f"endpoints:{sbc}") or next(iter(c.m.pops.values()))
    trunks = c.m.pops.get("trunks") or ep
    fwd = (c.fwd_kind(sbc, "udp"), c.fwd_kind(sbc, "tcp"))
    stream = CallStream(c.m, c.name, c.envelope(c.k * base / 2.0, ramp=min(30.0, (c.e - c.a) / 5)), sbc=sbc,
                        ep_pop=ep, trunk_pop=trunks, fwd=fwd, answer=0.85, trunk_share=0.3)  # fmt: skip
    kinds = [stream.k.get("invite_ep"), stream.k.get("rtp_ep")]
    truth = c.truth("sip:INVITE", base, kinds, None, Tier.SBC,
                    notes="legitimate: registered endpoints; media follows the calls (holding-time lag)")  # fmt: skip
    return [stream], truth


def _spec_streams(
    c: _Ctx,
    specs: Sequence[tuple[Kind | None, Rate, Callable[[np.random.Generator, np.ndarray], Table], tuple[Mirror, ...]]],
) -> list[Stream]:
    """One stream of the scenario's row specs; long-lived sessions arrive in exact numbers."""
    rows = [
        RowSpec(kd, rate, shape, mirrors, poisson=kd.max_dur <= 3)
        for kd, rate, shape, mirrors in specs
        if kd is not None
    ]
    return [SpecStream(c.name, c.m.seed, rows)] if rows else []


SCENARIOS: dict[str, ScenarioInfo] = {
    "sip_flood": ScenarioInfo(Tier.SBC, "packets", 8.0, "INVITE/OPTIONS flood to UDP/5060 from ~30 /24s, scanner UAs",
                              _sip_flood),
    "malformed_sip": ScenarioInfo(Tier.SBC, "packets", 4.0, "fuzzed UDP/5060 datagrams: odd sizes, unparseable",
                                  _malformed_sip),
    "tls_exhaustion": ScenarioInfo(Tier.SBC, "new_connections", 6.0, "SYN / partial ClientHello to 5061, then RST",
                                   _tls_exhaustion),
    "icmp_flood": ScenarioInfo(Tier.SBC, "packets", 20.0, "echo requests from ~80 bots to the SBC", _icmp_flood),
    "register_storm": ScenarioInfo(Tier.REGISTRAR, "packets", 5.0, "REGISTER surge SBC->registrar (internal)",
                                   _register_storm),
    "sbc_not_filtering": ScenarioInfo(Tier.REGISTRAR, "packets", 5.0, "external SIP flood passed on to the registrar",
                                      _sbc_not_filtering),
    "call_routing_exhaustion": ScenarioInfo(Tier.REGISTRAR, "sip:INVITE", 6.0,
                                            "unanswered INVITE surge routed to the registrar",
                                            _call_routing_exhaustion),
    "rtp_flood": ScenarioInfo(Tier.MEDIA, "packets", 4.0, "spoofed UDP to random RTP-range ports, 60-1400 B",
                              _rtp_flood),
    "codec_exhaustion": ScenarioInfo(Tier.MEDIA, "bytes", 3.0, "streams of 900-1300 B packets (big codecs)",
                                     _codec_exhaustion),
    "turn_abuse": ScenarioInfo(Tier.TURN, "packets", 6.0, "8 allocations relaying bulk traffic", _turn_abuse),
    "api_flood": ScenarioInfo(Tier.API, "new_connections", 6.0, "short HTTPS connections to 443 from ~400 /24s",
                              _api_flood),
    "websocket_exhaustion": ScenarioInfo(Tier.API, "sessions", 4.0, "idle WebSockets on 8443 piling up",
                                         _websocket_exhaustion),
    "tdos": ScenarioInfo(Tier.SBC, "flows", 4.0, "INVITEs from ~1500 bots over ~700 /24s, no media", _tdos),
    "flash_crowd": ScenarioInfo(Tier.SBC, "sip:INVITE", 3.0, "legitimate call surge: signalling AND media grow",
                                _flash_crowd, legitimate=True),
}  # fmt: skip
assert set(VECTORS) <= set(SCENARIOS), "every catalogue vector needs a scenario"


def add_attacks(model: TrafficModel, scenarios: Iterable[Scenario], t0: int) -> list[AttackTruth]:
    """Add the scenarios' streams to ``model`` (offsets relative to ``t0``) and return their truth."""
    out: list[AttackTruth] = []
    for sc in scenarios:
        info = SCENARIOS[sc.vector]
        # registrar scenarios start at the SBC that forwards to the registrar
        tier = Tier.SBC if info.tier == Tier.REGISTRAR else info.tier
        comps = model.components(tier)
        if sc.component is not None:
            comp = _resolve(model, tier, sc)
        elif comps:
            comp = comps[0]
        else:
            raise ValueError(f"{sc.vector}: the config has no {info.tier.value} tier to attack")
        a = int(t0 + sc.start_s)
        ctx = _Ctx(model, sc, len(model.attack_streams) + len(out), a, int(a + sc.duration_s), comp)
        streams, truth = info.build(ctx)
        for s in streams:
            model.add_stream(s)
        out.append(truth)
    return out


def _resolve(model: TrafficModel, tier: Tier, sc: Scenario) -> str:
    """The component a scenario acts through: the named one, or for a named registrar the SBC
    that forwards to it."""
    name = sc.component or ""
    if name in model.components(tier):
        return name
    if tier == Tier.SBC and name in model.components(Tier.REGISTRAR):
        for kd in model.kinds:
            if kd.name.endswith(":fwd-udp") and model.targets[kd.target].component == name:
                return kd.name.removesuffix(":fwd-udp")
    known = model.components(tier) + (model.components(Tier.REGISTRAR) if tier == Tier.SBC else [])
    raise ValueError(f"{sc.vector}: no {tier.value} component {name!r} (known: {', '.join(known)})")


_UNIT = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}
_SPEC = re.compile(
    r"^(?P<v>[a-z_]+)(?::(?P<c>[A-Za-z0-9_.:-]+?))?(?:@(?P<at>[\d.]+)(?P<atu>[smh]?))?"
    r"(?:\+(?P<dur>[\d.]+)(?P<duru>[smh]?))?(?:\*(?P<x>[\d.]+)x?)?$"
)


def parse_attack_spec(text: str) -> Scenario:
    """``vector[:component][@start][+duration][*intensity]``, e.g. ``sip_flood@30s+60s*8``."""
    m = _SPEC.match(text.strip())
    if not m:
        raise ValueError(
            f"bad attack spec {text!r}: expected vector[:component][@start][+duration][*intensity], "
            "e.g. sip_flood@30s+60s*8"
        )
    try:
        start = float(m["at"]) * _UNIT[m["atu"] or ""] if m["at"] else 0.0
        dur = float(m["dur"]) * _UNIT[m["duru"] or ""] if m["dur"] else 60.0
        x = float(m["x"]) if m["x"] else None
    except ValueError:
        raise ValueError(f"bad number in attack spec {text!r}") from None
    return Scenario(m["v"], start, dur, x, m["c"])


def parse_attack_specs(specs: str | Iterable[str] | None) -> list[Scenario]:
    """Comma-separated specs, or a list of them (each may itself hold commas)."""
    if specs is None:
        return []
    items = [specs] if isinstance(specs, str) else list(specs)
    return [parse_attack_spec(p) for item in items for p in item.split(",") if p.strip()]


def describe_scenarios() -> str:
    """A table of the available scenarios for ``voxguard simulate --list``."""
    lines = [f"{'scenario':<24} {'tier':<10} {'raises':<16} {'default':>7}  what"]
    for name, info in SCENARIOS.items():
        lines.append(f"{name:<24} {info.tier.value:<10} {info.metric:<16} {info.intensity:>6g}x  {info.description}")
    lines.append("spec: vector[:component][@start][+duration][*intensity]   e.g. sip_flood@30s+60s*8")
    return "\n".join(lines)
