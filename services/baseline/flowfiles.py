"""History from an operator's flow archives: pcap/pcapng of flow exports and nfcapd files.

Flows are decoded (the ingest decoders, or ``nfdump -r FILE -o csv`` for nfcapd), classified to
targets (the ingest ``TargetTable``) and bucketed into minutes by the flows' *own* timestamps
(v9 first/last switched against sysUptime and unix seconds, IPFIX flowStart/End, nfdump's
ts/te), not by when a datagram was captured: an archive replayed today still lands in its own
hour of the week. A flow spanning several minutes is spread over them in proportion to its
duration. Counts are scaled by the sampling interval, as the collector does. Minutes in which no
flow at all was active are gaps, not zeros (archives have holes; a silent exporter is an outage).

Flows without timestamps (sFlow samples) fall back to the capture time of their datagram.
Per-second distinct-source counts cannot be rebuilt from flow records, so ``distinct_sources``
is left out of the history (the engine learns it live).
"""

from __future__ import annotations

import csv
import ipaddress
import os
import shutil
import subprocess
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voxguard.baseline.backfill import BackfillReport, HistorySink, TargetHistory, target_meta
from voxguard.baseline.models import MINUTE_VALUES
from voxguard.baseline.store import BaselineStore
from voxguard.ingest.classify import TargetTable
from voxguard.ingest.decode.flows import FLOW_DTYPE, addr_to_halves
from voxguard.ingest.decode.netflow import NetflowDecoder
from voxguard.ingest.decode.sflow import SflowDecoder
from voxguard.ingest.pcapio import iter_udp_payloads
from voxguard.ingest.pipeline import is_sflow
from voxguard.shared.config import VoxGuardConfig

