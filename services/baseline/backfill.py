"""Backfill: load history into minute buckets and fit the engine on it, so baselines are learned
on day one instead of after a week.

Two sources, one sink (:class:`HistorySink`):

* ``simulate_minutes``: N days of the example (or any) config from the simulator's totals fast
  path (``TrafficModel.totals``: per-second truth without building flows), summed into minutes.
  Hours are independent, so they are spread over worker processes.
* ``voxguard.baseline.flowfiles``: pcap/pcapng of flow exports and nfcapd files, bucketed by the
  flows' own timestamps.

The sink writes the minutes (additive upsert), registers the targets, calls
``engine.fit_history`` per target with per-minute *rates* and saves the engine state, which the
service loads at its next start. Run it before starting the service (a running service would
overwrite the state with its own at its next snapshot).
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from voxguard.baseline.models import MINUTE_VALUES
from voxguard.baseline.store import BaselineStore, rate_arrays
from voxguard.shared.config import Monitor, TargetDef, Tier, VoxGuardConfig

_IX = {c: i for i, c in enumerate(MINUTE_VALUES)}
HOUR = 3600
RUN_HOURS = 12  # hours per worker task


def target_meta(
    tid: str,
    name: str,
    tier: Tier | str,
    component: str,
    host: str | None,
    monitor: Monitor,
    region: str | None,
    tags: Iterable[str] = (),
) -> dict[str, Any]:
    """Registry row and engine meta of a target (the fields a TrafficTick carries)."""
    return {
        "id": tid,
        "tier": tier.value if isinstance(tier, Tier) else str(tier),
        "name": name,
        "component": component,
        "host": host,
        "protocol": monitor.protocol.value,
        "ports": str(monitor.ports) if monitor.ports else None,
        "role": monitor.effective_role,
        "region": region,
        "tags": list(tags),
    }


def meta_of_def(td: TargetDef) -> dict[str, Any]:
    return target_meta(td.id, td.name, td.tier, td.component, td.host, td.monitor, td.region, td.tags)


@dataclass
class TargetHistory:
    """Minute sums of one target: ``minutes`` (epoch seconds, sorted) and ``values[minute, col]``."""

    meta: dict[str, Any]
    minutes: np.ndarray
    values: np.ndarray  # (len(minutes), len(MINUTE_VALUES))


@dataclass
class BackfillReport:
    targets: int = 0
    minutes: int = 0
    rows: int = 0
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    seconds: float = 0.0
    fitted: int = 0
    skipped_files: list[str] = field(default_factory=list)
    flows: int = 0
    classified: int = 0


def engine_metrics() -> tuple[str, ...] | None:
    """The metrics the engine profiles (None: pass every rate and let the engine pick)."""
    try:
        from voxguard.baseline.profile import METRICS
    except ImportError:
        return None
    return tuple(METRICS)


class HistorySink:
    """Writes histories to the store and fits the engine on them; ``finish`` saves the state."""

    def __init__(self, store: BaselineStore, engine: Any | None) -> None:
        self.store = store
        self.engine = engine
        self.report = BackfillReport()
        self._wanted = engine_metrics()
        self._targets: dict[str, dict[str, Any]] = {}
        if engine is not None:
            saved = store.load_state()
            if saved is not None:
                engine.import_state(saved[0])

    def write(self, parts: Sequence[tuple[dict[str, Any], np.ndarray, np.ndarray]]) -> None:
        """Store ``(meta, minutes, values)`` of several targets in one transaction."""
        parts = [p for p in parts if len(p[1])]
        if not parts:
            return
        tids = [meta["id"] for meta, mins, _ in parts for _ in range(len(mins))]
        minutes = np.concatenate([mins for _, mins, _ in parts])
        values = np.concatenate([v for _, _, v in parts])
        self.report.rows += self.store.add_minute_block(tids, minutes, values)
        for meta, _, _ in parts:
            self._targets.setdefault(meta["id"], meta)
        first = dt.datetime.fromtimestamp(int(minutes.min()), dt.UTC)
        last = dt.datetime.fromtimestamp(int(minutes.max()) + 60, dt.UTC)
        self.report.start = first if self.report.start is None else min(self.report.start, first)
        self.report.end = last if self.report.end is None else max(self.report.end, last)

    def fit(self, hist: TargetHistory, drop: Iterable[str] = ()) -> None:
        """``engine.fit_history`` with the per-minute rates of one target's whole history
        (metrics in ``drop`` are left out: the engine keeps them unlearned)."""
        if self.engine is None or not len(hist.minutes):
            return
        rates = rate_arrays({c: hist.values[:, i] for i, c in enumerate(MINUTE_VALUES)})
        for name in drop:
            rates.pop(name, None)
        if self._wanted is not None:
            rates = {k: v for k, v in rates.items() if k in self._wanted}
        meta = {k: v for k, v in hist.meta.items() if k != "id"}
        self.engine.fit_history(hist.meta["id"], meta, hist.minutes.astype(np.int64), rates)
        self.report.fitted += 1
        self.report.minutes = max(self.report.minutes, len(hist.minutes))

    def add(self, hist: TargetHistory) -> None:
        """Write and fit one target's history."""
        self.write([(hist.meta, hist.minutes, hist.values)])
        self.fit(hist)

    def finish(self) -> BackfillReport:
        """Register the targets and save the engine state."""
        if self._targets:
            self.store.upsert_targets(list(self._targets.values()), self.report.end or dt.datetime.now(dt.UTC))
        self.report.targets = len(self._targets)
        if self.engine is not None:
            self.store.save_state(self.engine.export_state(), dt.datetime.now(dt.UTC))
        return self.report


# -- simulated history ------------------------------------------------------------------------

