"""The attack catalogue's detectors (design.md section 2), vectorised over every target of a tick.

Each detector reads the same frame: per target the window mean of each metric over the vector's
``hold_ticks`` (so "the condition holds for N ticks" is a mean over N ticks, which keeps Poisson noise
of low-rate metrics from chopping a real attack into pieces), the last tick, the baseline, the
tick-level spread, and the target's tier / role / region codes. A vector is *hot* when

* the window mean exceeds ``ratio`` x baseline and the tier's ``min_rate``,
* the excess is significant against the noise (Poisson and the learned spread) plus a few events,
* the last tick is still above the close threshold (so a spike that already ended does not open),

plus the vector's own shape conditions (bytes per connection down for TLS, sources up and media flat
for TDoS...). *Active* (above the lower close threshold) drives hysteresis: an incident only counts
quiet ticks when no vector is active. Nothing here reads simulator-only fields: only tick counters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from voxguard.baseline.profile import (
    BAD,
    BPS,
    CONN,
    COUNT_FLOOR,
    FPS,
    ICMP,
    INV,
    LL,
    NM,
    ODD,
    PPS,
    RATE_EPS,
    REG,
    SCAN,
    SRC,
)
from voxguard.shared.config import VECTORS, Tier, VectorThreshold, VoxGuardConfig

TIERS: tuple[str, ...] = tuple(t.value for t in Tier)
ROLES: tuple[str, ...] = ("signalling", "media", "tls", "api", "relay", "icmp", "other")
T_SBC, T_REG, T_MEDIA, T_TURN, T_API = (TIERS.index(t) for t in ("sbc", "registrar", "media", "turn", "api"))
R_SIG, R_MEDIA, R_TLS, R_API, R_RELAY, R_ICMP, R_OTHER = range(len(ROLES))
V_INDEX = {v: i for i, v in enumerate(VECTORS)}
NV = len(VECTORS)

# Catalogue defaults (design.md section 2) where the config does not set a field explicitly.
CATALOGUE: dict[str, dict[str, float]] = {
    "sip_flood": {"ratio": 5.0},
    "malformed_sip": {"ratio": 5.0},
    "tls_exhaustion": {"ratio": 4.0},
    "icmp_flood": {"ratio": 10.0},
    "register_storm": {"ratio": 4.0},
    "sbc_not_filtering": {"ratio": 3.0},
    "call_routing_exhaustion": {"ratio": 4.0},
    "rtp_flood": {"ratio": 3.0},
    "codec_exhaustion": {"ratio": 1.15},  # bytes/packet shift
    "turn_abuse": {"ratio": 4.0},
    "api_flood": {"ratio": 5.0},
    "websocket_exhaustion": {"ratio": 3.0},
    "tdos": {"ratio": 3.0},
}
Z = 4.0  # noise multiple of the significance test (event counts)
Z_EVENTS = 4.0  # ... of few events on the square-root scale (a new incident on few events also waits a tick)
Z_EVENTS_SHAPED = 3.5  # ... for vectors with their own shape test (SHAPED): the shape is evidence too
Z_VOLUME = 5.0  # ... and of volumes, whose session-driven scatter has heavier tails
VOLUME = frozenset({PPS, BPS, LL, SRC})
CLOSE = 0.6  # the close (resolve) threshold is this share of the open ratio (hysteresis), at least 1.2
ODD_SHARE = 0.2  # share of odd-sized packets that makes a size distribution "odd"
BAD_SHARE = 0.05  # share of sampled SIP that fails to parse
HANDSHAKE_BYTES = 1000.0  # TLS exhaustion: extra bytes per extra connection below this (bytes/s per conn/s)
SBC_ELEVATED = 2.0  # external SIP at least this x baseline counts as "elevated" (sbc_not_filtering)
SOURCES_UP = 3.0  # TDoS: distinct sources at least this x baseline (a bot army, not a few scanners)
CALLS_UP = 1.5  # regional call growth (SBC INVITEs) that counts as a surge of demand
HOLDING_S = 300.0  # call holding time over which demand decays after a surge
TURN_MIN_EXCESS_PPS = 500.0  # ten relayed calls (50 pkt/s each): less is a busy minute, not abuse
RTP_MIN_EXCESS_PPS = 1000.0  # twenty RTP streams
CODEC_MIN_EXCESS_BPS = 500_000.0  # codec_exhaustion: ~20 streams x 50 pkt/s x 500 B more per packet
RTP_PACKETS_PER_FLOW = 100.0  # a call's RTP flow lasts seconds to minutes at 50 pkt/s: far more packets
CALL_SHAPED = 2.0  # packets per source within this factor of the usual: the excess looks like more calls
API_CONN_EPS = 2.0  # an API endpoint's clients reconnect in bursts: below 2 conn/s baseline, use 2
WS_MIN_EXCESS_LL = 20.0  # websocket_exhaustion: at least this many more long-lived connections held
WS_EDGE_MIN_CONN = 10.0  # websocket_exhaustion on new connections alone: at least this many per second
SCANNER_SHARE = 0.2  # TDoS: SIP from scanner user agents above this share of packets is a tool's flood
MEDIA_FLAT = 0.5  # TDoS: media ratio below this share of the signalling ratio = inverted


# vectors whose detector tests a shape beyond a rate (what the extra traffic is made of): their
# evidence does not rest on the count alone, so a new incident need not wait for a second hot tick
SHAPED = frozenset({"malformed_sip", "tls_exhaustion", "sbc_not_filtering", "rtp_flood", "codec_exhaustion", "tdos"})


def resolve_threshold(cfg: VectorThreshold | None, vector: str) -> VectorThreshold:
    """The tier's threshold for a vector: fields the operator set, catalogue defaults elsewhere."""
    base = dict(CATALOGUE.get(vector, {}))
    if cfg is None:
        return VectorThreshold(**base)  # type: ignore[arg-type]
    data = cfg.model_dump()
    for k, v in base.items():
        if k not in cfg.model_fields_set:
            data[k] = v
    return VectorThreshold(**data)


