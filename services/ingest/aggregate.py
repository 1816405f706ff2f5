"""Per-target, per-tick aggregation of classified flows, with array operations only.

Counts are scaled by each flow's sampling interval. Each batch adds to dense per-target
accumulators with ``bincount`` and appends its (target, source, packets, bytes) columns to
a list; once per tick those columns are reduced to the top sources, the top /24s (/64s) and
the distinct-source count. Reducing once per tick instead of per batch keeps the per-record
cost of the hot path to a few vector operations. Should one tick hold more than
``PARTIAL_LIMIT`` rows (a spoofed flood), an intermediate reduction keeps memory bounded and
the distinct count falls back to a HyperLogLog over the reduced pairs.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import numpy as np

from voxguard.ingest.classify import TargetInfo
from voxguard.ingest.decode.flows import SipFlag, SipMethod, halves_to_addr, is_v4
from voxguard.ingest.hll import HllBank, pair_key
from voxguard.shared.messages import SCHEMA_VERSION, TrafficTick, utcnow

SIZE_BUCKETS = np.array(TrafficTick.SIZE_BUCKETS, dtype=np.float64)
N_SIZE = len(SIZE_BUCKETS) + 1
N_SIP = max(SipMethod.NAMES) + 1
TOP_N = 10
LONG_LIVED_MS = 60_000
SYN, ACK = 0x02, 0x10
_V4_24 = np.uint64(0xFFFF_FFFF_FFFF_FF00)
PARTIAL_LIMIT = 4_000_000
# A record that lasted several ticks (a long flow exported at its active timeout) is spread
# evenly over that many ticks from now on, up to SPREAD_HORIZON ticks: counted once, without
# the spike of a whole minute of RTP arriving in one second.
SPREAD_HORIZON = 300
KEEP_PER_TARGET = 1024

# columns of the dense accumulator
(
    C_BYTES,
    C_PACKETS,
    C_FLOWS,
    C_NEWCONN,
    C_ICMP,
    C_LONG,
    C_RECORDS,
    C_SIP_SCAN,
    C_SIP_BAD,
    C_SIP_RAW,
    C_SAMPLED,
) = range(11)
N_COLS = 11
SPREAD_COLS = (C_BYTES, C_PACKETS, C_ICMP, C_LONG)  # the columns a spread record contributes to

_PAIR_DTYPE = np.dtype([("t", "<i8"), ("h", "<u8"), ("l", "<u8"), ("p", "<f8"), ("b", "<f8")])


def _sum_pairs(t: np.ndarray, h: np.ndarray, lo: np.ndarray, p: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sum packets and bytes per (target, address)."""
    uniq, first, inv = np.unique(pair_key(t, h, lo), return_index=True, return_inverse=True)
    out = np.empty(len(uniq), dtype=_PAIR_DTYPE)
    out["t"], out["h"], out["l"] = t[first], h[first], lo[first]
    inv = inv.reshape(-1)
    out["p"] = np.bincount(inv, weights=p, minlength=len(uniq))
    out["b"] = np.bincount(inv, weights=b, minlength=len(uniq))
    return out


def _top_per_target(arr: np.ndarray, keep: int) -> np.ndarray:
    """The ``keep`` rows with most packets for each target, grouped by target."""
    if len(arr) == 0:
        return arr
    arr = arr[np.lexsort((-arr["p"], arr["t"]))]
    starts = np.flatnonzero(np.r_[True, arr["t"][1:] != arr["t"][:-1]])
    rank = np.arange(len(arr)) - np.repeat(starts, np.diff(np.r_[starts, len(arr)]))
    return arr[rank < keep]


def _prefixes(pairs: np.ndarray) -> np.ndarray:
    """Source pairs -> /24 (IPv4) or /64 (IPv6) pairs, summed."""
    h, lo = pairs["h"], pairs["l"]
    v4 = is_v4(h, lo)
    plo = np.where(v4, lo & _V4_24, np.uint64(0))
    return _sum_pairs(pairs["t"], h, plo, pairs["p"], pairs["b"])