_MODEL: Any = None


def _init_model(config: VoxGuardConfig, seed: int) -> None:
    global _MODEL
    from voxguard.ingest.simulate.model import TrafficModel

    _MODEL = TrafficModel(config, seed=seed)


def _minute_block(start: int, seconds: int) -> list[tuple[dict[str, Any], np.ndarray]]:
    """Minute sums of every target over ``[start, start + seconds)`` (``seconds`` % 60 == 0)."""
    from voxguard.ingest.decode.flows import SipMethod
    from voxguard.ingest.simulate.sender import DEFAULT_FORMATS, DEFAULT_SFLOW_SAMPLING, sampled_distinct

    tot = _MODEL.totals(start, seconds, include_attacks=False)
    n_min = seconds // 60
    named = {SipMethod.INVITE: "sip_invite", SipMethod.REGISTER: "sip_register", SipMethod.OPTIONS: "sip_options",
             SipMethod.BYE: "sip_bye"}  # fmt: skip
    out = []
    for tt in tot.targets:
        v = np.zeros((n_min, len(MINUTE_VALUES)))

        def per_min(a: np.ndarray) -> np.ndarray:
            return np.asarray(a, dtype=np.float64).reshape(n_min, 60).sum(axis=1)

        v[:, _IX["ticks"]] = 60
        v[:, _IX["seconds"]] = 60.0
        for name in ("bytes", "packets", "flows", "new_connections", "icmp_packets", "long_lived_flows",
                     "distinct_sources", "sip_scanner_packets", "sip_malformed_packets"):  # fmt: skip
            v[:, _IX[name]] = per_min(getattr(tt, name))
        if DEFAULT_FORMATS.get(tt.target.tier) == "sflow5":
            # what the collector counts from 1-in-N packet samples of `voxguard simulate`: only the
            # sources that had a packet sampled (the packet counts are scaled back, sources are not)
            seen = sampled_distinct(tt.distinct_sources, tt.packets, DEFAULT_SFLOW_SAMPLING)
            v[:, _IX["distinct_sources"]] = per_min(seen)
        sip = np.asarray(tt.sip, dtype=np.float64)
        other = sip[:, 1:].sum(axis=1)
        for code, col in named.items():
            v[:, _IX[col]] = per_min(sip[:, code])
            other = other - sip[:, code]
        v[:, _IX["sip_other"]] = per_min(other)
        hist = np.asarray(tt.size_histogram, dtype=np.float64)
        v[:, _IX["odd_size_packets"]] = per_min(hist[:, 0] + hist[:, -1])
        out.append((meta_of_def(tt.target), v))
    return out


def simulate_blocks(
    config: VoxGuardConfig,
    days: float,
    *,
    end: dt.datetime | None = None,
    seed: int = 0,
    workers: int | None = None,
) -> Iterator[tuple[int, list[tuple[dict[str, Any], np.ndarray]]]]:
    """N days of simulated per-target minute sums ending at ``end`` (default: this hour's start),
    as ``(block start, [(meta, values)])`` per hour, in time order."""
    end_dt = end or dt.datetime.now(dt.UTC)
    end_s = int(end_dt.timestamp()) // HOUR * HOUR
    total = round(days * 86400) // 60 * 60
    if total <= 0:
        raise ValueError("days must cover at least one minute")
    start = end_s - total
    blocks = []
    t = start
    while t < end_s:
        n = min(HOUR - (t % HOUR), end_s - t)
        blocks.append((t, n))
        t += n
    workers = max(1, min(workers or min(2, os.cpu_count() or 1), len(blocks)))
    if workers == 1:
        _init_model(config, seed)
        for b in blocks:
            yield b[0], _minute_block(*b)
        return
    # Contiguous runs of hours per task: the model caches the session blocks of the previous
    # hour, which the long sessions of the next one need (a worker jumping around recomputes).
    runs = [blocks[i : i + RUN_HOURS] for i in range(0, len(blocks), RUN_HOURS)]
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    with cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_model, initargs=(config, seed)) as pool:
        for results in pool.map(_minute_run, runs):
            yield from results


def _minute_run(blocks: list[tuple[int, int]]) -> list[tuple[int, list[tuple[dict[str, Any], np.ndarray]]]]:
    return [(b[0], _minute_block(*b)) for b in blocks]


def backfill_simulated(
    config: VoxGuardConfig,
    store: BaselineStore,
    engine: Any | None,
    days: float,
    *,
    end: dt.datetime | None = None,
    seed: int = 0,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> BackfillReport:
    """Simulate ``days`` of history into the store and fit ``engine`` on it.

    Each hour is written as it arrives (one transaction, while the workers compute the next);
    the engine is fitted per target on the whole history at the end.
    """
    started = time.perf_counter()
    sink = HistorySink(store, engine)
    acc: dict[str, tuple[dict[str, Any], list[np.ndarray], list[np.ndarray]]] = {}
    n_blocks = max(1, -(-round(days * 86400) // HOUR))
    for done, (t0, part) in enumerate(simulate_blocks(config, days, end=end, seed=seed, workers=workers), 1):
        parts = []
        for meta, v in part:
            mins = t0 + 60 * np.arange(len(v), dtype=np.int64)
            parts.append((meta, mins, v))
            entry = acc.setdefault(meta["id"], (meta, [], []))
            entry[1].append(mins)
            entry[2].append(v)
        sink.write(parts)
        if progress:
            progress(done, n_blocks)
    for meta, mins_l, vals_l in acc.values():
        sink.fit(TargetHistory(meta, np.concatenate(mins_l), np.concatenate(vals_l)))
    report = sink.finish()
    report.seconds = time.perf_counter() - started
    return report
