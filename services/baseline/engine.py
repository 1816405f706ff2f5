"""The detection engine of the baseline service: pure, in-memory, vectorised.

The service feeds it traffic ticks (``observe``), moves its clock (``advance``) and publishes what
comes back. Per tick time the engine builds one ``[targets, metrics]`` matrix, runs every detector
over all targets at once (``detectors``), turns hot vectors into incidents (``incidents``) and lets
the seasonal profiles (``profile``) learn from the ticks that were neither anomalous nor part of an
incident. Everything it knows round-trips through ``export_state`` / ``import_state``.

Input hygiene: a tick is bucketed by ``tick_start``; duplicates (same target, same tick) are dropped,
as are ticks older than what was already processed and ticks further than ``max_skew_s`` ahead of
the clock; a tick with a non-finite or negative counter is dropped as malformed. Every drop is
counted (``stats``). A tier from which no tick at all arrives is an outage: nothing is learned and
nothing detected for its targets until it reports again.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from voxguard.baseline import arrayzip
from voxguard.baseline import detectors as det
from voxguard.baseline.incidents import Finding, Incident, IncidentBook
from voxguard.baseline.profile import (
    METRICS,
    NM,
    PPS,
    SLOTS,
    LearnPolicy,
    ProfileBank,
    fold_weight,
    metric_index,
)
from voxguard.shared.config import TargetDef, Tier, VoxGuardConfig
from voxguard.shared.messages import Anomaly, IncidentEvent, IncidentView, TrafficTick
from voxguard.shared.runbooks import Runbook, load_runbooks

STATE_MAGIC = "voxguard-detection-engine"
STATE_VERSION = 1
# size_histogram buckets 0 (< 100 B) and 5 (> 1200 B): not the size of a SIP message
DARK_SHARE = 0.1  # SBC signalling below this share of a baseline of at least DARK_MIN pkt/s is dark
DARK_MIN = 10.0
FEW_EVENTS = 30.0  # a count expected below this over the hold window must stay hot one tick longer
# counts that a sampling collector scales up from 1-in-N samples (volumes in bytes, sources and
# long flows are judged by their spread instead)
SAMPLED_COUNTS = [metric_index(m) for m in ("packets", "flows", "new_connections", "icmp_packets", "sip_invite",
                                            "sip_register", "odd_size_packets", "sip_malformed_packets",
                                            "sip_scanner_packets")]  # fmt: skip


@dataclass
class EngineOutput:
    """What one ``advance`` produced, for the service to publish and store."""

    anomalies: list[Anomaly] = field(default_factory=list)
    events: list[IncidentEvent] = field(default_factory=list)


@dataclass
class Stats:
    """Counters of accepted and dropped input."""

    accepted: int = 0
    duplicate: int = 0
    late: int = 0
    future: int = 0
    malformed: int = 0
    ticks_processed: int = 0
    outage_ticks: int = 0  # (tier, tick) pairs with no data from a known tier


def tick_vector(tick: TrafficTick) -> np.ndarray:
    """The per-second metric rates of one tick (``profile.METRICS`` order); raises ValueError on a
    non-finite or negative counter."""
    sec = float(tick.tick_seconds)
    if not (math.isfinite(sec) and sec > 0):
        raise ValueError("tick_seconds must be a positive number")
    sm = tick.sip_methods or {}
    inv = sm.get("INVITE", 0)
    reg = sm.get("REGISTER", 0)
    if not (inv or reg) and sm:  # senders that spell methods in lower case
        methods = {str(k).upper(): v for k, v in sm.items()}
        inv, reg = methods.get("INVITE", 0), methods.get("REGISTER", 0)
    hist = tick.size_histogram or ()
    odd = hist[0] + hist[5] if len(hist) >= 6 else 0
    raw = [
        tick.packets,
        tick.bytes,
        tick.flows,
        tick.new_connections,
        tick.distinct_sources * sec,  # a count per tick, not a rate: undo the division below
        tick.icmp_packets,
        tick.long_lived_flows,
        inv,
        reg,
        odd,
        tick.sip_malformed_packets,
        tick.sip_scanner_packets,
    ]
    vals = [float(x) / sec for x in raw]
    for x in vals:
        if not (x >= 0.0 and x != math.inf):  # NaN fails the first test
            raise ValueError("non-finite or negative counter")
    return np.array(vals, dtype=np.float32)


class DetectionEngine:
    """Seasonal baselines, detectors and incidents over every target, one tick at a time."""

    def __init__(
        self,
        config: VoxGuardConfig,
        *,
        tick_seconds: float = 1.0,
        grace_ticks: float = 2.0,
        max_skew_s: float = 300.0,
        anomaly_every: int = 10,
    ):
        if tick_seconds <= 0:
            raise ValueError("tick_seconds must be > 0")
        self.config = config
        self.dt = float(tick_seconds)
        self.grace = float(grace_ticks)
        self.max_skew_s = float(max_skew_s)
        self.anomaly_every = max(1, int(anomaly_every))
        self.th = det.Thresholds.from_config(config)
        self.hmax = self.th.max_hold()
        self.policy = LearnPolicy()
        self.runbooks: list[Runbook] = load_runbooks(config.runbooks or {})
        self.stats = Stats()
        self.owner: Callable[[str], bool] | None = None  # see set_owner
        self._reset()
        for td in config.iter_targets():
            self._row(td.id, _meta_of(td), aggregate=True)

    # -- target table ------------------------------------------------------------------------------

    def _reset(self) -> None:
        self.bank = ProfileBank(64)
        self.ids: list[str] = []
        self.meta: list[dict[str, Any]] = []
        self.index: dict[str, int] = {}
        self.regions: dict[str, int] = {"": 0}
        cap = self.bank.capacity
        self.tier_code = np.zeros(cap, np.int64)
        self.role_code = np.zeros(cap, np.int64)
        self.region_code = np.zeros(cap, np.int64)
        self.aggregate = np.zeros(cap, bool)
        self.last_seen = np.full(cap, np.nan)
        self.sessions = np.full(cap, np.nan)
        self.per_session = np.full(cap, np.nan)
        self.learn_need = np.full(cap, 7 * 86_400.0)
        self.demand = np.ones(cap)
        self.sample_scale = np.ones(cap, np.float32)  # 1-in-N of sampled SIP (sFlow): counts scaled by N
        self.ring = np.full((self.hmax, cap, NM), np.nan, np.float32)
        self.ring_pos = 0
        self.buffer: dict[float, dict[str, tuple[TrafficTick, np.ndarray]]] = {}
        self.colbuf: dict[float, list[tuple[np.ndarray, np.ndarray, tuple[Sequence[Any], np.ndarray] | None]]] = {}
        self.watermark: float | None = None
        self.last_now: float | None = None
        self.book = IncidentBook()
        self.hot_age: dict[tuple[int, int], int] = {}
        self.tier_seen = np.zeros(len(det.TIERS), bool)
        self.turn_pushed: dict[str, int] = {}

    def _grow(self) -> None:
        cap = self.bank.capacity
        for name, fill in (("tier_code", 0), ("role_code", 0), ("region_code", 0), ("aggregate", False),
                           ("last_seen", np.nan), ("sessions", np.nan), ("per_session", np.nan),
                           ("learn_need", 7 * 86_400.0), ("demand", 1.0), ("sample_scale", 1.0)):  # fmt: skip
            old = getattr(self, name)
            if len(old) < cap:
                new = np.full(cap, fill, dtype=old.dtype)
                new[: len(old)] = old
                setattr(self, name, new)
        if self.ring.shape[1] < cap:
            ring = np.full((self.hmax, cap, NM), np.nan, np.float32)
            ring[:, : self.ring.shape[1]] = self.ring
            self.ring = ring

    def _row(self, target_id: str, meta: dict[str, Any], *, aggregate: bool) -> int:
        row = self.index.get(target_id)
        if row is not None:
            for k, v in meta.items():
                if v is not None and not self.meta[row].get(k):
                    self.meta[row][k] = v
            return row
        tier = str(meta.get("tier") or "")
        if tier not in det.TIERS:
            raise ValueError(f"target {target_id}: unknown tier {tier!r}")
        self.register([target_id], [meta], aggregate=aggregate)
        return self.index[target_id]

    def register(self, target_ids: Sequence[str], metas: Sequence[dict[str, Any]], *, aggregate: bool = False) -> int:
        """Rows for targets not known yet (metadata as ``_row`` takes it; unknown tiers and ids
        already known are skipped), all at once: the first tick of 100,000 new hosts must not
        cost a Python call per array per target. Returns how many were added."""
        new: dict[str, dict[str, Any]] = {}
        for tid, meta in zip(target_ids, metas, strict=True):
            if tid not in self.index and str(meta.get("tier") or "") in det.TIERS:
                new.setdefault(tid, meta)
        k = len(new)
        if not k:
            return 0
        first = self.bank.add(k)
        self._grow()
        rows = np.arange(first, first + k)
        ids = list(new)
        self.ids.extend(ids)
        for i, (tid, meta) in enumerate(new.items()):
            m = {"id": tid, **meta}
            m.setdefault("name", tid)
            self.meta.append(m)
            self.index[tid] = first + i
        metas_new = list(new.values())
        tiers = [str(m["tier"]) for m in metas_new]
        self.region_code[rows] = [self.regions.setdefault(str(m.get("region") or ""), len(self.regions))
                                  for m in metas_new]  # fmt: skip
        self.tier_code[rows] = [det.TIERS.index(t) for t in tiers]
        roles = [str(m.get("role") or "other") for m in metas_new]
        self.role_code[rows] = [det.ROLES.index(r) if r in det.ROLES else det.R_OTHER for r in roles]
        self.aggregate[rows] = [aggregate and not m.get("host") for m in metas_new]
        for tier in set(tiers):
            tc = self.config.tiers.get(Tier(tier))
            bs = tc.baseline if tc else None
            sel = rows[np.array([t == tier for t in tiers])]
            self.bank.fold_w[sel] = fold_weight(bs.window_days if bs else 7)
            self.bank.short_s[sel] = 60.0 * (bs.short_term_minutes if bs else 60)
            self.learn_need[sel] = 86_400.0 * (bs.learning_days if bs else 7.0)
        if self.turn_pushed and "turn" in tiers:
            for row, tid, m in zip(rows.tolist(), ids, metas_new, strict=True):
                for key, sessions in self.turn_pushed.items():
                    if m["tier"] == "turn" and key in (tid, m.get("component"), m.get("host")):
                        self.sessions[row] = sessions
        return k

    @property
    def n(self) -> int:
        return self.bank.n

    # -- input -------------------------------------------------------------------------------------

    def observe(self, ticks: Sequence[TrafficTick | dict[str, Any]]) -> None:
        """Buffer ticks until their tick time is processed by ``advance``."""
        for raw in ticks:
            try:
                tick = raw if isinstance(raw, TrafficTick) else TrafficTick.model_validate(raw)
                ts = tick.tick_start
                if ts.tzinfo is None:
                    ts = ts.replace(tzinfo=UTC)
                t = math.floor(ts.timestamp() / self.dt) * self.dt
                vec = tick_vector(tick)
                tier = tick.tier.value if isinstance(tick.tier, Tier) else str(tick.tier)
                if tier not in det.TIERS or not tick.target_id:
                    raise ValueError("unknown tier")
            except Exception:
                self.stats.malformed += 1
                continue
            if self.last_now is not None and t > self.last_now + self.max_skew_s:
                self.stats.future += 1
                continue
            if self.watermark is not None and t <= self.watermark:
                self.stats.late += 1
                continue
            slot = self.buffer.setdefault(t, {})
            if tick.target_id in slot:
                self.stats.duplicate += 1
                continue
            slot[tick.target_id] = (tick, vec)
            self.stats.accepted += 1

    def observe_columns(
        self, tick_start: datetime, target_ids: Sequence[str], values: np.ndarray, sources: Sequence[Any] | None = None
    ) -> None:
        """Fast path for already-known targets: one tick time, ``values [len(ids), METRICS]`` as per-second
        rates (``profile.METRICS`` order). Unknown ids and rows with non-finite or negative values are
        dropped and counted as malformed; late and far-future tick times are dropped as in ``observe``.
        ``sources[i]`` (optional) has ``top_sources`` / ``top_prefixes`` attributes, read only if the
        target turns hot: what anomalies and incidents name, as a tick object gives them."""
        ts = tick_start if tick_start.tzinfo else tick_start.replace(tzinfo=UTC)
        t = math.floor(ts.timestamp() / self.dt) * self.dt
        vals = np.asarray(values, dtype=np.float32)
        if vals.ndim != 2 or vals.shape != (len(target_ids), NM):
            raise ValueError(f"values must have shape ({len(target_ids)}, {NM})")
        if self.last_now is not None and t > self.last_now + self.max_skew_s:
            self.stats.future += len(target_ids)
            return
        if self.watermark is not None and t <= self.watermark:
            self.stats.late += len(target_ids)
            return
        rows = np.fromiter((self.index.get(i, -1) for i in target_ids), dtype=np.int64, count=len(target_ids))
        ok = (rows >= 0) & np.all(np.isfinite(vals), axis=1) & np.all(vals >= 0, axis=1)
        self.stats.malformed += int(np.sum(~ok))
        self.stats.accepted += int(np.sum(ok))
        kept = None if sources is None else (sources, np.flatnonzero(ok))
        self.colbuf.setdefault(t, []).append((rows[ok], vals[ok], kept))

    def set_turn_sessions(self, relay: str, sessions: int) -> None:
        """Allocated sessions of a relay (target id, component name or relay address)."""
        value = float(max(0, int(sessions)))
        self.turn_pushed[relay] = int(value)
        for row, m in enumerate(self.meta):
            if m.get("tier") == "turn" and relay in (m["id"], m.get("component"), m.get("host")):
                self.sessions[row] = value

    def set_owner(self, owns: Callable[[str], bool] | None) -> None:
        """Sharded workers: only targets for which ``owns(target_id)`` is true get anomalies and
        incidents; the others are still observed and learned (the detectors' cross-tier context).
        ``None`` (the default) owns everything."""
        self.owner = owns

    # -- processing --------------------------------------------------------------------------------

    def pending_ticks(self) -> list[float]:
        """Buffered tick times not yet decided, oldest first."""
        return sorted({*self.buffer, *self.colbuf})

    def advance(self, now: datetime, ready_through: float | None = None) -> EngineOutput:
        """Process every buffered tick time older than ``now - grace``, oldest first, and those up
        to ``ready_through`` (ticks the caller knows are complete: see ``completeness``)."""
        now_s = (now if now.tzinfo else now.replace(tzinfo=UTC)).timestamp()
        self.last_now = now_s if self.last_now is None else max(self.last_now, now_s)
        cutoff = now_s - self.grace * self.dt
        out = EngineOutput()
        for t in self.pending_ticks():
            if t >= cutoff and (ready_through is None or t > ready_through):
                break
            self._process(t, self.buffer.pop(t, {}), self.colbuf.pop(t, []), out)
        return out

    def _process(
        self,
        t: float,
        ticks: dict[str, tuple[TrafficTick, np.ndarray]],
        cols: list[tuple[np.ndarray, np.ndarray, tuple[Sequence[Any], np.ndarray] | None]],
        out: EngineOutput,
    ) -> None:
        when = datetime.fromtimestamp(t, UTC)
        rows: list[int] = []
        vecs: list[np.ndarray] = []
        by_row: dict[int, Any] = {}  # TrafficTick, or a columnar row's sources (hot rows only)
        for tid, (tick, vec) in ticks.items():
            row = self._row(
                tid,
                {
                    "tier": tick.tier.value if isinstance(tick.tier, Tier) else str(tick.tier),
                    "name": tick.target,
                    "component": tick.component,
                    "host": tick.host,
                    "region": tick.region,
                    "role": tick.role,
                },
                aggregate=False,
            )
            rows.append(row)
            vecs.append(vec)
            by_row[row] = tick
            if tick.sip_sampled_packets > 0 and tick.sip_methods:
                scale = sum(tick.sip_methods.values()) / tick.sip_sampled_packets
                old = float(self.sample_scale[row])
                self.sample_scale[row] = old + 0.1 * (max(1.0, scale) - old)
        n = self.n
        x = np.full((n, NM), np.nan, np.float32)
        ri = np.array(rows, dtype=np.int64)
        if rows:
            x[ri] = np.stack(vecs)
        if cols:
            c_rows = np.concatenate([c[0] for c in cols])
            c_vals = np.concatenate([c[1] for c in cols])
            fresh = np.isnan(x[c_rows, 0])  # a message already seen for the target wins
            if fresh.all() and np.bincount(c_rows, minlength=n).max(initial=0) <= 1:
                keep = np.arange(len(c_rows))
            else:
                _, first = np.unique(c_rows, return_index=True)
                keep = first[fresh[first]]
            self.stats.duplicate += len(c_rows) - len(keep)
            self.stats.accepted -= len(c_rows) - len(keep)
            x[c_rows[keep]] = c_vals[keep]
            ri = np.concatenate([ri, c_rows[keep]])
        tier_live = np.zeros(len(det.TIERS), bool)
        tier_live[: len(det.TIERS)] = np.bincount(self.tier_code[ri], minlength=len(det.TIERS))[: len(det.TIERS)] > 0
        self.stats.outage_ticks += int(np.sum(self.tier_seen & ~tier_live))
        self.tier_seen |= tier_live
        live = tier_live[self.tier_code[:n]]
        # a configured target of a reporting tier that sent nothing carried no traffic
        zero = live & self.aggregate[:n] & np.isnan(x[:, 0])
        x[zero] = 0.0
        self.last_seen[ri] = t
        self.stats.ticks_processed += 1
        self.watermark = t if self.watermark is None else max(self.watermark, t)
        # the hold window (ring of the last hmax ticks)
        self.ring[self.ring_pos, :n] = x
        self.ring_pos = (self.ring_pos + 1) % self.hmax
        windows: dict[int, np.ndarray] = {}
        for h in np.unique(self.th.hold):
            idx = [(self.ring_pos - 1 - k) % self.hmax for k in range(int(h))]
            windows[int(h)] = x.copy() if h == 1 else self.ring[idx, :n].mean(axis=0)
        e = self.bank.expected(t)
        frame = det.Frame(
            dt=self.dt, last=x, windows=windows, expected=e, spread=self.bank.spread[:n], tier=self.tier_code[:n],
            role=self.role_code[:n], region=self.region_code[:n], aggregate=self.aggregate[:n], live=live,
            sessions=self.sessions[:n], per_session=self.per_session[:n], th=self.th, disp=self._dispersion(n),
        )  # fmt: skip
        results = det.run_by_tier(frame, self.demand[:n])
        if frame.demand is not None:
            self.demand[:n] = frame.demand
        active = np.zeros(n, bool)
        hot_any = np.zeros(n, bool)
        for _, sel, r in results:
            active[sel[r.active]] = True
            hot_any[sel[r.hot]] = True
        learning = self.bank.learned_s[:n] < self.learn_need[:n]
        findings: dict[int, list[Finding]] = {}
        seen_hot: set[tuple[int, int]] = set()
        if cols and any(c[2] is not None for c in cols) and any(r.hot.any() for _, _, r in results):
            for c_rows, _, c_src in cols:  # as for values: the first message of a target wins
                if c_src is not None:
                    for j in np.flatnonzero(hot_any[c_rows]).tolist():
                        by_row.setdefault(int(c_rows[j]), c_src[0][int(c_src[1][j])])
        for vector, sel, r in results:
            vi = det.V_INDEX[vector]
            for j in np.flatnonzero(r.hot).tolist():
                row = int(sel[j])
                if self.owner is not None and not self.owner(self.ids[row]):
                    continue  # another worker's target: context only (see set_owner)
                f = Finding(vector, float(r.ratio[j]), float(r.observed[j]), _f(r.baseline[j]),
                            det.METRIC_LABEL.get(int(r.metric[j]), "packets_per_s"))  # fmt: skip
                key = (row, vi)
                seen_hot.add(key)
                age = self.hot_age.get(key, -1) + 1
                self.hot_age[key] = age
                if age == 0 and self._few_events(row, vi, int(r.metric[j]), f.baseline, f.ratio):
                    continue  # a handful of events: one more hot tick before it may open an incident
                findings.setdefault(row, []).append(f)
                if age % self.anomaly_every == 0:
                    out.anomalies.append(self._anomaly(row, f, when, bool(learning[row]), by_row.get(row)))
        for key in [k for k in self.hot_age if k not in seen_hot]:
            del self.hot_age[key]
        dark = self._dark(frame)
        for row, fs in findings.items():
            src = by_row.get(row)
            tid = self.ids[row]
            ev = self.book.hot(
                when, self.meta[row], fs, learning=bool(learning[row]),
                quiet_needed=int(self.th.quiet[self.tier_code[row], [det.V_INDEX[f.vector] for f in fs]].max()),
                dark=self.meta[row].get("component") in dark, internal=self._internal(row),
                top_sources=list(src.top_sources[:10]) if src else [],
                top_prefixes=list(src.top_prefixes[:10]) if src else [], runbooks=self.runbooks,
            )  # fmt: skip
            if ev is not None:
                out.events.append(ev)
        for tid in list(self.book.open):
            row = self.index[tid]
            inc = self.book.open[tid]
            if row not in findings:
                ev = self.book.calm(when, tid, active=bool(active[row]), live=bool(live[row]))
                if ev is not None:
                    out.events.append(ev)
                    continue
            if inc.tier == "sbc" and inc.component in dark:
                ev = self.book.escalate_dark(when, tid)
                if ev is not None:
                    out.events.append(ev)
        # learn from clean ticks only: live tier, data present, nothing anomalous, no incident
        in_incident = np.zeros(n, bool)
        if self.book.open:
            in_incident[[self.index[tid] for tid in self.book.open]] = True
        clean = live & ~np.isnan(x[:, 0]) & ~active & ~hot_any & ~in_incident
        self.bank.learn(t, self.dt, np.nan_to_num(x), e, clean, self.policy)
        known = clean & (self.sessions[:n] > 0)
        if known.any():
            ps = x[known, PPS] / self.sessions[:n][known]
            cur = self.per_session[:n][known]
            a = min(1.0, self.dt / 3600.0)
            self.per_session[:n][known] = np.where(np.isnan(cur), ps, cur + a * (ps - cur))

    def _few_events(self, row: int, vi: int, metric: int, baseline: float, ratio: float) -> bool:
        """Whether a new incident on this count would rest on a few events: clusters of a handful
        (a PBX's burst of calls, clients reconnecting together) pass one window's test far more
        often than its noise model says, and a real attack holds for longer than one window.
        Twice the vector's ratio is no cluster: it opens at once."""
        tier = int(self.tier_code[row])
        if det.VECTORS[vi] in det.SHAPED:
            return False  # the vector's own shape test (bytes per connection, source mix...) is the evidence
        if metric < 0 or self.ids[row] in self.book.open or ratio >= 2.0 * float(self.th.ratio[tier, vi]):
            return False  # a derived ratio, an incident that is already open, or far over the bar
        window_s = float(self.th.hold[tier, vi]) * self.dt
        return baseline * window_s < FEW_EVENTS

    def _dispersion(self, n: int) -> np.ndarray:
        """Learned dispersion, at least the sampling scale for counts made of 1-in-N samples: each
        sampled packet stands for N, so a count of them scatters N times more than Poisson."""
        disp = self.bank.disp[:n]
        scale = self.sample_scale[:n]
        if not (scale > 1.0).any():
            return disp
        out = disp.copy()
        out[:, SAMPLED_COUNTS] = np.maximum(out[:, SAMPLED_COUNTS], scale[:, None])
        return out

    def _dark(self, fr: det.Frame) -> set[str]:
        """Components whose SBC signalling went dark while the SBC tier still reports."""
        m = (fr.tier == det.T_SBC) & (fr.role == det.R_SIG) & fr.aggregate & fr.live
        e = np.nan_to_num(fr.expected[:, PPS])
        w = fr.windows[max(fr.windows)][:, PPS]
        with np.errstate(invalid="ignore"):
            rows = np.flatnonzero(m & (e >= DARK_MIN) & (w < DARK_SHARE * e))
        return {str(self.meta[r].get("component")) for r in rows.tolist()}

    def _internal(self, row: int) -> bool:
        tier = det.TIERS[int(self.tier_code[row])]
        return any(t.value == tier and tc.internal for t, tc in self.config.tiers.items())

    def _anomaly(self, row: int, f: Finding, when: datetime, learning: bool, tick: Any) -> Anomaly:
        m = self.meta[row]
        return Anomaly(
            tier=m["tier"],
            vector=f.vector,
            target_id=m["id"],
            target=str(m.get("name") or m["id"]),
            metric=f.metric,
            observed=round(f.observed, 4),
            baseline=round(f.baseline, 4),
            ratio=round(f.ratio, 3),
            tick_start=when,
            learning=learning,
            top_sources=list(tick.top_sources[:10]) if tick else [],
            top_prefixes=list(tick.top_prefixes[:10]) if tick else [],
        )

    # -- history -----------------------------------------------------------------------------------

    def fit_history(
        self, target_id: str, meta: dict[str, str | None], minutes: np.ndarray, values: dict[str, np.ndarray]
    ) -> None:
        """Learn a target's profile from 1-minute buckets (minute start, per-metric rates per second).

        ``values`` keys are metric names of ``profile.METRICS`` (or aliases such as
        ``packets_per_s``); absent metrics stay unlearned. ``meta`` needs at least ``tier``.
        """
        mins = np.asarray(minutes, dtype=np.int64).reshape(-1)
        grid = np.full((len(mins), NM), np.nan)
        for name, arr in values.items():
            col = np.asarray(arr, dtype=np.float64).reshape(-1)
            if len(col) != len(mins):
                raise ValueError(f"history metric {name!r} has {len(col)} values for {len(mins)} minutes")
            grid[:, metric_index(name)] = col
        grid[~np.isfinite(grid)] = np.nan
        grid[grid < 0] = np.nan
        known = self.index.get(target_id)
        row = self._row(target_id, dict(meta), aggregate=known is not None and bool(self.aggregate[known]))
        self.bank.fit_history(row, mins, grid, self.dt, self.policy)
        if len(mins):
            self.last_seen[row] = np.fmax(self.last_seen[row], float(mins.max()) + 60)

    # -- queries -----------------------------------------------------------------------------------

    def _progress(self, row: int) -> float:
        need = float(self.learn_need[row])
        return 1.0 if need <= 0 else min(1.0, float(self.bank.learned_s[row]) / need)

    def targets(self) -> list[dict[str, Any]]:
        """Every known target with its learning progress and state."""
        out = []
        for row, m in enumerate(self.meta):
            prog = self._progress(row)
            tier_i = int(self.tier_code[row])
            state = ("incident" if m["id"] in self.book.open else
                     "learning" if prog < 1.0 else "active")  # fmt: skip
            seen = float(self.last_seen[row])
            if self.tier_seen[tier_i] and self.last_now is not None and state != "incident" and not np.isnan(seen):
                state = "silent" if self.last_now - seen > 60 * self.dt else state
            out.append({
                "id": m["id"], "tier": m["tier"], "name": m.get("name"), "component": m.get("component"),
                "host": m.get("host"), "region": m.get("region"), "role": m.get("role"),
                "learning": prog < 1.0, "progress": round(prog, 4),
                "learned_from": _iso(self.bank.learned_from[row]), "learned_until": _iso(self.bank.learned_until[row]),
                "last_seen": _iso(self.last_seen[row]), "state": state,
            })  # fmt: skip
        return out

    def baseline(self, target_id: str) -> dict[str, Any] | None:
        """Profile (168 hour-of-week values per metric, Monday 00:00 UTC first), spread, short-term
        level and learning state of one target; None for an unknown target."""
        row = self.index.get(target_id)
        if row is None:
            return None
        n = self.n
        lvl = self.bank.level[:, row, :].astype(np.float64)
        short = self.bank.short_ratio()[row] if n else np.ones(NM)
        metrics: dict[str, Any] = {}
        for i, name in enumerate(METRICS):
            col = np.expm1(lvl[:, i])
            metrics[name] = {
                "profile": [None if np.isnan(v) else round(float(v), 4) for v in col],
                "spread": round(float(self.bank.spread[row, i]), 4),
                "short_term_level": round(float(short[i]), 4),
                "short_term_rate": round(float(self.bank.sx[row, i]), 4),
            }
        prog = self._progress(row)
        return {
            "target_id": target_id,
            "tier": self.meta[row]["tier"],
            "name": self.meta[row].get("name"),
            "slots": SLOTS,
            "slot_origin": "monday 00:00 UTC",
            "learning": prog < 1.0,
            "progress": round(prog, 4),
            "learned_seconds": float(self.bank.learned_s[row]),
            "learned_from": _iso(self.bank.learned_from[row]),
            "learned_until": _iso(self.bank.learned_until[row]),
            "slots_learned": int(np.sum(~np.isnan(lvl[:, 0]))),
            "metrics": metrics,
        }

    def expected(self, target_id: str, metric: str, at: Sequence[datetime]) -> list[float]:
        """Baseline values of one metric at the given times (NaN where nothing is learned)."""
        row = self.index.get(target_id)
        if row is None:
            raise KeyError(f"unknown target {target_id!r}")
        if metric in ("bytes_per_packet",):
            b = self.expected(target_id, "bytes", at)
            p = self.expected(target_id, "packets", at)
            return [bb / pp if pp > 0 else float("nan") for bb, pp in zip(b, p, strict=True)]
        m = metric_index(metric)
        times = np.array([(d if d.tzinfo else d.replace(tzinfo=UTC)).timestamp() for d in at], dtype=np.float64)
        if len(times) == 0:
            return []
        return [float(v) for v in self.bank.expected_series(row, m, times)]

    def open_incidents(self) -> list[IncidentView]:
        return self.book.views()

    def memory_per_target(self) -> int:
        """Bytes of numpy state per target slot (profile, learning, ring, target arrays)."""
        cap = max(1, self.bank.capacity)
        names = ("tier_code", "role_code", "region_code", "aggregate", "last_seen", "sessions", "per_session")
        own = sum(getattr(self, a).nbytes for a in (*names, "learn_need", "ring"))
        return self.bank.bytes_per_target() + own // cap

    # -- state -------------------------------------------------------------------------------------

    def export_state(self) -> bytes:
        """Everything learned plus open incidents, as a zip of numpy arrays and one JSON document."""
        return self.capture_state()()

    def capture_state(self) -> Callable[[], bytes]:
        """A copy of the state now, and the function that packs it (``export_state`` in two
        halves): at 100,000 targets the copy takes a fraction of a second while packing takes
        seconds, so a caller holding the engine lock packs after releasing it."""
        n = self.n
        arrays = {f"bank_{k}": v.copy() for k, v in self.bank.state().items()}
        for name in ("last_seen", "sessions", "per_session"):
            arrays[name] = getattr(self, name)[:n].copy()
        arrays["ring"] = self.ring[:, :n].copy()
        doc = {
            "ring_pos": self.ring_pos,
            "magic": STATE_MAGIC,
            "version": STATE_VERSION,
            "site": self.config.site,
            "n": n,
            "targets": [dict(m) for m in self.meta],
            "incidents": [inc.to_json() for inc in self.book.open.values()],
            "watermark": self.watermark,
            "turn_pushed": dict(self.turn_pushed),
            "tier_seen": self.tier_seen.tolist(),
            "stats": dict(self.stats.__dict__),
        }
        return lambda: arrayzip.pack("engine.json", doc, arrays)

    def import_state(self, data: bytes) -> None:
        """Replace the engine's state with an exported one; ValueError (engine unchanged) if the bytes
        are not a readable state of this engine version."""
        try:
            doc, arrays = _read_state(data)
            n = int(doc["n"])
            metas = doc["targets"]
            if not isinstance(metas, list) or len(metas) != n:
                raise ValueError(f"state lists {len(metas) if isinstance(metas, list) else '?'} targets, expected {n}")
            bank = ProfileBank.from_state({k[5:]: v for k, v in arrays.items() if k.startswith("bank_")}, n)
            incidents = [Incident.from_json(d) for d in doc.get("incidents", [])]
            extra = {}
            for name in ("last_seen", "sessions", "per_session"):
                arr = np.asarray(arrays[name], dtype=np.float64)
                if arr.shape != (n,):
                    raise ValueError(f"array {name!r} has shape {arr.shape}, expected ({n},)")
                extra[name] = arr
            ring = np.asarray(arrays.get("ring", np.full((self.hmax, n, NM), np.nan)), dtype=np.float32)
            if ring.shape != (self.hmax, n, NM):  # another hold config: start the windows afresh
                ring = np.full((self.hmax, n, NM), np.nan, np.float32)
            ring_pos = int(doc.get("ring_pos", 0)) % self.hmax
        except ValueError as exc:
            raise ValueError(f"cannot import detection engine state: {exc}") from None
        except Exception as exc:
            raise ValueError(f"cannot import detection engine state: {type(exc).__name__}: {exc}") from None
        old = self.__dict__.copy()
        try:
            stats = self.stats
            self._reset()
            self.stats = stats
            for m in metas:
                meta = {k: v for k, v in m.items() if k != "id"}
                self._row(str(m["id"]), meta, aggregate=False)
            agg = {td.id for td in self.config.iter_targets()}
            for row, tid in enumerate(self.ids):
                self.aggregate[row] = tid in agg
            fw, ss = self.bank.fold_w[:n].copy(), self.bank.short_s[:n].copy()
            bank.fold_w[:n], bank.short_s[:n] = fw, ss
            self.bank = bank
            self._grow()
            for name, arr in extra.items():
                getattr(self, name)[:n] = arr
            self.ring[:, :n] = ring
            self.ring_pos = ring_pos
            for td in self.config.iter_targets():
                if td.id not in self.index:
                    self._row(td.id, _meta_of(td), aggregate=True)
            self.book.open = {inc.target_id: inc for inc in incidents if inc.target_id in self.index}
            self.watermark = doc.get("watermark")
            self.turn_pushed = {str(k): int(v) for k, v in (doc.get("turn_pushed") or {}).items()}
            seen = doc.get("tier_seen") or []
            if len(seen) == len(det.TIERS):
                self.tier_seen = np.array(seen, dtype=bool)
        except Exception as exc:
            self.__dict__.clear()
            self.__dict__.update(old)
            raise ValueError(f"cannot import detection engine state: {exc}") from None


def _read_state(data: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    doc, arrays = arrayzip.unpack(data, "engine.json", STATE_MAGIC, "an engine state")
    if doc.get("version") != STATE_VERSION:
        got = doc.get("version")
        raise ValueError(f"state version {got!r} is not supported (this build reads {STATE_VERSION})")
    return doc, arrays


def _meta_of(td: TargetDef) -> dict[str, Any]:
    return {
        "tier": td.tier.value,
        "name": td.name,
        "component": td.component,
        "host": td.host,
        "region": td.region,
        "role": td.monitor.effective_role,
        "tags": list(td.tags),
    }


def _iso(t: float) -> str | None:
    return None if t is None or np.isnan(t) else datetime.fromtimestamp(float(t), UTC).isoformat()


def _f(v: float) -> float:
    return 0.0 if v is None or not np.isfinite(v) else float(v)


__all__ = ["DetectionEngine", "EngineOutput", "Stats", "tick_vector"]