@dataclass
class Thresholds:
    """Per tier x vector arrays: enabled, ratio, close ratio, min_rate, hold and quiet ticks."""

    enabled: np.ndarray = field(default_factory=lambda: np.ones((len(TIERS), NV), bool))
    ratio: np.ndarray = field(default_factory=lambda: np.full((len(TIERS), NV), 5.0, np.float32))
    close: np.ndarray = field(default_factory=lambda: np.full((len(TIERS), NV), 3.0, np.float32))
    min_rate: np.ndarray = field(default_factory=lambda: np.zeros((len(TIERS), NV), np.float32))
    hold: np.ndarray = field(default_factory=lambda: np.full((len(TIERS), NV), 3, np.int64))
    quiet: np.ndarray = field(default_factory=lambda: np.full((len(TIERS), NV), 30, np.int64))

    @classmethod
    def from_config(cls, config: VoxGuardConfig) -> Thresholds:
        th = cls()
        for ti, tier in enumerate(TIERS):
            tc = config.tiers.get(Tier(tier))
            vecs = tc.detection.vectors if tc else {}
            for vi, v in enumerate(VECTORS):
                t = resolve_threshold(vecs.get(v), v)
                th.enabled[ti, vi] = t.enabled
                th.ratio[ti, vi] = t.ratio
                th.close[ti, vi] = close_ratio(t.ratio)
                th.min_rate[ti, vi] = t.min_rate
                th.hold[ti, vi] = t.hold_ticks
                th.quiet[ti, vi] = t.quiet_ticks
        return th

    def max_hold(self) -> int:
        return int(self.hold.max())


def close_ratio(ratio: float) -> float:
    """The hysteresis threshold below which a vector counts as quiet."""
    if ratio < 2.0:  # shift-style thresholds (bytes/packet): keep the same share of the excess
        return 1.0 + (ratio - 1.0) * CLOSE
    return max(1.2, CLOSE * ratio)


@dataclass
class Frame:
    """What the detectors see for one tick: ``n`` targets."""

    dt: float
    last: np.ndarray  # [n, NM] the tick itself (NaN where the target sent nothing)
    windows: dict[int, np.ndarray]  # hold -> [n, NM] mean over the last ``hold`` ticks
    expected: np.ndarray  # [n, NM] baseline (NaN unknown)
    spread: np.ndarray  # [n, NM] tick-level relative spread
    tier: np.ndarray  # [n] index into TIERS
    role: np.ndarray  # [n] index into ROLES
    region: np.ndarray  # [n] int region code
    aggregate: np.ndarray  # [n] bool: a configured target (not per host)
    live: np.ndarray  # [n] bool: the target's tier reported this tick (no outage)
    sessions: np.ndarray  # [n] allocated TURN sessions (NaN unknown)
    per_session: np.ndarray  # [n] baseline packets/s per session (NaN unknown)
    th: Thresholds
    ext_sip: np.ndarray | None = None  # per target: max external SIP ratio of its region's SBCs
    media: np.ndarray | None = None  # per target: media ratio of its region
    demand: np.ndarray | None = None  # per target: legitimate call growth of its region (>= 1)
    disp: np.ndarray | None = None  # [n, NM] dispersion index of each count (None: Poisson, 1)
    _cols: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)

    def take(self, idx: np.ndarray) -> Frame:
        """The frame of targets ``idx`` only (detectors of one tier run on that tier's rows)."""
        return Frame(
            dt=self.dt, last=self.last[idx], windows={h: w[idx] for h, w in self.windows.items()},
            expected=self.expected[idx], spread=self.spread[idx], tier=self.tier[idx], role=self.role[idx],
            region=self.region[idx], aggregate=self.aggregate[idx], live=self.live[idx],
            sessions=self.sessions[idx], per_session=self.per_session[idx], th=self.th,
            ext_sip=None if self.ext_sip is None else self.ext_sip[idx],
            media=None if self.media is None else self.media[idx],
            demand=None if self.demand is None else self.demand[idx],
            disp=None if self.disp is None else self.disp[idx],
        )  # fmt: skip

    @property
    def n(self) -> int:
        return int(self.last.shape[0])

    def col(self, kind: str, m: int) -> np.ndarray:
        """A contiguous copy of one metric column of ``x`` (last), ``e`` (expected), ``s`` (spread) or
        ``d`` (dispersion), cached: several detectors read the same columns."""
        key = (kind, m)
        got = self._cols.get(key)
        if got is None:
            if kind == "d" and self.disp is None:
                got = self._cols[key] = np.ones(self.n, np.float32)
                return got
            src = {"x": self.last, "e": self.expected, "s": self.spread, "d": self.disp}[kind]
            assert src is not None
            got = self._cols[key] = np.ascontiguousarray(src[:, m])
        return got


