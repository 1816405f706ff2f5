"""Rolling 1 s traffic ticks up into minute buckets, and the in-memory live window.

Only minutes are stored; the per-second detail of the last few minutes is kept in memory for the
API's live view (design.md section 5: "keep 1 s for the live window only in memory"). Both are
bounded: the open minutes by a grace period after which they are flushed, the live window by a
per-target ring length and a cap on how many targets get one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from voxguard.baseline.models import MINUTE_VALUES
from voxguard.shared.messages import TrafficTick

_SIP_COLUMNS = {"INVITE": "sip_invite", "REGISTER": "sip_register", "OPTIONS": "sip_options", "BYE": "sip_bye"}
_INDEX = {c: i for i, c in enumerate(MINUTE_VALUES)}
LIVE_FIELDS = ("packets", "bytes", "flows", "new_connections", "distinct_sources")


def tick_values(tick: TrafficTick) -> np.ndarray:
    """One tick's contribution to its minute, in MINUTE_VALUES order."""
    v = np.zeros(len(MINUTE_VALUES))
    v[_INDEX["ticks"]] = 1
    v[_INDEX["seconds"]] = tick.tick_seconds
    for name in ("bytes", "packets", "flows", "new_connections", "icmp_packets", "long_lived_flows"):
        v[_INDEX[name]] = getattr(tick, name)
    v[_INDEX["distinct_sources"]] = tick.distinct_sources
    v[_INDEX["sip_scanner_packets"]] = tick.sip_scanner_packets
    v[_INDEX["sip_malformed_packets"]] = tick.sip_malformed_packets
    for method, count in tick.sip_methods.items():
        v[_INDEX[_SIP_COLUMNS.get(method.upper(), "sip_other")]] += count
    hist = tick.size_histogram
    if len(hist) == len(TrafficTick.SIZE_BUCKETS) + 1:
        # below 100 B (runts) or above 1200 B (near-MTU): not SIP-sized
        v[_INDEX["odd_size_packets"]] = hist[0] + hist[-1]
    return v


def target_meta(tick: TrafficTick) -> dict[str, Any]:
    """The registry row of a tick's target."""
    return {
        "id": tick.target_id,
        "tier": tick.tier.value,
        "name": tick.target,
        "component": tick.component,
        "host": tick.host,
        "protocol": tick.protocol,
        "ports": tick.ports,
        "role": tick.role,
        "region": tick.region,
    }


class _Minute:
    """One open minute: a row per target in a growing matrix (bulk adds are one numpy operation)."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.ids: list[str] = []
        self.vals = np.zeros((64, len(MINUTE_VALUES)))

    def slots(self, ids: list[str]) -> np.ndarray:
        index = self.index
        missing = [t for t in ids if t not in index]
        if missing:
            for t in dict.fromkeys(missing):
                index[t] = len(self.ids)
                self.ids.append(t)
            if len(self.ids) > len(self.vals):
                grown = np.zeros((max(len(self.ids), 2 * len(self.vals)), len(MINUTE_VALUES)))
                grown[: len(self.vals)] = self.vals
                self.vals = grown
        return np.fromiter(map(index.__getitem__, ids), np.int64, len(ids))


class MinuteRollup:
    """Open minute accumulators per target; ``pop_closed`` hands finished minutes to storage."""

    def __init__(self) -> None:
        self._open: dict[dt.datetime, _Minute] = {}

    def __len__(self) -> int:
        return sum(len(m.ids) for m in self._open.values())

    def _minute(self, start: dt.datetime) -> _Minute:
        key = start.astimezone(dt.UTC).replace(second=0, microsecond=0)
        m = self._open.get(key)
        if m is None:
            m = self._open[key] = _Minute()
        return m

    def add(self, tick: TrafficTick) -> None:
        m = self._minute(tick.tick_start)
        slot = m.slots([tick.target_id])[0]
        m.vals[slot] += tick_values(tick)

    def add_columns(self, tick_start: dt.datetime, ids: list[str], values: np.ndarray) -> None:
        """Many targets' ticks of one tick at once: ``values [len(ids), MINUTE_VALUES]``."""
        if not ids:
            return
        m = self._minute(tick_start)
        slots = m.slots(ids)  # first: it may grow m.vals
        np.add.at(m.vals, slots, values)  # add.at: a repeated id adds twice, as add() would

    def pop_closed(self, before: dt.datetime | None = None) -> list[MinuteBlock]:
        """Every minute that started before ``before`` (all of them when None), as blocks."""
        out = []
        for key in [k for k in self._open if before is None or k < before]:
            m = self._open.pop(key)
            out.append(MinuteBlock(key, m.ids, m.vals[: len(m.ids)]))
        return out

    def restore(self, blocks: Iterable[MinuteBlock]) -> None:
        """Put blocks back (their write failed) so the next flush retries them."""
        for b in blocks:
            m = self._minute(b.bucket)
            np.add.at(m.vals, m.slots(b.ids), b.values)


