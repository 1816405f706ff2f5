"""The collector's work on a batch of datagrams, without sockets: decode, classify, aggregate.

The socket thread (``collector.py``), ``voxguard replay``-style tests and the benchmark all
drive this one class, so what is measured is what runs.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from voxguard.ingest.aggregate import TickAggregator
from voxguard.ingest.classify import TargetTable
from voxguard.ingest.closedtick import ClosedTick
from voxguard.ingest.decode.base import DecodeBatch
from voxguard.ingest.decode.netflow import NetflowDecoder
from voxguard.ingest.decode.sflow import SflowDecoder
from voxguard.ingest.evidence import FlowRing, HeaderRing, HeaderSample
from voxguard.ingest.exporters import ExporterRegistry
from voxguard.ingest.lastticks import LastTicks
from voxguard.ingest.metrics import IngestMetrics
from voxguard.shared.config import VoxGuardConfig

SFLOW_MAGIC = b"\x00\x00\x00\x05"


def is_sflow(payload: bytes) -> bool:
    """sFlow v5 starts with a 32-bit version 5; NetFlow/IPFIX with a 16-bit 5, 9 or 10."""
    return payload[:4] == SFLOW_MAGIC


@dataclass(slots=True)
class PipelineStats:
    """Totals since start, for ``GET /v1/ingest/stats`` and the benchmark."""

    datagrams: int = 0
    bytes: int = 0
    flow_records: int = 0
    classified: int = 0
    unclassified: int = 0
    decode_errors: int = 0
    unknown_exporter_dropped: int = 0
    ticks_emitted: int = 0
    batches: int = 0
    busy_seconds: float = 0.0
    per_format: Counter[str] = field(default_factory=Counter)


class Pipeline:
    """Decoders, target table, tick aggregator and evidence rings for one collector."""

    def __init__(self, config: VoxGuardConfig, metrics: IngestMetrics | None = None):
        self.config = config
        self.netflow = NetflowDecoder()
        self.sflow = SflowDecoder()
        self.table = TargetTable(config)
        self.registry = ExporterRegistry(config)
        self.aggregator = TickAggregator(config.ingest.tick_seconds)
        self.flow_ring = FlowRing()
        self.header_ring = HeaderRing()
        self.metrics = metrics or IngestMetrics.shared()
        self.stats = PipelineStats()
        self.accept_unknown = config.ingest.accept_unknown_exporters
        self.tick_seconds = config.ingest.tick_seconds
        self._tick_start: float | None = None
        self.last_ticks = LastTicks(self.table.columns)

    def process(self, datagrams: list[tuple[bytes, str]], now: float | None = None) -> None:
        """Decode, classify and aggregate one batch of ``(payload, source address)``."""
        if not datagrams:
            return
        wall = time.time() if now is None else now
        started = time.perf_counter()
        nf: list[tuple[bytes, str]] = []
        sf: list[tuple[bytes, str]] = []
        for item in datagrams:
            (sf if is_sflow(item[0]) else nf).append(item)
            self.stats.bytes += len(item[0])
        for decoder, items in ((self.netflow, nf), (self.sflow, sf)):
            if items:
                self._handle(decoder.decode_batch(items), wall)
        self.stats.datagrams += len(datagrams)
        self.stats.batches += 1
        self.stats.busy_seconds += time.perf_counter() - started

    def _handle(self, batch: DecodeBatch, wall: float) -> None:
        reports = batch.reports
        n_dg = len(reports)
        exporter_of_dg = np.empty(n_dg, dtype=np.int64)
        override = np.zeros(n_dg, dtype=np.uint32)
        accept = np.ones(n_dg, dtype=bool)
        tallies: dict[tuple[str, str], list[int]] = {}
        registry = self.registry
        unknown = registry.unknown_ix
        record = registry.record
        overrides = registry.has_overrides
        errors = 0
        for i, rep in enumerate(reports):
            st = record(rep, wall)
            ix = st.config_ix
            if ix == unknown:
                if rep.agent and registry.is_configured(rep.agent):
                    ix = registry.get(rep.agent, wall).config_ix
                elif not self.accept_unknown:
                    accept[i] = False
            exporter_of_dg[i] = ix
            key = (st.name or "unconfigured", rep.format)  # bounded label cardinality
            t = tallies.get(key)
            if t is None:
                t = tallies[key] = [0, 0, 0]
            t[0] += 1
            t[1] += rep.flow_records
            if rep.error:
                t[2] += 1
                errors += 1
            if overrides:
                interval = registry.sampling_override(rep.exporter)
                if interval:
                    override[i] = interval
        self.stats.decode_errors += errors
        counts: Counter[tuple[str, str, str]] = Counter()
        for (label, fmt), (dgs, recs, errs) in tallies.items():
            counts[(label, fmt, "datagrams")] += dgs
            counts[(label, fmt, "records")] += recs
            counts[(label, fmt, "errors")] += errs
            self.stats.per_format[fmt] += dgs
        self.metrics.count(counts)
        flows = batch.flows
        if len(flows) == 0:
            return
        dg = flows["datagram_ix"].astype(np.intp)
        if not accept.all():
            keep = accept[dg]
            self.stats.unknown_exporter_dropped += int(np.count_nonzero(~keep))
            flows, dg = flows[keep], dg[keep]
        if override.any():
            ov = override[dg]
            use = (ov > 0) & (flows["sampling"] <= 1)
            flows["sampling"][use] = ov[use]
        self.stats.flow_records += len(flows)
        exp_ix = exporter_of_dg[dg]
        cls = self.table.classify(flows, exp_ix)
        self.stats.classified += cls.matched
        self.stats.unclassified = self.stats.flow_records - self.stats.classified
        self.aggregator.add(flows, cls.rows, cls.targets, exp_ix)
        comp_rows = cls.rows[: cls.matched]  # component contributions come first, one per flow
        self.flow_ring.add(flows[comp_rows], cls.targets[: cls.matched], wall)
        if batch.samples:
            first = np.full(len(flows), -1, dtype=np.int64)
            first[comp_rows] = cls.targets[: cls.matched]
            hs = [
                HeaderSample(wall, int(first[s.flow_ix]), s.header_protocol, s.frame_length, s.header)
                for s in batch.samples
                if 0 <= s.flow_ix < len(first) and first[s.flow_ix] >= 0
            ]
            self.header_ring.add(hs)

    def tick_due(self, now: float) -> bool:
        """Whether the current tick has ended at wall-clock ``now``."""
        if self._tick_start is None:
            self._tick_start = now - (now % self.tick_seconds)
            return False
        return now >= self._tick_start + self.tick_seconds

    def flush(self, now: float | None = None) -> ClosedTick:
        """Close the current tick and return its records (component ticks as dicts, per-host
        ticks as columns)."""
        now = time.time() if now is None else now
        start = self._tick_start if self._tick_start is not None else now - (now % self.tick_seconds)
        tick = self.aggregator.flush(
            start,
            self.table.columns,
            self.table.exporter_names,
            max_host_ticks=self.config.ingest.max_host_ticks,
        )
        self._tick_start = now - (now % self.tick_seconds)
        self.stats.ticks_emitted += len(tick)
        self.last_ticks.record(tick)
        self.metrics.ticks(len(tick), self.table.host_target_count)
        return tick
