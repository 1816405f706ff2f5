"""Bulk intake of per-host traffic batches (``TrafficBatch``): numpy in, no per-record objects.

A batch is one tier's per-host ticks of one tick. For the targets the engine already knows, the
records become one ``[records, METRICS]`` matrix of per-second rates (what ``engine.tick_vector``
computes for one tick) for ``DetectionEngine.observe_columns``, one ``[records, MINUTE_VALUES]``
matrix for the minute rollup and one for the live window. Targets the engine does not know yet
are registered in bulk from the batch's metadata first (``DetectionEngine.register``). Ticks with
sampled SIP headers take the object path (``TrafficTick`` through ``observe``): the engine learns
each target's sampling scale from their method mix.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from voxguard.baseline.models import MINUTE_VALUES
from voxguard.baseline.profile import METRICS
from voxguard.baseline.rollup import LIVE_FIELDS
from voxguard.shared.batches import RecordSources, TrafficColumns

_VEC = {"packets": "packets", "bytes": "bytes", "flows": "flows", "new_connections": "new_connections",
        "distinct_sources": "distinct_sources", "icmp_packets": "icmp_packets", "long_lived_flows": "long_lived_flows",
        "odd_size_packets": "odd_size_packets", "sip_malformed_packets": "sip_malformed_packets",
        "sip_scanner_packets": "sip_scanner_packets"}  # fmt: skip
_MIN = {c: i for i, c in enumerate(MINUTE_VALUES)}
_SIP_COLUMNS = {"INVITE": "sip_invite", "REGISTER": "sip_register", "OPTIONS": "sip_options", "BYE": "sip_bye"}


@dataclass
class Split:
    """Which records of a batch take which path (indices into the batch's good records)."""

    columnar: np.ndarray
    objects: list[int] = field(default_factory=list)
    new: list[int] = field(default_factory=list)  # columnar records whose targets must be registered first


def split(cols: TrafficColumns, known: dict[str, int] | None, *, can_register: bool = False) -> Split:
    """Records without sampled SIP go columnar: targets the engine knows, and (``can_register``)
    new ones, registered in bulk from the batch's metadata first. Records with sampled SIP (the
    engine learns each target's sampling scale from their method mix) and, without a target
    index, every record take the object path."""
    if known is None:
        return Split(np.zeros(0, np.int64), list(range(cols.n)))
    is_known = np.fromiter(map(known.__contains__, cols.ids), bool, cols.n)
    sampled_sip = cols.num["sip_sampled_packets"] > 0
    if sampled_sip.any():
        sampled_sip &= np.fromiter(map(bool, cols.sip_methods), bool, cols.n)
    fast = ~sampled_sip if can_register else is_known & ~sampled_sip
    new = np.flatnonzero(fast & ~is_known).tolist() if can_register else []
    return Split(np.flatnonzero(fast), np.flatnonzero(~fast).tolist(), new)


def _sip_counts(cols: TrafficColumns) -> dict[str, np.ndarray]:
    """Per-record SIP method counts by minute column (all zero for records without a method mix)."""
    out = {c: np.zeros(cols.n) for c in ("sip_invite", "sip_register", "sip_options", "sip_bye", "sip_other")}
    for i, m in enumerate(cols.sip_methods):
        if m:
            for method, count in m.items():
                out[_SIP_COLUMNS.get(method.upper(), "sip_other")][i] += count
    return out


def engine_values(cols: TrafficColumns, sip: dict[str, np.ndarray]) -> np.ndarray:
    """``[records, METRICS]`` per-second rates, as ``engine.tick_vector`` for each record."""
    sec = cols.tick_seconds
    num = cols.num
    vals = np.empty((cols.n, len(METRICS)), np.float64)
    for j, metric in enumerate(METRICS):
        if metric == "sip_invite":
            vals[:, j] = sip["sip_invite"]
        elif metric == "sip_register":
            vals[:, j] = sip["sip_register"]
        elif metric == "distinct_sources":
            vals[:, j] = num["distinct_sources"] * sec  # a count per tick, as tick_vector
        else:
            vals[:, j] = num[_VEC[metric]]
    return (vals / sec).astype(np.float32)


def minute_values(cols: TrafficColumns, sip: dict[str, np.ndarray]) -> np.ndarray:
    """``[records, MINUTE_VALUES]``: each record's contribution to its minute (``rollup.tick_values``)."""
    num = cols.num
    out = np.zeros((cols.n, len(MINUTE_VALUES)))
    out[:, _MIN["ticks"]] = 1
    out[:, _MIN["seconds"]] = cols.tick_seconds
    for name in ("bytes", "packets", "flows", "new_connections", "icmp_packets", "long_lived_flows",
                 "distinct_sources", "sip_scanner_packets", "sip_malformed_packets"):  # fmt: skip
        out[:, _MIN[name]] = num[name]
    for name, col in sip.items():
        out[:, _MIN[name]] = col
    out[:, _MIN["odd_size_packets"]] = np.where(num["size_buckets"] == 6, num["odd_size_packets"], 0.0)
    return out


def live_values(cols: TrafficColumns) -> np.ndarray:
    """``[records, LIVE_FIELDS]`` per-second rates for the live window."""
    return np.stack([cols.num[f] for f in LIVE_FIELDS], axis=1) / cols.tick_seconds


def prepare(cols: TrafficColumns) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Engine, minute and live matrices of every good record of the batch."""
    sip = _sip_counts(cols)
    return engine_values(cols, sip), minute_values(cols, sip), live_values(cols)


__all__ = ["SourcesView", "Split", "engine_values", "live_values", "minute_values", "prepare", "split"]


class SourcesView:
    """``observe_columns``' ``sources`` for records ``idx`` of a batch: each parsed only when read."""

    def __init__(self, cols: TrafficColumns, idx: np.ndarray) -> None:
        self.cols, self.idx = cols, idx

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, j: int) -> RecordSources:
        return self.cols.sources(int(self.idx[j]))