class TickAggregator:
    """Accumulates one tick of classified flows and renders TrafficTick messages."""

    def __init__(self, tick_seconds: float = 1.0):
        self.tick_seconds = tick_seconds
        self._acc = np.zeros((N_COLS, 1024), dtype=np.float64)
        self._size = np.zeros((N_SIZE, 1024), dtype=np.float64)
        self._sip = np.zeros((N_SIP, 1024), dtype=np.float64)
        self._active = np.zeros(1024, dtype=bool)
        self._exporters: dict[int, set[int]] = {}
        self._last_exporters: dict[int, set[int]] = {}
        self._cols: list[tuple[np.ndarray, ...]] = []
        self._rows = 0
        self._reduced: np.ndarray | None = None  # set after an intermediate reduction
        self._hll = HllBank()
        self.host_ticks_suppressed = 0
        self._tick_no = 0
        self._carry = np.zeros((N_COLS, 1024), dtype=np.float64)  # fractions owed to the next tick
        self._run = np.zeros((len(SPREAD_COLS), 1024), dtype=np.float64)  # per-tick rates of spread records
        self._start = np.zeros((len(SPREAD_COLS), 1024), dtype=np.float64)  # added at the next flush
        # end tick -> (targets, weights) parts of the spread records that stop counting then
        self._pending: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}

    def _ensure(self, n_targets: int) -> None:
        size = self._acc.shape[1]
        if n_targets <= size:
            return
        new_size = max(n_targets, size * 2)
        for name in ("_acc", "_size", "_sip", "_run", "_start", "_carry"):
            old = getattr(self, name)
            new = np.zeros((old.shape[0], new_size), dtype=old.dtype)
            new[:, :size] = old
            setattr(self, name, new)
        active = np.zeros(new_size, dtype=bool)
        active[:size] = self._active
        self._active = active

    def add(self, flows: np.ndarray, rows: np.ndarray, targets: np.ndarray, exporter_ix: np.ndarray) -> None:
        """Add the contributions ``flows[rows]`` -> ``targets`` (``exporter_ix`` per flow row)."""
        if len(rows) == 0:
            return
        n_t = int(targets.max()) + 1
        self._ensure(n_t)
        size = self._acc.shape[1]
        scale = flows["sampling"][rows].astype(np.float64)
        np.maximum(scale, 1.0, out=scale)
        pk = flows["packets"][rows] * scale
        by = flows["bytes"][rows] * scale
        flags = flows["tcp_flags"][rows]
        proto = flows["proto"][rows]

        def add(col: int, weights: np.ndarray | None) -> None:
            self._acc[col] += np.bincount(targets, weights=weights, minlength=size)

        start, end = flows["start_ms"][rows], flows["end_ms"][rows]
        dur_ms = np.where(end > start, end - start, 0).astype(np.float64)
        icmp = ((proto == 1) | (proto == 58)) * pk
        long_lived = (dur_ms >= LONG_LIVED_MS) * scale
        span = np.minimum(np.ceil(dur_ms / (self.tick_seconds * 1000.0)), SPREAD_HORIZON)
        spread = span >= 2
        if spread.any():
            now = ~spread
            k = span[spread]
            weights = np.vstack([by[spread] / k, pk[spread] / k, icmp[spread] / k, long_lived[spread]])
            t_sp = targets[spread]
            for i in range(len(SPREAD_COLS)):
                self._start[i] += np.bincount(t_sp, weights=weights[i], minlength=size)
            ends, inverse = np.unique(k.astype(np.int64), return_inverse=True)
            order = np.argsort(inverse, kind="stable")
            bounds = np.searchsorted(inverse[order], np.arange(1, len(ends)))
            for end_k, idx in zip(ends.tolist(), np.split(order, bounds), strict=True):
                self._pending.setdefault(self._tick_no + end_k, []).append((t_sp[idx], weights[:, idx]))
            by, pk, icmp, long_lived = by * now, pk * now, icmp * now, long_lived * now
        add(C_BYTES, by)
        add(C_PACKETS, pk)
        add(C_FLOWS, scale)
        add(C_RECORDS, None)
        add(C_LONG, long_lived)
        tcp = proto == 6
        if tcp.any():
            syn = tcp & ((flags & SYN) != 0) & (((flags & ACK) == 0) | (flows["packets"][rows] > 1))
            add(C_NEWCONN, syn * scale)
        if icmp.any():
            add(C_ICMP, icmp)
        if (scale > 1).any():
            add(C_SAMPLED, (scale > 1).astype(np.float64))
        sip_m = flows["sip_method"][rows]
        sip_fl = flows["sip_flags"][rows]
        if sip_m.any() or sip_fl.any():
            add(C_SIP_SCAN, ((sip_fl & SipFlag.SCANNER_UA) != 0) * scale)
            add(C_SIP_BAD, ((sip_fl & SipFlag.MALFORMED) != 0) * scale)
            add(C_SIP_RAW, ((sip_m != 0) | ((sip_fl & SipFlag.MALFORMED) != 0)).astype(np.float64))
            has = sip_m != 0
            np.add.at(self._sip, (sip_m[has].astype(np.intp), targets[has]), scale[has])
        raw_by = flows["bytes"][rows].astype(np.float64)
        raw_pk = flows["packets"][rows].astype(np.float64)
        bpp = np.divide(raw_by, raw_pk, out=np.zeros_like(raw_by), where=raw_pk > 0)
        bucket = np.searchsorted(SIZE_BUCKETS, bpp, side="left")
        weight = raw_pk * scale / np.maximum(span, 1)  # a spread record weighs one tick's share
        self._size += np.bincount(bucket * size + targets, weights=weight, minlength=N_SIZE * size).reshape(
            N_SIZE, size
        )
        self._active[:n_t] |= np.bincount(targets, minlength=n_t) > 0
        exp = exporter_ix[rows]
        first_exp = int(exp[0])
        if (exp == first_exp).all():
            for t in np.flatnonzero(np.bincount(targets, minlength=n_t)).tolist():
                self._exporters.setdefault(t, set()).add(first_exp)
        else:
            for key in np.unique(targets * (1 << 16) + exp).tolist():
                self._exporters.setdefault(key >> 16, set()).add(key & 0xFFFF)
        self._cols.append((targets, flows["src_hi"][rows], flows["src_lo"][rows], pk, by))
        self._rows += len(rows)
        if self._rows > PARTIAL_LIMIT:
            self._reduce(KEEP_PER_TARGET, intermediate=True)

    def _reduce(self, keep: int, intermediate: bool = False) -> np.ndarray:
        """Sum the tick's (target, source) columns; feed distinct counting; keep the top rows."""
        parts = []
        if self._cols:
            cols = [np.concatenate(c) for c in zip(*self._cols, strict=True)]
            parts.append(_sum_pairs(*cols))
        if self._reduced is not None:
            parts.append(self._reduced)
        if not parts:
            return np.empty(0, dtype=_PAIR_DTYPE)
        pairs = parts[0] if len(parts) == 1 else np.concatenate(parts)
        if len(parts) > 1:
            pairs = _sum_pairs(pairs["t"], pairs["h"], pairs["l"], pairs["p"], pairs["b"])
        if intermediate or self._reduced is not None:
            self._hll.add(pairs["t"], pairs["h"], pairs["l"])
        self._cols = []
        self._rows = 0
        if intermediate:
            self._reduced = _top_per_target(pairs, keep)
            self._rows = len(self._reduced)
        return pairs

    @property
    def active_targets(self) -> int:
        """Targets with traffic in the current tick."""
        return int(np.count_nonzero(self._active))

    def flush(
        self,
        tick_start: float,
        targets: list[TargetInfo],
        exporter_names: list[str],
        *,
        first_host: int | None = None,
        max_host_ticks: int | None = None,
    ) -> list[dict[str, Any]]:
        """The tick's messages (one per active target) as plain dicts, then reset for the next tick.

        Dicts, not pydantic objects: at 100,000 active targets model construction alone would
        take seconds. ``TrafficTick`` is the schema; the tests validate these dicts against it.
        """
        self._apply_spread()
        active = np.flatnonzero(self._active)
        if len(active) == 0:
            self._end_spread()
            return []
        if first_host is not None and max_host_ticks is not None:
            hosts = active[active >= first_host]
            if len(hosts) > max_host_ticks:
                # the busiest hosts only: the component targets still count every flow
                busiest = hosts[np.argsort(-self._acc[C_PACKETS, hosts], kind="stable")[:max_host_ticks]]
                self.host_ticks_suppressed += len(hosts) - max_host_ticks
                active = np.sort(np.concatenate([active[active < first_host], busiest]))
        used_hll = self._reduced is not None
        pairs = self._reduce(TOP_N)
        if used_hll:
            distinct = self._hll.estimates()
        else:
            counts = np.bincount(pairs["t"], minlength=self._acc.shape[1]) if len(pairs) else None
            distinct = {} if counts is None else dict(zip(active.tolist(), counts[active].tolist(), strict=True))
        tops_src = _group_tops(_top_per_target(pairs, TOP_N))
        tops_pfx = _group_tops(_top_per_target(_prefixes(pairs), TOP_N), prefixes=True)
        ts = datetime.fromtimestamp(tick_start, UTC).isoformat()
        now = utcnow().isoformat()
        # whole units out, the fractions of spread records carried to the next tick: exact totals
        exact = self._acc[:, active] + self._carry[:, active]
        whole = np.floor(exact + 1e-6)
        self._carry[:, active] = exact - whole
        acc = whole.T.astype(np.int64).tolist()
        bpp = (self._acc[C_BYTES, active] / np.maximum(self._acc[C_PACKETS, active], 1)).round(2).tolist()
        size = self._size[:, active].T.astype(np.int64).tolist()
        sip_rows = self._sip[:, active].T
        has_sip = np.asarray(sip_rows.any(axis=1), dtype=bool)
        out: list[dict[str, Any]] = []
        ids = uuid.uuid4().hex[:16]
        for i, t in enumerate(active.tolist()):
            a = acc[i]
            methods = (
                {SipMethod.NAMES[m]: int(v) for m, v in enumerate(sip_rows[i].tolist()) if v and m}
                if has_sip[i]
                else {}
            )
            exps = self._exporters.get(t) or self._last_exporters.get(t) or set()  # spread-only ticks keep theirs
            msg = dict(targets[t].static)
            msg.update(
                schema_version=SCHEMA_VERSION,
                id=f"{ids}{i:08x}",
                ts=now,
                tick_start=ts,
                tick_seconds=self.tick_seconds,
                exporters=sorted(exporter_names[e] if e < len(exporter_names) else "unknown" for e in exps),
                bytes=a[C_BYTES],
                packets=a[C_PACKETS],
                flows=a[C_FLOWS],
                new_connections=a[C_NEWCONN],
                icmp_packets=a[C_ICMP],
                long_lived_flows=a[C_LONG],
                distinct_sources=int(distinct.get(t, 0)),
                bytes_per_packet=bpp[i],
                size_histogram=size[i],
                top_sources=tops_src.get(t, []),
                top_prefixes=tops_pfx.get(t, []),
                sip_methods=methods,
                sip_scanner_packets=a[C_SIP_SCAN],
                sip_malformed_packets=a[C_SIP_BAD],
                sip_sampled_packets=a[C_SIP_RAW],
                flow_records=a[C_RECORDS],
                sampled=a[C_SAMPLED] > 0,
            )
            out.append(msg)
        self._acc[:] = 0
        self._size[:] = 0
        self._sip[:] = 0
        self._active[:] = False
        self._last_exporters.update(self._exporters)
        self._exporters.clear()
        self._reduced = None
        self._hll.reset()
        self._end_spread()
        return out

    def _apply_spread(self) -> None:
        """Start this tick's new spread records and count every running one into the tick."""
        self._run += self._start
        self._start[:] = 0
        for i, col in enumerate(SPREAD_COLS):
            self._acc[col] += self._run[i]
        self._active |= (self._run > 1e-9).any(axis=0)

    def _end_spread(self) -> None:
        """Retire the spread records whose span ends with this tick; advance the tick counter."""
        self._tick_no += 1
        due = self._pending.pop(self._tick_no, None)
        if not due:
            return
        tgts = np.concatenate([d[0] for d in due])
        wts = np.hstack([d[1] for d in due])
        size = self._run.shape[1]
        for i in range(len(SPREAD_COLS)):
            self._run[i] -= np.bincount(tgts, weights=wts[i], minlength=size)
        np.maximum(self._run, 0.0, out=self._run)  # float residue


def _group_tops(arr: np.ndarray, prefixes: bool = False) -> dict[int, list[dict[str, Any]]]:
    """Per target, its top rows as ``SourceCount``-shaped dicts."""
    out: dict[int, list[dict[str, Any]]] = {}
    for t, h, lo, p, b in arr.tolist():
        addr = halves_to_addr(h, lo)
        if prefixes:
            addr = f"{addr}/24" if h == 0 and (lo >> 32) == 0xFFFF else f"{addr}/64"
        out.setdefault(t, []).append({"source": addr, "packets": int(p), "bytes": int(b)})
    return out