_IX = {c: i for i, c in enumerate(MINUTE_VALUES)}
MAX_SPAN_MIN = 180  # a flow longer than this (a broken clock) is clipped to its last minutes
DATAGRAM_BATCH = 256
NFCAPD_MAGIC = b"\x0c\xa5"  # 0xA50C, little-endian, first field of every nfcapd file
PCAP_MAGICS = (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d", b"\x0a\x0d\x0d\x0a")


class FlowFileError(ValueError):
    """A file that is neither a capture nor an nfcapd file nfdump can read."""


@dataclass
class Decoded:
    """Flows (FLOW_DTYPE) and the exporter address of each."""

    flows: np.ndarray
    exporters: list[str] = field(default_factory=list)


def _looks_like_export(payload: bytes) -> bool:
    return len(payload) >= 4 and (is_sflow(payload) or payload[:2] in (b"\x00\x05", b"\x00\x09", b"\x00\x0a"))


def read_capture(path: Path) -> Iterator[Decoded]:
    """Flows of a pcap/pcapng of NetFlow v5/v9, IPFIX and sFlow datagrams, in batches."""
    netflow, sflow = NetflowDecoder(), SflowDecoder()
    pending: list[tuple[bytes, str, float]] = []

    def decode(items: list[tuple[bytes, str, float]]) -> Iterator[Decoded]:
        # sFlow samples carry no flow times: the decoder stamps them with ``now``, so each sFlow
        # datagram is decoded alone with its own capture time
        groups: list[tuple[Any, list[tuple[bytes, str, float]]]] = [(netflow, [i for i in items if not is_sflow(i[0])])]
        groups += [(sflow, [i]) for i in items if is_sflow(i[0])]
        for decoder, sel in groups:
            if not sel:
                continue
            batch = decoder.decode_batch([(p, src) for p, src, _ in sel], now=sel[-1][2])
            flows = batch.flows
            if not len(flows):
                continue
            dg = flows["datagram_ix"].astype(np.intp)
            arrival = np.array([int(ts * 1000) for _, _, ts in sel], dtype=np.uint64)[dg]
            missing = flows["start_ms"] == 0
            flows["start_ms"][missing] = arrival[missing]
            flows["end_ms"][flows["end_ms"] == 0] = flows["start_ms"][flows["end_ms"] == 0]
            yield Decoded(flows, [sel[i][1] for i in dg.tolist()])

    for d in iter_udp_payloads(path):
        if _looks_like_export(d.payload):
            pending.append((d.payload, d.src, d.timestamp))
        if len(pending) >= DATAGRAM_BATCH:
            yield from decode(pending)
            pending = []
    if pending:
        yield from decode(pending)


_NFDUMP_FIELDS = ("ts", "te", "sa", "da", "sp", "dp", "pr", "flg", "ipkt", "ibyt", "ra")


def read_nfcapd(path: Path, nfdump: str | None = None) -> Iterator[Decoded]:
    """Flows of an nfcapd file through ``nfdump -r FILE -o csv`` (nfdump 1.6/1.7 CSV layout)."""
    with path.open("rb") as f:
        if f.read(2) != NFCAPD_MAGIC:
            raise FlowFileError(f"{path}: neither a pcap/pcapng capture nor an nfcapd file")
    exe = nfdump or shutil.which("nfdump")
    if not exe:
        raise FlowFileError(f"{path}: reading nfcapd files needs nfdump (apt-get install nfdump)")
    # nfdump prints times in the local zone: ask for UTC
    env = {**os.environ, "TZ": "UTC"}
    proc = subprocess.run(
        [exe, "-r", str(path), "-o", "csv"], capture_output=True, text=True, timeout=600, env=env, check=False
    )
    err = proc.stderr.strip()
    if proc.returncode != 0 or "bad magic" in err or "error" in err.lower():
        raise FlowFileError(f"{path}: nfdump cannot read it: {err[:300]}")
    lines = proc.stdout.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.startswith("ts,te,")), None)
    if start is None:
        if not proc.stdout.strip() or "flows" in proc.stdout[:200].lower():
            return
        raise FlowFileError(f"{path}: unexpected nfdump output: {proc.stdout[:200]!r}")
    reader = csv.reader(lines[start:])
    header = next(reader)
    col = {name: header.index(name) for name in _NFDUMP_FIELDS if name in header}
    rows = [r for r in reader if len(r) > col["ibyt"] and r[col["ts"]][:1].isdigit()]
    flows = np.zeros(len(rows), dtype=FLOW_DTYPE)
    exporters: list[str] = []
    for i, r in enumerate(rows):
        f = flows[i]
        f["start_ms"] = _ms(r[col["ts"]])
        f["end_ms"] = _ms(r[col["te"]])
        src, dst = ipaddress.ip_address(r[col["sa"]].strip()), ipaddress.ip_address(r[col["da"]].strip())
        flows["src_hi"][i], flows["src_lo"][i] = addr_to_halves(src)
        flows["dst_hi"][i], flows["dst_lo"][i] = addr_to_halves(dst)
        f["ip_version"] = src.version
        f["src_port"], f["dst_port"] = int(float(r[col["sp"]] or 0)), int(float(r[col["dp"]] or 0))
        f["proto"] = _proto(r[col["pr"]])
        f["tcp_flags"] = _flags(r[col["flg"]])
        f["packets"], f["bytes"] = int(float(r[col["ipkt"]])), int(float(r[col["ibyt"]]))
        f["sampling"] = 1
        exporters.append(r[col["ra"]].strip() if "ra" in col and len(r) > col["ra"] else "")
    yield Decoded(flows, exporters)


def _ms(value: str) -> int:
    from datetime import UTC, datetime

    v = value.strip()
    t = datetime.fromisoformat(v.replace(" ", "T"))
    t = t.replace(tzinfo=UTC) if t.tzinfo is None else t
    return int(t.timestamp() * 1000)


_PROTOS = {"TCP": 6, "UDP": 17, "ICMP": 1, "ICMP6": 58, "GRE": 47, "ESP": 50}


