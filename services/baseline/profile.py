"""Seasonal baselines: an hour-of-week profile per target and metric, held as numpy arrays.

Layout is ``level[168, targets, metrics]`` (float16 holding ``log1p(rate)``) so that the two slots
a tick needs are contiguous slices; float16 in the log domain keeps ~0.5 % precision at a quarter of
float64's memory, which is what lets one process hold a million targets. A slot that was never
learned is NaN.

Learning is per *visit* (one pass of the clock through an hour-of-week slot): ticks accumulate into
a per-target sum, winsorised against the current expectation so an outlier cannot drag the profile,
and when the hour ends the visit's mean is folded into the slot with weight ``1 - exp(-7 / window)``
(a 7-day window keeps about one week of memory). Ticks inside incidents or flagged anomalous are not
accumulated. A short-term level (EWMA of observed over EWMA of profile-expected, over
``short_term_minutes``) scales the profile so slow growth is followed between visits.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

WEEK = 7 * 86_400
SLOTS = 168
# 1970-01-05 00:00 UTC was a Monday: hour-of-week 0 is Monday 00:00-01:00 UTC
MONDAY0 = 4 * 86_400

# Per-second rates derived from a tick. Every one is profiled.
METRICS: tuple[str, ...] = (
    "packets",
    "bytes",
    "flows",
    "new_connections",
    "distinct_sources",
    "icmp_packets",
    "long_lived_flows",
    "sip_invite",
    "sip_register",
    "odd_size_packets",  # packets outside the SIP size range (< 100 B or > 1200 B)
    "sip_malformed_packets",
    "sip_scanner_packets",
)
(PPS, BPS, FPS, CONN, SRC, ICMP, LL, INV, REG, ODD, BAD, SCAN) = range(len(METRICS))
NM = len(METRICS)
M_INDEX = {m: i for i, m in enumerate(METRICS)}
ALIASES = {
    "packets_per_s": "packets",
    "bytes_per_s": "bytes",
    "flows_per_s": "flows",
    "new_connections_per_s": "new_connections",
    "icmp_packets_per_s": "icmp_packets",
    "invite_per_s": "sip_invite",
    "register_per_s": "sip_register",
    "sip:INVITE": "sip_invite",
    "sip:REGISTER": "sip_register",
}
# Metrics counted in whole events: the significance test adds a floor of a few events.
COUNT_FLOOR = np.array([3, 300, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3], dtype=np.float32)
# Smallest baseline used as a divisor (per second): a ratio stays finite on an idle target, and on a
# near-idle one (a night-time INVITE trickle) a burst of a few events is not "10x".
RATE_EPS = np.array([0.5, 50, 1.0, 0.5, 1, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5], dtype=np.float32)
DISP_MAX = 10_000.0  # dispersion cap: a 1:10000 sampled count


def metric_index(name: str) -> int:
    """Index of a metric by name or alias (KeyError with the known names)."""
    key = ALIASES.get(name, name)
    if key not in M_INDEX:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
    return M_INDEX[key]


def slot_position(t: np.ndarray | float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(slot a, slot b, weight of b) to interpolate the profile at epoch seconds ``t``.

    A slot's value stands for the middle of its hour, so 10:00 is halfway between 09:30 and 10:30.
    """
    hw = np.mod(np.asarray(t, dtype=np.float64) - MONDAY0, WEEK) / 3600.0 - 0.5
    a = np.floor(hw)
    frac = hw - a
    s0 = np.mod(a, SLOTS).astype(np.int64)
    return s0, np.mod(s0 + 1, SLOTS), frac