@dataclass
class MinuteBlock:
    """One closed minute of many targets: ``values [len(ids), MINUTE_VALUES]``."""

    bucket: dt.datetime
    ids: list[str]
    values: np.ndarray

    def rows(self) -> list[dict[str, Any]]:
        """The block as row dicts (``BaselineStore.add_minutes`` shape)."""
        rows = []
        for tid, v in zip(self.ids, self.values.tolist(), strict=True):
            row: dict[str, Any] = {"target_id": tid, "bucket": self.bucket, **dict(zip(MINUTE_VALUES, v, strict=True))}
            row["ticks"] = int(row["ticks"])
            rows.append(row)
        return rows


class LiveWindow:
    """The last ``seconds`` ticks per target (float32 rates in a numpy ring, ~25 KB a target),
    for at most ``max_targets`` targets: the first ones seen, which are the configured ones."""

    def __init__(self, seconds: int = 900, max_targets: int = 2_000) -> None:
        self.seconds = seconds
        self.max_targets = max_targets
        self._rings: dict[str, tuple[np.ndarray, np.ndarray, list[int]]] = {}

    def add(self, tick: TrafficTick) -> None:
        ring = self._rings.get(tick.target_id)
        if ring is None:
            if len(self._rings) >= self.max_targets:
                return
            ring = (np.full(self.seconds, -1, np.int64), np.zeros((self.seconds, len(LIVE_FIELDS)), np.float32), [0])
            self._rings[tick.target_id] = ring
        times, vals, pos = ring
        i = pos[0] % self.seconds
        times[i] = int(tick.tick_start.timestamp() * 1000)
        vals[i] = [float(getattr(tick, f)) / tick.tick_seconds for f in LIVE_FIELDS]
        pos[0] += 1

    def add_columns(self, tick_start: dt.datetime, ids: list[str], rates: np.ndarray) -> None:
        """Many targets' ticks of one tick: ``rates [len(ids), LIVE_FIELDS]`` per second. Only
        targets that have a ring, or get one while there is room, are kept (as ``add``)."""
        rings = self._rings
        room = self.max_targets - len(rings)
        t_ms = int(tick_start.timestamp() * 1000)
        todo = range(len(ids)) if room > 0 else [i for i, tid in enumerate(ids) if tid in rings]
        for i in todo:
            tid = ids[i]
            ring = rings.get(tid)
            if ring is None:
                if room <= 0:
                    continue
                room -= 1
                ring = (
                    np.full(self.seconds, -1, np.int64),
                    np.zeros((self.seconds, len(LIVE_FIELDS)), np.float32),
                    [0],
                )
                rings[tid] = ring
            times, vals, pos = ring
            j = pos[0] % self.seconds
            times[j] = t_ms
            vals[j] = rates[i]
            pos[0] += 1

    def points(self, target_id: str, since: dt.datetime | None = None) -> list[dict[str, Any]]:
        """Per-tick rates (per second) of one target, oldest first."""
        ring = self._rings.get(target_id)
        if ring is None:
            return []
        times, vals, _ = ring
        cut = int(since.timestamp() * 1000) if since else 0
        order = np.argsort(times, kind="stable")
        out = []
        for j in order.tolist():
            if times[j] >= 0 and times[j] >= cut:
                point: dict[str, Any] = {"t": dt.datetime.fromtimestamp(times[j] / 1000, dt.UTC)}
                point.update(zip(LIVE_FIELDS, vals[j].tolist(), strict=True))
                out.append(point)
        return out