def _proto(value: str) -> int:
    v = value.strip().upper()
    return int(v) if v.isdigit() else _PROTOS.get(v, 0)


def _flags(value: str) -> int:
    v = value.strip()
    if v.startswith("0x"):
        return int(v, 16)
    if v.isdigit():
        return int(v)
    bits = {"C": 0x80, "E": 0x40, "U": 0x20, "A": 0x10, "P": 0x08, "R": 0x04, "S": 0x02, "F": 0x01}
    return sum(b for ch, b in bits.items() if ch in v.upper())


def is_capture(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) in PCAP_MAGICS


class MinuteBuckets:
    """Per (target, minute) sums built from classified flows."""

    def __init__(self, config: VoxGuardConfig, *, any_exporter: bool = False) -> None:
        self.table = TargetTable(config)
        self.exporter_ix = {str(e.address): i for i, e in enumerate(config.exporters)}
        self.any_exporter = any_exporter
        self.sums: dict[tuple[int, int], np.ndarray] = {}
        self.flows = 0
        self.classified = 0
        self.covered: set[int] = set()

    def _exporters(self, names: Sequence[str]) -> np.ndarray:
        unknown = self.table.unknown_exporter
        return np.array([self.exporter_ix.get(n, unknown) for n in names], dtype=np.int64)

    def add(self, dec: Decoded) -> None:
        flows = dec.flows
        if not len(flows):
            return
        self.flows += len(flows)
        if self.any_exporter:
            cls_rows, cls_targets = self._classify_any(flows)
        else:
            cls = self.table.classify(flows, self._exporters(dec.exporters))
            cls_rows, cls_targets = cls.rows, cls.targets
            self.classified += cls.matched
        start = (flows["start_ms"] // np.uint64(60_000)).astype(np.int64)
        end = np.maximum((flows["end_ms"] // np.uint64(60_000)).astype(np.int64), start)
        # coverage: every minute some flow (any target or none) was active in; minutes no flow
        # touched are gaps (a silent exporter is an outage, not a quiet minute)
        cs = np.maximum(start, end - MAX_SPAN_MIN + 1)
        cspan = end - cs + 1
        crep = np.repeat(np.arange(len(cs)), cspan)
        cmin = cs[crep] + np.arange(len(crep)) - np.repeat(np.cumsum(cspan) - cspan, cspan)
        self.covered.update(np.unique(cmin).tolist())
        if not len(cls_rows):
            return
        f = flows[cls_rows]
        s, e = start[cls_rows], end[cls_rows]
        s = np.maximum(s, e - MAX_SPAN_MIN + 1)
        span = (e - s + 1).astype(np.int64)
        scale = np.maximum(f["sampling"].astype(np.float64), 1.0)
        packets = f["packets"].astype(np.float64) * scale
        nbytes = f["bytes"].astype(np.float64) * scale
        syn = (f["proto"] == 6) & ((f["tcp_flags"] & 0x12) == 0x02)
        icmp = (f["proto"] == 1) | (f["proto"] == 58)
        size = np.divide(f["bytes"], np.maximum(f["packets"], 1)).astype(np.float64)
        odd = (size < 100) | (size > 1200)
        # spread each flow over its minutes (count-type events land in the first minute)
        rep = np.repeat(np.arange(len(f)), span)
        offs = np.arange(len(rep)) - np.repeat(np.cumsum(span) - span, span)
        minute = s[rep] + offs
        share = 1.0 / span[rep]
        first = offs == 0
        tgt = cls_targets[rep]
        per = np.zeros((len(rep), len(MINUTE_VALUES)))
        per[:, _IX["packets"]] = packets[rep] * share
        per[:, _IX["bytes"]] = nbytes[rep] * share
        per[:, _IX["flows"]] = first * scale[rep]
        per[:, _IX["new_connections"]] = (first & syn[rep]) * scale[rep]
        per[:, _IX["icmp_packets"]] = packets[rep] * share * icmp[rep]
        # long flows count in every second they run (as the collector counts them per tick)
        dur_s = np.maximum(f["end_ms"].astype(np.float64) - f["start_ms"].astype(np.float64), 0.0) / 1000.0
        long_s = np.where(dur_s >= 60.0, dur_s, 0.0) * scale
        per[:, _IX["long_lived_flows"]] = long_s[rep] * share
        per[:, _IX["odd_size_packets"]] = packets[rep] * share * odd[rep]
        keys = tgt * (1 << 40) + minute
        uniq, inv = np.unique(keys, return_inverse=True)
        summed = np.zeros((len(uniq), len(MINUTE_VALUES)))
        np.add.at(summed, inv.reshape(-1), per)
        for k, v in zip(uniq.tolist(), summed, strict=True):
            key = (k >> 40, k & ((1 << 40) - 1))
            acc = self.sums.get(key)
            if acc is None:
                self.sums[key] = v
            else:
                acc += v

    def _classify_any(self, flows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Classify as if each flow came from every configured exporter (first match wins)."""
        n_exp = self.table.unknown_exporter + 1
        rows_all: list[np.ndarray] = []
        targets_all: list[np.ndarray] = []
        done = np.zeros(len(flows), dtype=bool)
        for ix in range(n_exp):
            todo = np.flatnonzero(~done)
            if not len(todo):
                break
            cls = self.table.classify(flows[todo], np.full(len(todo), ix, dtype=np.int64))
            if len(cls.rows):
                rows_all.append(todo[cls.rows])
                targets_all.append(cls.targets)
                done[todo[cls.rows]] = True
                self.classified += cls.matched
        if not rows_all:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        return np.concatenate(rows_all), np.concatenate(targets_all)

    def histories(self, tick_seconds: float) -> Iterator[TargetHistory]:
        """One history per target seen, over every covered minute (a covered minute without
        flows to the target is an observed zero; an uncovered one is left out)."""
        if not self.covered:
            return
        minutes = np.array(sorted(self.covered), dtype=np.int64)
        pos = {m: i for i, m in enumerate(minutes.tolist())}
        by_target: dict[int, dict[int, np.ndarray]] = {}
        for (t, m), v in self.sums.items():
            by_target.setdefault(t, {})[m] = v
        ticks = round(60 / tick_seconds)
        for t, per_min in by_target.items():
            info = self.table.targets[t]
            vals = np.zeros((len(minutes), len(MINUTE_VALUES)))
            for m, v in per_min.items():
                vals[pos[m]] = v
            vals[:, _IX["ticks"]] = ticks
            vals[:, _IX["seconds"]] = 60.0
            meta = target_meta(info.id, info.name, info.tier, info.component, info.host, info.monitor, info.region)
            yield TargetHistory(meta, minutes * 60, vals)


def backfill_files(
    config: VoxGuardConfig,
    store: BaselineStore,
    engine: Any | None,
    files: Iterable[Path],
    *,
    any_exporter: bool = False,
    nfdump: str | None = None,
) -> BackfillReport:
    """Load flow archives into the store and fit the engine on them."""
    import time

    started = time.perf_counter()
    buckets = MinuteBuckets(config, any_exporter=any_exporter)
    skipped: list[str] = []
    for path in files:
        try:
            source = read_capture(path) if is_capture(path) else read_nfcapd(path, nfdump)
            for dec in source:
                buckets.add(dec)
        except (OSError, ValueError) as exc:
            skipped.append(f"{path}: {exc}")
    sink = HistorySink(store, engine)
    for hist in buckets.histories(config.ingest.tick_seconds):
        sink.write([(hist.meta, hist.minutes, hist.values)])
        # distinct sources cannot be rebuilt from flow records: leave that metric unlearned
        sink.fit(hist, drop=("distinct_sources",))
    report = sink.finish()
    report.skipped_files = skipped
    report.flows = buckets.flows
    report.classified = buckets.classified
    report.seconds = time.perf_counter() - started
    return report