@dataclass
class Result:
    """One vector over all targets."""

    hot: np.ndarray  # [n] bool: condition holds over the hold window
    active: np.ndarray  # [n] bool: above the close threshold (hysteresis)
    ratio: np.ndarray  # [n] float
    observed: np.ndarray  # [n]
    baseline: np.ndarray  # [n]
    metric: np.ndarray  # [n] int metric index (or -1 for a derived one)


METRIC_LABEL = {
    PPS: "packets_per_s",
    BPS: "bytes_per_s",
    FPS: "flows_per_s",
    CONN: "new_connections_per_s",
    SRC: "distinct_sources",
    ICMP: "icmp_packets_per_s",
    LL: "long_lived_flows",
    INV: "invite_per_s",
    REG: "register_per_s",
    ODD: "odd_size_packets_per_s",
    BAD: "malformed_sip_packets_per_s",
    -2: "bytes_per_packet",
    -3: "packets_per_s_per_session",
}


class _Ctx:
    """Per-vector helpers over a frame (thresholds broadcast from tier to target)."""

    def __init__(self, fr: Frame, vector: str):
        self.fr = fr
        self.z_events = Z_EVENTS_SHAPED if vector in SHAPED else Z_EVENTS
        v = V_INDEX[vector]
        t = fr.tier
        self.ratio = fr.th.ratio[t, v]
        self.close = fr.th.close[t, v]
        self.min_rate = fr.th.min_rate[t, v]
        self.enabled = fr.th.enabled[t, v] & fr.live
        hold = fr.th.hold[t, v]
        hs = np.unique(fr.th.hold[:, v])  # per tier: a handful of values, not one per target
        self.hold: np.ndarray | float = hold.astype(np.float32)
        self._cols: dict[int, np.ndarray] = {}
        if len(hs) == 1:
            self.hold = float(hs[0])
            self.win = fr.windows[int(hs[0])]
        else:
            self.win = np.empty_like(fr.last)
            for h in hs:
                m = hold == h
                if m.any():
                    self.win[m] = fr.windows[int(h)][m]

    def test(self, m: int, ratio: np.ndarray | None = None, eps: float | None = None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
        """(hot, active, ratio, baseline) of metric ``m`` against ``ratio`` (default the vector's);
        ``eps`` overrides the smallest baseline the ratio is taken against."""
        fr = self.fr
        r_open = self.ratio if ratio is None else ratio
        e = fr.col("e", m)
        eb = np.maximum(np.where(np.isnan(e), np.float32(np.inf), e), RATE_EPS[m] if eps is None else eps)
        xm = self.wcol(m)
        r = xm / eb
        span = np.float32(self.hold * fr.dt) if isinstance(self.hold, float) else self.hold * np.float32(fr.dt)
        s, se = xm * span, e * span
        # Poisson noise, or the learned tick-level spread: volumes (packets, bytes, long flows) are
        # carried by sessions that persist across ticks, so their scatter does not average out over
        # the window; events (connections, INVITEs...) are close to independent, so it does
        spr = np.float32(1.25 * fr.dt) * fr.col("s", m) * e
        # counting noise, widened by the dispersion of the count (pairs, sampling scale, streams)
        disp = np.maximum(fr.col("d", m), np.float32(1.0))
        poisson = np.sqrt(np.maximum(se, 0.0) * disp)
        excess = s - se
        with np.errstate(invalid="ignore"):
            if m in VOLUME:
                sd, z = np.maximum(poisson * np.sqrt(self.hold), spr * self.hold), Z_VOLUME
                sig = excess > z * sd + COUNT_FLOOR[m]
            else:
                # few events: a Gaussian tail is far too thin (ten pairs of INVITEs where 2.5 are
                # usual is 4.7 sigma, yet happens daily), so test the count of clusters on the
                # square-root scale that makes Poisson noise unit-sized (Anscombe)
                sd, z = np.maximum(poisson, spr * np.sqrt(self.hold)), Z
                sig = (anscombe_z(s, se, disp) > self.z_events) & (excess > COUNT_FLOOR[m])
            sig_close = excess > 2.0 * sd + COUNT_FLOOR[m] / 2
            last_ok = fr.col("x", m) / eb > self.close
            hot = (r > r_open) & sig & last_ok & (xm >= self.min_rate) & self.enabled
            active = (r > self.close) & sig_close & self.enabled
        return hot, active, r, e

    @property
    def max_hold(self) -> int:
        return int(self.hold) if isinstance(self.hold, float) else int(np.max(self.hold, initial=1))

    def wcol(self, m: int) -> np.ndarray:
        """Window mean of metric ``m`` as a contiguous array (cached)."""
        got = self._cols.get(m)
        if got is None:
            got = self._cols[m] = np.ascontiguousarray(self.win[:, m])
        return got

    def result(self, hot: np.ndarray, active: np.ndarray, r: np.ndarray, m: int | np.ndarray, e: np.ndarray,
               obs: np.ndarray | None = None) -> Result:  # fmt: skip
        mm = np.full(self.fr.n, m, dtype=np.int64) if isinstance(m, int) else m
        if obs is None and isinstance(m, int):
            obs = self.wcol(m)
        elif obs is None:
            obs = np.take_along_axis(self.win, np.clip(mm, 0, NM - 1)[:, None], axis=1)[:, 0]
        return Result(hot, active, np.nan_to_num(r, nan=0.0, posinf=0.0), obs, e, mm)


def _either(c: _Ctx, a: int, b: int, mask: np.ndarray) -> Result:
    """Hot on metric ``a`` or ``b``; reports the one with the larger ratio."""
    ha, aa, ra, ea = c.test(a)
    hb, ab, rb, eb = c.test(b)
    use_b = np.nan_to_num(rb) > np.nan_to_num(ra)
    m = np.where(use_b, b, a)
    return c.result((ha | hb) & mask, (aa | ab) & mask, np.where(use_b, rb, ra), m, np.where(use_b, eb, ea))


def sip_flood(fr: Frame) -> Result:
    """Packets/s or flows/s to SBC signalling (UDP/5060) above ratio x baseline."""
    c = _Ctx(fr, "sip_flood")
    return _either(c, PPS, FPS, (fr.tier == T_SBC) & (fr.role == R_SIG))


def malformed_sip(fr: Frame) -> Result:
    """Parse failures in sampled SIP, or packets of odd sizes (runts, near-MTU) on SBC signalling."""
    c = _Ctx(fr, "malformed_sip")
    mask = (fr.tier == T_SBC) & (fr.role == R_SIG)
    pps = np.maximum(c.win[:, PPS], 1e-9)
    h_odd, a_odd, r_odd, e_odd = c.test(ODD)
    h_bad, a_bad, r_bad, e_bad = c.test(BAD)
    odd_ok = c.win[:, ODD] / pps > ODD_SHARE
    bad_ok = c.win[:, BAD] / pps > BAD_SHARE
    hot = ((h_odd & odd_ok) | (h_bad & bad_ok)) & mask
    active = ((a_odd & odd_ok) | (a_bad & bad_ok)) & mask
    use_bad = h_bad & bad_ok & ~(h_odd & odd_ok)
    return c.result(hot, active, np.where(use_bad, r_bad, r_odd), np.where(use_bad, BAD, ODD),
                    np.where(use_bad, e_bad, e_odd))  # fmt: skip


def tls_exhaustion(fr: Frame) -> Result:
    """New connections to the TLS port up while bytes per connection fall (handshakes never finish)."""
    c = _Ctx(fr, "tls_exhaustion")
    mask = (fr.tier == T_SBC) & (fr.role == R_TLS)
    hot, active, r, e = c.test(CONN)
    # what the extra connections carry: a handshake that never finishes is a SYN or a partial
    # ClientHello (well under a kilobyte), a real client's first seconds carry its handshake and
    # first request (registrations over TLS: more than a kilobyte each)
    e_conn = np.nan_to_num(fr.expected[:, CONN])
    extra_conn = np.maximum(c.win[:, CONN] - e_conn, 1e-9)
    extra_bytes = c.win[:, BPS] - np.nan_to_num(fr.expected[:, BPS])
    with np.errstate(invalid="ignore"):
        low = extra_bytes / extra_conn < HANDSHAKE_BYTES
    return c.result(hot & low & mask, active & mask, r, CONN, e)


def icmp_flood(fr: Frame) -> Result:
    """ICMP packets/s to the SBC above ratio x baseline (and the tier's min_rate)."""
    c = _Ctx(fr, "icmp_flood")
    mask = fr.tier == T_SBC
    hot, active, r, e = c.test(ICMP)
    return c.result(hot & mask, active & mask, r, ICMP, e)


def _sip_metric(fr: Frame, m: int) -> np.ndarray:
    """Whether a target's sampled SIP method mix is informative for metric ``m``."""
    with np.errstate(invalid="ignore"):
        return np.nan_to_num(fr.expected[:, m]) > 0.02 * np.maximum(np.nan_to_num(fr.expected[:, PPS]), 1.0)


def register_storm(fr: Frame) -> Result:
    """REGISTER rate (or, without sampled SIP, the internal SIP packet rate) to the registrar."""
    c = _Ctx(fr, "register_storm")
    mask = (fr.tier == T_REG) & (fr.role == R_SIG)
    # with a sampled method mix (REGISTERs or INVITEs visible) only REGISTERs count; without one,
    # the SIP packet rate stands in, judged against call demand like the other call volumes
    use = _sip_metric(fr, REG) | _sip_metric(fr, INV)
    h1, a1, r1, e1 = c.test(REG)
    h2, a2, r2, e2 = c.test(PPS, c.ratio * _d(fr))
    return c.result(np.where(use, h1, h2) & mask, np.where(use, a1, a2) & mask, np.where(use, r1, r2),
                    np.where(use, REG, PPS), np.where(use, e1, e2))  # fmt: skip


def _d(fr: Frame) -> np.ndarray | float:
    return 1.0 if fr.demand is None else fr.demand


def _group_max(values: np.ndarray, members: np.ndarray, region: np.ndarray) -> tuple[np.ndarray, float]:
    """Max of ``values`` over ``members`` per region code, and over all members."""
    size = int(region.max()) + 1 if len(region) else 1
    out = np.full(size, -np.inf)
    idx = np.flatnonzero(members)
    if len(idx):
        np.maximum.at(out, region[idx], np.nan_to_num(values[idx], nan=-np.inf))
    overall = float(out.max()) if len(idx) else -np.inf
    return out, overall


def _regional(values: np.ndarray, members: np.ndarray, fr: Frame) -> np.ndarray:
    """For each target, the max of ``values`` over ``members`` of its region (else of all)."""
    per, overall = _group_max(values, members, fr.region)
    got = per[fr.region]
    return np.where(np.isfinite(got), got, overall)


def sbc_not_filtering(fr: Frame) -> Result:
    """Internal SIP to the registrar spikes while the SBC's external SIP is elevated too."""
    c = _Ctx(fr, "sbc_not_filtering")
    mask = (fr.tier == T_REG) & (fr.role == R_SIG)
    hot, active, r, e = c.test(PPS)
    ext_sip = fr.ext_sip if fr.ext_sip is not None else _ext_sip(fr)
    with np.errstate(invalid="ignore"):
        elevated = ext_sip > SBC_ELEVATED
    return c.result(hot & elevated & mask, active & elevated & mask, r, PPS, e)


def call_routing_exhaustion(fr: Frame) -> Result:
    """INVITE rate (sampled SIP) to the registrar above ratio x baseline."""
    c = _Ctx(fr, "call_routing_exhaustion")
    mask = (fr.tier == T_REG) & (fr.role == R_SIG) & _sip_metric(fr, INV)
    hot, active, r, e = c.test(INV, c.ratio * _d(fr))
    return c.result(hot & mask, active & mask, r, INV, e)


def rtp_flood(fr: Frame) -> Result:
    """Packets/s on the media port range (aggregate and per gateway) above ratio x baseline."""
    c = _Ctx(fr, "rtp_flood")
    mask = (fr.tier == T_MEDIA) & (fr.role == R_MEDIA)
    hot, active, r, e = c.test(PPS, c.ratio * _d(fr))
    # a gateway carrying three calls at night that gets three more is not a flood: RTP comes in
    # 50 pkt/s streams, so demand an excess of at least twenty of them
    hot &= (c.wcol(PPS) - np.nan_to_num(e)) >= RTP_MIN_EXCESS_PPS
    # Floods do not look like calls: a few sources blasting (packets per source far above one
    # stream's), spoofed sources sending a handful each (far below), or a new flow every few
    # packets. Traffic whose excess keeps the usual packets per source and per flow is more
    # calls, as likely demand as an attack: it must clear twice the ratio.
    hot &= ~_call_shaped(c, e) | (r > 2.0 * c.ratio * _d(fr))
    return c.result(hot & mask, active & mask, r, PPS, e)


def _call_shaped(c: _Ctx, e_pps: np.ndarray) -> np.ndarray:
    """Whether the extra media traffic looks like more calls: the usual packets per source, and
    far more packets than new flows (a call's stream runs for seconds to minutes)."""
    fr = c.fr
    e_src = np.maximum(np.nan_to_num(fr.expected[:, SRC]), RATE_EPS[SRC])
    with np.errstate(invalid="ignore", divide="ignore"):
        per_src = (c.wcol(PPS) / np.maximum(c.wcol(SRC), 1.0)) / (np.nan_to_num(e_pps) / e_src)
        shaped = (per_src > 1.0 / CALL_SHAPED) & (per_src < CALL_SHAPED)
        excess_pps = c.wcol(PPS) - np.nan_to_num(e_pps)
        excess_fps = c.wcol(FPS) - np.nan_to_num(fr.expected[:, FPS])
        return shaped & (excess_fps * RTP_PACKETS_PER_FLOW < excess_pps)


def codec_exhaustion(fr: Frame) -> Result:
    """Bytes per packet on the media range shifted by more than ratio (either way) with traffic up."""
    c = _Ctx(fr, "codec_exhaustion")
    mask = (fr.tier == T_MEDIA) & (fr.role == R_MEDIA)
    e_bpp = fr.expected[:, BPS] / np.maximum(fr.expected[:, PPS], RATE_EPS[PPS])
    bpp = c.win[:, BPS] / np.maximum(c.win[:, PPS], 1e-9)
    last_bpp = fr.last[:, BPS] / np.maximum(fr.last[:, PPS], 1e-9)
    with np.errstate(invalid="ignore", divide="ignore"):
        shift = np.abs(np.log(bpp / e_bpp))
        last_shift = np.abs(np.log(last_bpp / e_bpp))
        r = np.exp(shift)
        up = c.win[:, BPS] > 1.05 * fr.expected[:, BPS]
        # bigger packets, not more of them: a packet flood is rtp_flood's, not a codec shift
        up &= c.win[:, PPS] < 2.0 * np.maximum(np.nan_to_num(fr.expected[:, PPS]), RATE_EPS[PPS])
        enough = c.win[:, PPS] * fr.dt >= 50  # a bytes/packet mean needs packets behind it
        # a few calls switching codec at night shift a gateway's mean a lot: exhaustion needs the
        # volume of some twenty big-codec streams on top of the usual bytes
        enough &= c.win[:, BPS] - np.nan_to_num(fr.expected[:, BPS]) >= CODEC_MIN_EXCESS_BPS
        lg = np.log(c.ratio)
        hot = (shift > lg) & (last_shift > np.log(c.close)) & up & enough & c.enabled & mask
        active = (shift > np.log(c.close)) & enough & c.enabled & mask
    return c.result(hot, active, r, -2, e_bpp, obs=bpp)


def turn_abuse(fr: Frame) -> Result:
    """Relay traffic per allocated session above ratio x the per-session baseline; without pushed
    session counts, relay traffic against its own baseline."""
    c = _Ctx(fr, "turn_abuse")
    mask = fr.tier == T_TURN
    h_p, a_p, r_p, e_p = c.test(PPS, c.ratio * _d(fr))
    h_b, a_b, r_b, _ = c.test(BPS, c.ratio * _d(fr))
    known = (fr.sessions > 0) & (fr.per_session > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ps = c.win[:, PPS] / fr.sessions
        r_s = ps / fr.per_session
        h_s = known & (r_s > c.ratio * _d(fr)) & (fr.last[:, PPS] / fr.sessions / fr.per_session > c.close) & c.enabled
        h_s &= c.win[:, PPS] * fr.dt >= 50
        a_s = known & (r_s > c.close) & c.enabled
    # without session counts, demand more extra relay traffic than a handful of calls carry, and
    # twice the ratio when the extra traffic is shaped like relayed calls (see rtp_flood)
    calls = _call_shaped(c, e_p) & ~(np.nan_to_num(r_p) > 2.0 * c.ratio * _d(fr))
    h_p &= ((c.win[:, PPS] - np.nan_to_num(e_p)) >= TURN_MIN_EXCESS_PPS) & ~calls
    h_b &= ((c.win[:, PPS] - np.nan_to_num(e_p)) >= TURN_MIN_EXCESS_PPS) & ~calls
    hot = np.where(known, h_s, h_p | h_b) & mask
    active = np.where(known, a_s, a_p | a_b) & mask
    r = np.where(known, r_s, np.maximum(np.nan_to_num(r_p), np.nan_to_num(r_b)))
    obs = np.where(known, ps, c.win[:, PPS])
    return c.result(hot, active, r, np.where(known, -3, PPS), np.where(known, fr.per_session, e_p), obs=obs)


def api_flood(fr: Frame) -> Result:
    """New TCP connections per API endpoint above ratio x baseline."""
    c = _Ctx(fr, "api_flood")
    mask = fr.tier == T_API
    hot, active, r, e = c.test(CONN, eps=API_CONN_EPS)
    return c.result(hot & mask, active & mask, r, CONN, e)


def websocket_exhaustion(fr: Frame) -> Result:
    """Long-lived connections growing on an API endpoint; on an endpoint that normally holds long
    connections (WebSockets), a surge of new connections is the leading edge of the same growth."""
    c = _Ctx(fr, "websocket_exhaustion")
    mask = fr.tier == T_API
    h_l, a_l, r_l, e_l = c.test(LL)
    h_l &= (c.wcol(LL) - np.nan_to_num(e_l)) >= WS_MIN_EXCESS_LL
    # the leading edge alone is weaker evidence (clients reconnect in bursts): it needs enough new
    # connections that holding them all could exhaust anything
    h_c, a_c, r_c, e_c = c.test(CONN, eps=API_CONN_EPS)
    h_c &= c.wcol(CONN) >= WS_EDGE_MIN_CONN
    with np.errstate(invalid="ignore"):
        ws = np.nan_to_num(fr.expected[:, LL]) > 0.3 * np.nan_to_num(fr.expected[:, CONN])
    use_c = h_c & ws & ~h_l
    hot = (h_l | (h_c & ws)) & mask
    active = (a_l | (a_c & ws)) & mask
    return c.result(hot, active, np.where(use_c, r_c, r_l), np.where(use_c, CONN, LL), np.where(use_c, e_c, e_l))


def tdos(fr: Frame) -> Result:
    """New-flow rate to SBC signalling up, from many more distinct sources than usual, while the
    media of the same region does not follow (signalling-to-media ratio inverted)."""
    c = _Ctx(fr, "tdos")
    mask = (fr.tier == T_SBC) & (fr.role == R_SIG)
    hot, active, r, e = c.test(FPS)
    _, _, r_src, _ = c.test(SRC)
    media_r = fr.media if fr.media is not None else _media(fr)
    with np.errstate(invalid="ignore"):
        # many sources, each sending little: the source excess keeps pace with the flow excess
        e_src = np.maximum(np.nan_to_num(fr.expected[:, SRC]), RATE_EPS[SRC])
        e_fps = np.maximum(np.nan_to_num(fr.expected[:, FPS]), RATE_EPS[FPS])
        spread_out = (c.win[:, SRC] - e_src) >= 0.5 * (c.win[:, FPS] - e_fps)
        diverse = (r_src > SOURCES_UP) | ((r_src > 2.0) & spread_out)
        inverted = ~np.isfinite(media_r) | (media_r < MEDIA_FLAT * r)
        # calls from bots that look like phones, not a scanning tool (SIPVicious & co. announce
        # themselves in User-Agent): where sampled SIP shows scanners, it is a SIP flood
        scanning = c.win[:, SCAN] > SCANNER_SHARE * np.maximum(c.win[:, PPS], 1e-9)
    cond = diverse & inverted & ~scanning & mask
    return c.result(hot & cond, active & cond, r, FPS, e)


DETECTORS: dict[str, Callable[[Frame], Result]] = {
    "sip_flood": sip_flood,
    "malformed_sip": malformed_sip,
    "tls_exhaustion": tls_exhaustion,
    "icmp_flood": icmp_flood,
    "register_storm": register_storm,
    "sbc_not_filtering": sbc_not_filtering,
    "call_routing_exhaustion": call_routing_exhaustion,
    "rtp_flood": rtp_flood,
    "codec_exhaustion": codec_exhaustion,
    "turn_abuse": turn_abuse,
    "api_flood": api_flood,
    "websocket_exhaustion": websocket_exhaustion,
    "tdos": tdos,
}
assert tuple(DETECTORS) == VECTORS


def _pps_ratio(fr: Frame, members: np.ndarray, m: int = PPS) -> np.ndarray:
    """Window ratio of metric ``m`` on the ``members`` rows (NaN elsewhere), over the longest hold."""
    out = np.full(fr.n, np.nan)
    idx = np.flatnonzero(members)
    if len(idx):
        win = fr.windows.get(int(fr.th.hold.max()), fr.last)
        e = fr.expected[idx, m]
        out[idx] = win[idx, m] / np.maximum(np.where(np.isnan(e), np.inf, e), RATE_EPS[m])
    return out


def _demand(fr: Frame, media_r: np.ndarray) -> np.ndarray:
    """Legitimate call growth per target's region (>= 1): calls (SBC INVITEs, else flows) up from
    the usual sources, bounded by how far media has followed them -- a flash crowd. Detectors of
    volumes downstream of calls (media, relays, call routing) compare against ratio x demand, so
    more answered calls are not an attack while media that grows without calls still is."""
    sbc = (fr.tier == T_SBC) & (fr.role == R_SIG) & fr.aggregate
    use_inv = _sip_metric(fr, INV)
    calls = np.where(use_inv, _pps_ratio(fr, sbc, INV), _pps_ratio(fr, sbc, FPS))
    # growth that is noise (a few sampled INVITEs more) is no demand
    calls = np.where(np.where(use_inv, _significant(fr, INV), _significant(fr, FPS)), calls, np.nan)
    src = _pps_ratio(fr, sbc, SRC)
    with np.errstate(invalid="ignore"):
        calls = np.where(src < SOURCES_UP, calls, np.nan)  # a bot army is not demand
    growth = _regional(calls, sbc & np.isfinite(calls), fr)
    with np.errstate(invalid="ignore"):
        follows = 1.0 + 3.0 * np.maximum(np.nan_to_num(media_r, nan=0.0) - 1.0, 0.0)
        d = np.where(growth >= CALLS_UP, np.minimum(3.0 * growth, follows), 1.0)
        return np.where(np.isfinite(d) & (d > 1.0), d, 1.0)


def anscombe_z(count: np.ndarray, expected: np.ndarray, disp: np.ndarray) -> np.ndarray:
    """How far ``count`` is above ``expected`` in units of counting noise, on the square-root scale
    (Anscombe) where Poisson noise is unit-sized whatever the mean; counts of clusters of ``disp``."""
    q, qe = np.maximum(count, 0.0) / disp, np.maximum(expected, 0.0) / disp
    return 2.0 * (np.sqrt(q + 0.375) - np.sqrt(qe + 0.375))


def _significant(fr: Frame, m: int) -> np.ndarray:
    """Whether metric ``m``'s window (longest hold) is above the baseline beyond counting noise
    (its dispersion included), on the square-root scale as the event detectors test it."""
    hold = int(fr.th.hold.max())
    win = fr.windows.get(hold, fr.last)[:, m]
    e = np.nan_to_num(fr.expected[:, m])
    disp = np.ones(fr.n, np.float32) if fr.disp is None else np.maximum(fr.disp[:, m], 1.0)
    span = hold * fr.dt
    with np.errstate(invalid="ignore"):
        return np.nan_to_num(anscombe_z(win * span, e * span, disp)) > Z_EVENTS


def _ext_sip(fr: Frame) -> np.ndarray:
    """For each target, how elevated the external SIP (SBC signalling) of its region is."""
    ext = (fr.tier == T_SBC) & (fr.role == R_SIG) & fr.aggregate
    return _regional(_pps_ratio(fr, ext), ext, fr)


def _media(fr: Frame) -> np.ndarray:
    """For each target, the media traffic ratio of its region (NaN when no media is known)."""
    media = (fr.tier == T_MEDIA) & (fr.role == R_MEDIA) & fr.aggregate
    return _regional(_pps_ratio(fr, media), media, fr)


VECTOR_TIER: dict[str, int] = {
    "sip_flood": T_SBC, "malformed_sip": T_SBC, "tls_exhaustion": T_SBC, "icmp_flood": T_SBC, "tdos": T_SBC,
    "register_storm": T_REG, "sbc_not_filtering": T_REG, "call_routing_exhaustion": T_REG,
    "rtp_flood": T_MEDIA, "codec_exhaustion": T_MEDIA, "turn_abuse": T_TURN,
    "api_flood": T_API, "websocket_exhaustion": T_API,
}  # fmt: skip


def run_all(fr: Frame) -> list[Result]:
    """Every detector over the frame, in VECTORS order (results cover every target)."""
    return [DETECTORS[v](fr) for v in VECTORS]


def run_by_tier(fr: Frame, demand_before: np.ndarray | None = None) -> list[tuple[str, np.ndarray, Result]]:
    """Every detector on its own tier's rows only: (vector, row indexes, result over those rows).

    Cross-tier context (the region's external SIP for the registrar, its media for TDoS, the call
    demand) is taken from the whole frame first, so slicing changes nothing but the work done.
    ``demand_before`` is the previous tick's demand: it decays over a call holding time, because
    media keeps flowing for calls already set up after the surge of new calls ends.
    """
    fr.ext_sip = _ext_sip(fr)
    fr.media = _media(fr)
    fr.demand = _demand(fr, fr.media)
    if demand_before is not None and len(demand_before) == fr.n:
        fr.demand = np.maximum(fr.demand, demand_before * np.exp(-fr.dt / HOLDING_S))
    out: list[tuple[str, np.ndarray, Result]] = []
    for ti in range(len(TIERS)):
        idx = np.flatnonzero(fr.tier == ti)
        if len(idx) == 0:
            continue
        sub = fr if len(idx) == fr.n else fr.take(idx)
        for v in VECTORS:
            if VECTOR_TIER[v] == ti:
                out.append((v, idx, DETECTORS[v](sub)))
    return out
