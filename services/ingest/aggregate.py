"""Per-target, per-tick aggregation of classified flows, with array operations only.

Counts are scaled by each flow's sampling interval. Within a tick, every batch adds to
dense per-target accumulators (``np.add.at``/``bincount``); source and /24 top lists are
kept as partial (target, source) sums and reduced once at the end of the tick.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from voxguard.ingest.decode.flows import SipFlag, SipMethod, halves_to_addr
from voxguard.ingest.hll import HllBank, hash_addresses
from voxguard.shared.config import TargetDef
from voxguard.shared.messages import SCHEMA_VERSION, SourceCount, TrafficTick, new_id, utcnow

SIZE_BUCKETS = np.array(TrafficTick.SIZE_BUCKETS, dtype=np.float64)
N_SIZE = len(SIZE_BUCKETS) + 1
N_SIP = max(SipMethod.NAMES) + 1
TOP_N = 10
LONG_LIVED_MS = 60_000
SYN, ACK = 0x02, 0x10
_V4_24 = np.uint64(0xFFFF_FFFF_FFFF_FF00)
# partial top-list rows kept per tick before an intermediate reduction
_PARTIAL_LIMIT = 2_000_000
_KEEP_PER_TARGET = 256

# column order of the dense accumulator
(C_BYTES, C_PACKETS, C_FLOWS, C_NEWCONN, C_ICMP, C_LONG, C_RECORDS, C_SIP_SCAN, C_SIP_BAD, C_SIP_RAW, C_SAMPLED) = range(
    11
)
N_COLS = 11


@dataclass(slots=True)
class _Partials:
    """(key, target, key_hi, key_lo, packets, bytes) rows for one top list, reduced lazily."""

    parts: list[np.ndarray] = field(default_factory=list)
    rows: int = 0

    def add(self, arr: np.ndarray) -> None:
        self.parts.append(arr)
        self.rows += len(arr)

    def reduce(self, keep: int) -> np.ndarray:
        if not self.parts:
            return np.empty(0, dtype=_TOP_DTYPE)
        arr = self.parts[0] if len(self.parts) == 1 else np.concatenate(self.parts)
        out = _top_per_target(_sum_by_key(arr), keep)
        self.parts = [out]
        self.rows = len(out)
        return out


_TOP_DTYPE = np.dtype(
    [("k", "<u8"), ("t", "<i8"), ("h", "<u8"), ("l", "<u8"), ("p", "<f8"), ("b", "<f8")]
)


def _pair_key(targets: np.ndarray, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """A 64-bit hash of (target, address): sorting one uint64 is far cheaper than a record."""
    with np.errstate(over="ignore"):
        return hash_addresses(hi, lo) ^ (targets.astype(np.uint64) * np.uint64(0xD6E8FEB86659FD93))


def _sum_by_key(arr: np.ndarray) -> np.ndarray:
    uniq, first, inv = np.unique(arr["k"], return_index=True, return_inverse=True)
    out = arr[first]
    out["p"] = np.bincount(inv, weights=arr["p"], minlength=len(uniq))
    out["b"] = np.bincount(inv, weights=arr["b"], minlength=len(uniq))
    return out


def _top_per_target(arr: np.ndarray, keep: int) -> np.ndarray:
    """The ``keep`` rows with most packets for each target."""
    if len(arr) == 0:
        return arr
    order = np.lexsort((-arr["p"].astype(np.int64), arr["t"]))
    arr = arr[order]
    starts = np.flatnonzero(np.r_[True, arr["t"][1:] != arr["t"][:-1]])
    rank = np.arange(len(arr)) - np.repeat(starts, np.diff(np.r_[starts, len(arr)]))
    return arr[rank < keep]


class TickAggregator:
    """Accumulates one tick of classified flows and renders TrafficTick messages."""

    def __init__(self, tick_seconds: float = 1.0):
        self.tick_seconds = tick_seconds
        self._acc = np.zeros((1024, N_COLS), dtype=np.float64)
        self._size = np.zeros((1024, N_SIZE), dtype=np.float64)
        self._sip = np.zeros((1024, N_SIP), dtype=np.float64)
        self._active: set[int] = set()
        self._exporters: dict[int, set[int]] = {}
        self._src = _Partials()
        self._pfx = _Partials()
        self._hll = HllBank()

    def _ensure(self, n_targets: int) -> None:
        if n_targets <= len(self._acc):
            return
        size = max(n_targets, len(self._acc) * 2)
        for name in ("_acc", "_size", "_sip"):
            old = getattr(self, name)
            new = np.zeros((size, old.shape[1]), dtype=old.dtype)
            new[: len(old)] = old
            setattr(self, name, new)

    def add(self, flows: np.ndarray, rows: np.ndarray, targets: np.ndarray, exporter_ix: np.ndarray) -> None:
        """Add the contributions ``flows[rows]`` -> ``targets`` (``exporter_ix`` per flow row)."""
        if len(rows) == 0:
            return
        self._ensure(int(targets.max()) + 1)
        f = flows[rows]
        scale = f["sampling"].astype(np.float64)
        scale[scale < 1] = 1.0
        pk = f["packets"].astype(np.float64)
        by = f["bytes"].astype(np.float64)
        flags = f["tcp_flags"]
        proto = f["proto"]
        syn = ((flags & SYN) != 0) & (((flags & ACK) == 0) | (pk > 1)) & (proto == 6)
        icmp = (proto == 1) | (proto == 58)
        long_lived = (f["end_ms"] > f["start_ms"]) & ((f["end_ms"] - f["start_ms"]) >= LONG_LIVED_MS)
        sip_m = f["sip_method"]
        sip_fl = f["sip_flags"]
        cols = np.zeros((len(f), N_COLS), dtype=np.float64)
        cols[:, C_BYTES] = by * scale
        cols[:, C_PACKETS] = pk * scale
        cols[:, C_FLOWS] = scale
        cols[:, C_NEWCONN] = syn * scale
        cols[:, C_ICMP] = icmp * pk * scale
        cols[:, C_LONG] = long_lived * scale
        cols[:, C_RECORDS] = 1.0
        cols[:, C_SIP_SCAN] = ((sip_fl & SipFlag.SCANNER_UA) != 0) * scale
        cols[:, C_SIP_BAD] = ((sip_fl & SipFlag.MALFORMED) != 0) * scale
        cols[:, C_SIP_RAW] = (sip_m != 0) | ((sip_fl & SipFlag.MALFORMED) != 0)
        cols[:, C_SAMPLED] = scale > 1
        n_t = len(self._acc)
        for col in range(N_COLS):
            self._acc[:, col] += np.bincount(targets, weights=cols[:, col], minlength=n_t)
        bpp = np.divide(by, pk, out=np.zeros_like(by), where=pk > 0)
        bucket = np.searchsorted(SIZE_BUCKETS, bpp, side="left")
        np.add.at(self._size, (targets, bucket), pk * scale)
        has_sip = sip_m != 0
        if has_sip.any():
            np.add.at(self._sip, (targets[has_sip], sip_m[has_sip].astype(np.intp)), scale[has_sip])
        uniq_t = np.unique(targets).tolist()
        self._active.update(uniq_t)
        n_exp = np.int64(1 << 16)
        pairs = np.unique(targets * n_exp + exporter_ix[rows].astype(np.int64))
        for key in pairs.tolist():
            self._exporters.setdefault(key >> 16, set()).add(key & 0xFFFF)
        src_hi, src_lo = f["src_hi"], f["src_lo"]
        part = np.empty(len(f), dtype=_TOP_DTYPE)
        part["k"] = _pair_key(targets, src_hi, src_lo)
        part["t"], part["h"], part["l"] = targets, src_hi, src_lo
        part["p"], part["b"] = cols[:, C_PACKETS], cols[:, C_BYTES]
        self._src.add(part)
        v4 = (src_hi == 0) & ((src_lo >> np.uint64(32)) == np.uint64(0xFFFF))
        pfx = part.copy()
        pfx["l"] = np.where(v4, src_lo & _V4_24, 0)
        pfx["k"] = _pair_key(targets, src_hi, pfx["l"])
        self._pfx.add(pfx)
        self._hll.add(targets, src_hi, src_lo)
        for partials in (self._src, self._pfx):
            if partials.rows > _PARTIAL_LIMIT:
                partials.reduce(_KEEP_PER_TARGET)

    @property
    def active_targets(self) -> int:
        """Targets with traffic in the current tick."""
        return len(self._active)

    def flush(
        self, tick_start: float, targets: list[TargetDef], exporter_names: list[str]
    ) -> list[TrafficTick]:
        """Render the tick's messages (one per active target) and reset for the next tick."""
        if not self._active:
            return []
        active = np.array(sorted(self._active), dtype=np.int64)
        src = self._src.reduce(TOP_N)
        pfx = self._pfx.reduce(TOP_N)
        distinct = self._hll.estimates()
        tops_src = _group_tops(src)
        tops_pfx = _group_tops(pfx, prefixes=True)
        ts = datetime.fromtimestamp(tick_start, UTC)
        acc = self._acc[active]
        size = self._size[active]
        sip = self._sip[active]
        out: list[TrafficTick] = []
        for i, t in enumerate(active.tolist()):
            td = targets[t]
            a = acc[i]
            packets = int(a[C_PACKETS])
            methods = {SipMethod.NAMES[m]: int(v) for m, v in enumerate(sip[i].tolist()) if v and m}
            exp_names = sorted(
                exporter_names[e] if e < len(exporter_names) else "unknown" for e in self._exporters.get(t, ())
            )
            out.append(
                TrafficTick.model_construct(
                    **_envelope(),
                    tier=td.tier,
                    target_id=td.id,
                    target=td.name,
                    component=td.component,
                    host=td.host,
                    protocol=td.monitor.protocol.value,
                    ports=str(td.monitor.ports) if td.monitor.ports else None,
                    role=td.monitor.effective_role,
                    region=td.region,
                    tick_start=ts,
                    tick_seconds=self.tick_seconds,
                    exporters=exp_names,
                    bytes=int(a[C_BYTES]),
                    packets=packets,
                    flows=int(a[C_FLOWS]),
                    new_connections=int(a[C_NEWCONN]),
                    icmp_packets=int(a[C_ICMP]),
                    long_lived_flows=int(a[C_LONG]),
                    distinct_sources=int(distinct.get(t, 0)),
                    bytes_per_packet=round(a[C_BYTES] / packets, 2) if packets else 0.0,
                    size_histogram=[int(x) for x in size[i].tolist()],
                    top_sources=tops_src.get(t, []),
                    top_prefixes=tops_pfx.get(t, []),
                    sip_methods=methods,
                    sip_scanner_packets=int(a[C_SIP_SCAN]),
                    sip_malformed_packets=int(a[C_SIP_BAD]),
                    sip_sampled_packets=int(a[C_SIP_RAW]),
                    flow_records=int(a[C_RECORDS]),
                    sampled=bool(a[C_SAMPLED] > 0),
                )
            )
        self._acc[active] = 0
        self._size[active] = 0
        self._sip[active] = 0
        self._active.clear()
        self._exporters.clear()
        self._src = _Partials()
        self._pfx = _Partials()
        self._hll.reset()
        return out


def _envelope() -> dict[str, object]:
    return {"schema_version": SCHEMA_VERSION, "id": new_id(), "ts": utcnow()}


def _group_tops(arr: np.ndarray, prefixes: bool = False) -> dict[int, list[SourceCount]]:
    out: dict[int, list[SourceCount]] = {}
    for _, t, h, lo, p, b in arr.tolist():
        addr = halves_to_addr(h, lo)
        if prefixes:
            addr = f"{addr}/24" if h == 0 and (lo >> 32) == 0xFFFF else f"{addr}/64"
        out.setdefault(t, []).append(SourceCount.model_construct(source=addr, packets=int(p), bytes=int(b)))
    return out