def slot_of(t: float) -> int:
    """The hour-of-week slot that contains epoch second ``t``."""
    return int(((t - MONDAY0) % WEEK) // 3600)


def fold_weight(window_days: float) -> float:
    """Weight of a new visit: a ``window_days`` window keeps about window/7 visits of memory."""
    return 1.0 - float(np.exp(-7.0 / max(window_days, 1e-3)))


@dataclass
class LearnPolicy:
    """How robustly a bank learns (speeds are per target: ``fold_w`` and ``short_s``)."""

    clip_hi: float = 3.0  # a learned tick is winsorised at clip_hi x expected
    min_visit_s: float = 300.0  # a visit shorter than this is not folded (too little evidence)


class ProfileBank:
    """Profiles, visit accumulators, short-term levels and tick-level spread for all targets."""

    ARRAYS = ("level", "spread", "disp", "vsum", "vcnt", "sx", "se", "learned_s", "learned_from", "learned_until")
    OPTIONAL = {"disp": 1.0}  # arrays a state saved by an older build may lack: start at this value
    SETTINGS = ("fold_w", "short_s")  # per-target speeds from config, not state

    def __init__(self, capacity: int = 64):
        cap = max(1, capacity)
        self.n = 0
        self.level = np.full((SLOTS, cap, NM), np.nan, dtype=np.float16)
        self.spread = np.ones((cap, NM), dtype=np.float32)  # relative mean abs deviation per tick
        # dispersion index (variance / mean of a tick's count): 1 for independent events, 2 when
        # they come in pairs, ~N when a 1:N sampled count is scaled up, ~50 for packets of 50 pkt/s
        # streams; it scales the Poisson noise of the detectors' significance test
        self.disp = np.ones((cap, NM), dtype=np.float32)
        self.vsum = np.zeros((cap, NM), dtype=np.float32)
        self.vcnt = np.zeros(cap, dtype=np.float32)  # seconds accumulated in the current visit
        self.sx = np.zeros((cap, NM), dtype=np.float32)  # short-term EWMA of observed
        self.se = np.zeros((cap, NM), dtype=np.float32)  # short-term EWMA of profile-expected
        self.learned_s = np.zeros(cap, dtype=np.float64)
        self.learned_from = np.full(cap, np.nan)
        self.learned_until = np.full(cap, np.nan)
        self.fold_w = np.full(cap, fold_weight(7), dtype=np.float32)
        self.short_s = np.full(cap, 3600.0, dtype=np.float32)
        self.visit_slot = -1
        self._cache_key: tuple[int, int] | None = None
        self._cache_val: np.ndarray | None = None

    # -- capacity ----------------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        return int(self.level.shape[1])

    def add(self, count: int = 1) -> int:
        """Room for ``count`` more targets; returns the first new row."""
        first = self.n
        need = self.n + count
        if need > self.capacity:
            cap = max(need, 2 * self.capacity)
            for name in self.ARRAYS + self.SETTINGS:
                old = getattr(self, name)
                axis = 1 if name == "level" else 0
                shape = list(old.shape)
                shape[axis] = cap
                fills = {"level": np.nan, "spread": 1.0, "disp": 1.0, "learned_from": np.nan, "learned_until": np.nan,
                         "fold_w": fold_weight(7), "short_s": 3600.0}  # fmt: skip
                fill = fills.get(name, 0)
                new = np.full(shape, fill, dtype=old.dtype)
                if axis == 1:
                    new[:, : self.n] = old[:, : self.n]
                else:
                    new[: self.n] = old[: self.n]
                setattr(self, name, new)
        self.n = need
        self._cache_key = None
        return first

    def bytes_per_target(self) -> int:
        """Memory the bank holds per target (all arrays)."""
        return sum(getattr(self, a).nbytes for a in self.ARRAYS + self.SETTINGS) // max(1, self.capacity)

    # -- expectation ---------------------------------------------------------------------------

    def profile_at(self, t: float) -> np.ndarray:
        """Profile-only expectation ``[n, NM]`` at epoch second ``t`` (NaN where unlearned); cached
        per minute because the interpolation weight moves slowly."""
        key = (int(t // 60), self.n)
        if self._cache_key == key and self._cache_val is not None:
            return self._cache_val
        s0, s1, f = slot_position(float(t // 60) * 60 + 30)
        a = self.level[int(s0), : self.n].astype(np.float32)
        b = self.level[int(s1), : self.n].astype(np.float32)
        fa = np.float32(1.0 - float(f))
        fb = np.float32(float(f))
        mix = np.where(np.isnan(a), b, np.where(np.isnan(b), a, a * fa + b * fb))
        out = np.expm1(mix)
        self._cache_key, self._cache_val = key, out
        return out

    def short_ratio(self) -> np.ndarray:
        """Short-term level over profile (1 where unknown), bounded so an error cannot run away."""
        sx, se = self.sx[: self.n], self.se[: self.n]
        r = np.divide(sx, se, out=np.ones_like(sx), where=se > 1e-6)
        return np.clip(r, 0.5, 2.0)

    def expected(self, t: float) -> np.ndarray:
        """Baseline ``[n, NM]`` at ``t``: profile x short-term level; without a profile, the
        short-term observed level itself; NaN when nothing is known."""
        prof = self.profile_at(t)
        e = prof * self.short_ratio()
        # without a profile, the short-term level stands in once it has seen a quarter of its window
        enough = self.learned_s[: self.n] >= 0.25 * self.short_s[: self.n]
        fallback = np.where(enough[:, None], self.sx[: self.n], np.float32(np.nan))
        return np.where(np.isnan(prof), fallback, e)

    def expected_series(self, row: int, metric: int, times: np.ndarray) -> np.ndarray:
        """Baseline of one target and metric at many times (profile x the current short-term level)."""
        s0, s1, f = slot_position(times)
        a = self.level[s0, row, metric].astype(np.float64)
        b = self.level[s1, row, metric].astype(np.float64)
        mix = np.where(np.isnan(a), b, np.where(np.isnan(b), a, a * (1 - f) + b * f))
        r = float(self.short_ratio()[row, metric]) if row < self.n else 1.0
        return np.asarray(np.expm1(mix) * r)

    # -- online learning -------------------------------------------------------------------------

    def learn(self, t: float, dt: float, x: np.ndarray, e: np.ndarray, learn: np.ndarray, pol: LearnPolicy) -> None:
        """Fold one tick of observations ``x [n, NM]`` for rows where ``learn`` is True.

        ``e`` is the expectation the detectors used (NaN where none). Spread and short-term level
        move every learned tick; the visit accumulator folds into the profile when the hour ends.
        """
        slot = slot_of(t)
        if self.visit_slot != slot:
            self.fold_visits(pol)
            self.visit_slot = slot
        n = self.n
        m = np.asarray(learn[:n], dtype=bool)
        if not m.any():
            return
        # full-array updates under a mask: cheaper than gathering and scattering most rows
        mc = m[:, None]
        known = ~np.isnan(e)
        e0 = np.where(known, e, np.float32(0.0))
        xw = np.where(known, np.minimum(x, pol.clip_hi * np.maximum(e0, RATE_EPS)), x)
        first = m & (self.learned_s[:n] == 0)
        if first.any():  # a new target: its short-term level starts at what it sends, not at zero
            self.sx[:n][first] = x[first]
        fdt = np.float32(dt)
        self.vsum[:n] += np.where(mc, xw * fdt, np.float32(0.0))
        self.vcnt[:n] += np.where(m, fdt, np.float32(0.0))
        self.learned_s[:n] += np.where(m, dt, 0.0)
        self.learned_from[:n] = np.where(m, np.fmin(self.learned_from[:n], t), self.learned_from[:n])
        self.learned_until[:n] = np.where(m, np.fmax(self.learned_until[:n], t + dt), self.learned_until[:n])
        # tick-level relative spread (for the detectors' noise floor)
        dev = np.minimum(np.abs(x - e0) / np.maximum(e0, RATE_EPS), np.float32(10.0))
        a = np.float32(min(1.0, dt / 1800.0))
        spr = self.spread[:n]
        spr += np.where(mc & known, a * (dev - spr), np.float32(0.0))
        # dispersion: squared deviation over the expected count, each tick bounded against the
        # current estimate so one burst cannot blow it up
        d = self.disp[:n]
        e_cnt = np.maximum(e0 * fdt, RATE_EPS * fdt)
        dev2 = np.minimum(np.square((x - e0) * fdt) / e_cnt, np.float32(10.0) * d + np.float32(10.0))
        d += np.where(mc & known, a * (dev2 - d), np.float32(0.0))
        np.clip(d, 1.0, DISP_MAX, out=d)
        # short-term level: EWMA of observed and of profile-expected over the same ticks
        prof = self.profile_at(t)
        has = ~np.isnan(prof)
        # the EWMA's weight, raised to 1/k over a new target's first k ticks (a running mean until
        # the short-term window is full): otherwise its first tick, often a partial second when an
        # exporter or collector starts, would hold most of the level for a minute
        warm = fdt / np.maximum(self.learned_s[:n], fdt).astype(np.float32)
        b = np.minimum(np.maximum(fdt / self.short_s[:n], warm), np.float32(1.0))[:, None]
        sx, se = self.sx[:n], self.se[:n]
        # a metric with neither profile nor short-term level yet (absent from the history) starts at
        # its first observation instead of creeping up from zero
        sx[:] = np.where(mc & ~has & (sx == 0), xw, sx)
        sx += np.where(mc, b * (xw - sx), np.float32(0.0))
        self.se[:n] = np.where(mc, np.where(has, se + b * (np.where(has, prof, np.float32(0.0)) - se), 0.0), se)

    def fold_visits(self, pol: LearnPolicy) -> None:
        """Fold the finished visit of ``visit_slot`` into the profile of every target that had one."""
        if self.visit_slot < 0 or self.n == 0:
            return
        rows = np.flatnonzero(self.vcnt[: self.n] >= pol.min_visit_s)
        if len(rows):
            mean = self.vsum[rows] / self.vcnt[rows, None]
            self._fold(self.visit_slot, rows, np.log1p(np.maximum(mean, 0.0)), self.fold_w[rows, None])
        self.vsum[: self.n] = 0.0
        self.vcnt[: self.n] = 0.0

    def _fold(self, slot: int, rows: np.ndarray, new_log: np.ndarray, w: np.ndarray) -> None:
        cur = self.level[slot, rows].astype(np.float32)
        upd = np.where(np.isnan(cur), new_log, cur + w * (new_log - cur))
        upd = np.where(np.isnan(new_log), cur, upd)
        self.level[slot, rows] = upd.astype(np.float16)
        self._cache_key = None

    # -- history -----------------------------------------------------------------------------------

    def fit_history(self, row: int, minutes: np.ndarray, values: np.ndarray, dt: float, pol: LearnPolicy) -> None:
        """Learn one target from 1-minute buckets: ``values [k, NM]`` rates (NaN = unknown).

        Each hour visit's median minute is folded into its slot, oldest week first; the spread
        starts at what the minutes' scatter and Poisson noise at one tick imply.
        """
        if len(minutes) == 0:
            return
        order = np.argsort(minutes, kind="stable")
        mins = np.asarray(minutes, dtype=np.int64)[order]
        vals = np.asarray(values, dtype=np.float64)[order]
        vals = np.where(vals < 0, np.nan, vals)
        visit = np.floor_divide(mins, 3600)
        uniq, inv = np.unique(visit, return_inverse=True)
        grid = np.full((len(uniq), 60, NM), np.nan)
        grid[inv, np.mod(mins // 60, 60)] = vals
        enough = np.sum(~np.isnan(grid[:, :, PPS]), axis=1) >= max(1, int(pol.min_visit_s // 60))
        with np.errstate(all="ignore"), _quiet_nan():
            med = np.nanmedian(grid, axis=1)  # [visits, NM]
            mad = np.nanmedian(np.abs(grid - med[:, None, :]), axis=1)
        slots = np.array([slot_of(float(v) * 3600) for v in uniq], dtype=np.int64)
        week = np.floor_divide(uniq * 3600 - MONDAY0, WEEK)
        rows = np.array([row])
        for wk in np.unique(week):
            sel = np.flatnonzero((week == wk) & enough)
            for i in sel:  # at most 168 per week, vectorised over metrics
                new = np.log1p(np.maximum(med[i], 0.0))[None, :].astype(np.float32)
                self._fold(int(slots[i]), rows, new, self.fold_w[rows, None])
        good = np.flatnonzero(enough)
        if len(good):
            with _quiet_nan():
                m = np.nanmean(med[good], axis=0)
                rel = np.nanmean(np.divide(mad[good], np.maximum(med[good], RATE_EPS)), axis=0)
            poisson = 0.8 / np.sqrt(np.maximum(m * dt, 1e-3))
            # minute medians hide tick-level scatter: widen them rather than alarm on the first day
            spr = np.clip(1.5 * np.nan_to_num(rel, nan=0.0) + np.minimum(poisson, 3.0), 0.02, 5.0)
            self.spread[row] = np.where(np.isnan(m), self.spread[row], spr).astype(np.float32)
            # dispersion from the scatter of minute means within each hour: var(minute mean) =
            # D x rate / 60 for a count with dispersion D (slow trends inflate it: conservative)
            with _quiet_nan():
                d_est = np.nanmedian(np.square(1.4826 * mad[good]) * 60.0 / np.maximum(med[good], RATE_EPS), axis=0)
            self.disp[row] = np.where(np.isnan(d_est), self.disp[row], np.clip(d_est, 1.0, DISP_MAX)).astype(np.float32)
            # the short-term level starts neutral with the weight of a full window, so the first live
            # ticks (maybe an attack's) cannot swing it
            with _quiet_nan():
                lvl = np.nanmean(np.expm1(self.level[:, row, :].astype(np.float32)), axis=0)
            start = np.where(np.isnan(lvl), 0.0, np.maximum(lvl, 1e-3)).astype(np.float32)
            self.sx[row] = start
            self.se[row] = start
        n_ok = int(np.sum(~np.isnan(vals[:, PPS])))
        self.learned_s[row] += 60.0 * n_ok
        self.learned_from[row] = np.fmin(self.learned_from[row], float(mins[0]))
        self.learned_until[row] = np.fmax(self.learned_until[row], float(mins[-1] + 60))
        self._cache_key = None

    # -- state -------------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.ARRAYS:
            arr = getattr(self, name)
            out[name] = arr[:, : self.n] if name == "level" else arr[: self.n]
        out["visit_slot"] = np.array([self.visit_slot])
        return out

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], n: int) -> ProfileBank:
        """Rebuild from :meth:`state`; raises ValueError on any shape or type mismatch."""
        bank = cls(max(n, 1))
        bank.n = n
        for name in cls.ARRAYS:
            if name not in arrays and name in cls.OPTIONAL:
                continue  # keeps the fresh bank's default
            if name not in arrays:
                raise ValueError(f"profile array {name!r} is missing")
            arr = np.asarray(arrays[name])
            want = getattr(bank, name)
            exp_shape = (SLOTS, n, NM) if name == "level" else (n, *want.shape[1:])
            if arr.shape != exp_shape:
                raise ValueError(f"profile array {name!r} has shape {arr.shape}, expected {exp_shape}")
            if name == "level":
                want[:, :n] = arr.astype(want.dtype)
            else:
                want[:n] = arr.astype(want.dtype)
        bank.visit_slot = int(np.asarray(arrays.get("visit_slot", np.array([-1])))[0])
        return bank


@contextlib.contextmanager
def _quiet_nan() -> Iterator[None]:
    """Silence numpy's all-NaN-slice warnings (an empty hour is expected, not an error)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield
